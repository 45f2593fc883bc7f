"""Sentence-BERT: a siamese encoder trained through a classifier over (u, v, |u-v|[, u*v]).

    python run_sentencebert.py --train_data_file afqmc/train.txt --dev_data_file afqmc/dev.txt --save_best_model
    torchrun --nproc_per_node=2 run_sentencebert.py --train_data_file cmnli/train.txt \\
        --dev_data_file cmnli/dev.txt --label_file cmnli/labels.txt --is_nli --pooling_mode mean
Data: text_a\\ttext_b\\tlabel. The saved directory is a sentence encoder (bertorch.predict / SentenceEncoder).
"""
from bertorch import cli
from bertorch.tasks.sbert import SentenceBertTask


def main(argv=None):
    return cli.run(SentenceBertTask, argv, description=__doc__)


if __name__ == "__main__":
    main()
