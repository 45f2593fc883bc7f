"""Unsupervised SimCSE: two dropout views of each sentence are positives, the rest of the batch negatives.

    python run_simcse.py --train_data_file unsup/sentences.txt --dev_data_file stsb/sts-b-dev.txt \\
        --dropout 0.1 --margin 0.2 --scale 20 --save_best_model
    torchrun --nproc_per_node=2 run_simcse.py ...   # negatives gathered from both ranks (--no-gather_negatives: off)
Data: one sentence a line; dev: STS-B sentence1\\tsentence2\\tscore (0..5), Spearman picks the best model.
"""
from bertorch import cli
from bertorch.tasks.simcse import SimCSETask


def main(argv=None):
    return cli.run(SimCSETask, argv, description=__doc__)


if __name__ == "__main__":
    main()
