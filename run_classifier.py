"""Fine-tune a BERT-family encoder for single-text or text-pair classification.

    python run_classifier.py --train_data_file chnsenticorp/train.tsv --dev_data_file chnsenticorp/dev.tsv \\
        --label_file chnsenticorp/labels.txt --save_best_model
    torchrun --nproc_per_node=2 run_classifier.py ... --is_text_pair   # text_a\\ttext_b\\tlabel files
"""
from bertorch import cli
from bertorch.tasks.classification import ClassificationTask


def main(argv=None):
    return cli.run(ClassificationTask, argv, description=__doc__)


if __name__ == "__main__":
    main()
