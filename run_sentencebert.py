"""Sentence-BERT: a siamese encoder trained through a classifier over (u, v, |u-v|[, u*v]).

    python run_sentencebert.py --train_data_file afqmc/train.txt --dev_data_file afqmc/dev.txt --save_best_model
    torchrun --nproc_per_node=2 run_sentencebert.py --train_data_file cmnli/train.txt \\
        --dev_data_file cmnli/dev.txt --label_file cmnli/labels.txt --is_nli --pooling_mode mean
    python run_sentencebert.py --loss cosent --train_data_file stsb/sts-b-train.txt \\
        --dev_data_file stsb/sts-b-dev.txt --pooling_mode mean --matryoshka_dims 512 256 128 64
Data: text_a\\ttext_b\\tlabel (--loss cosent: a 0/1 label or a graded score such as STS-B's 0..5). The saved
directory is a sentence encoder (bertorch.predict / SentenceEncoder).
"""
from bertorch import cli
from bertorch.tasks.sbert import SentenceBertTask


def main(argv=None):
    return cli.run(SentenceBertTask, argv, description=__doc__)


if __name__ == "__main__":
    main()
