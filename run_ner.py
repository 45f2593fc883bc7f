"""Fine-tune a BERT-family encoder (+ CRF, or a GlobalPointer span head) for sequence labelling: NER with any
tag set, or B/M/E/S word segmentation. Data: JSON lines {"text": [chars], "label": [tags]} and labels.txt;
span heads also read {"text": "...", "entities": [{"start", "end", "type"}]} and CLUENER's JSON lines.

    python run_ner.py --train_data_file ner/msra/train.json --dev_data_file ner/msra/dev.json \\
        --label_file ner/msra/labels.txt --use_crf --save_best_model
    torchrun --nproc_per_node=2 run_ner.py ... --tag bios --max_seq_length 256 --doc_stride 64
    python run_ner.py ... --head global_pointer     # nested entities; no --label_file: types from the data
"""
from bertorch import cli
from bertorch.tasks.ner import NerTask


def main(argv=None):
    return cli.run(NerTask, argv, description=__doc__)


if __name__ == "__main__":
    main()
