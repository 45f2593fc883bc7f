"""In-batch negatives on similar pairs: each text_a must pick its own text_b among all text_b of the batch.

    torchrun --nproc_per_node=2 run_batchneg.py --train_data_file pairs.txt \\
        --dev_data_file stsb/sts-b-dev.txt --mean_loss --margin 0.2 --scale 20
    python run_batchneg.py --init_from_ckpt ./simcse_out --train_data_file domain_pairs.txt ...  # continue training
Data: text_a\\ttext_b (a third 0/1 label column keeps only the label-1 pairs); dev: STS-B as for SimCSE.
"""
from bertorch import cli
from bertorch.tasks.batchneg import BatchNegTask


def main(argv=None):
    return cli.run(BatchNegTask, argv, description=__doc__)


if __name__ == "__main__":
    main()
