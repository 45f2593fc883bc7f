"""STS-B dev Spearman/Pearson of a model's embeddings with no training (mean pooling for plain models).

    python scripts/eval_sts.py MODEL_DIR STS_FILE OUTPUT_JSON
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bertorch.data.sentence import read_sts  # noqa: E402
from bertorch.metrics import correlation_metrics  # noqa: E402
from bertorch.predict import SentenceEncoder  # noqa: E402


def main(model_dir: str, sts_file: str, output: str) -> dict:
    pairs = read_sts(sts_file)
    encoder = SentenceEncoder.from_pretrained(model_dir)
    cosines = encoder.similarity([p.text_a for p in pairs], [p.text_b for p in pairs])
    metrics = correlation_metrics([p.label for p in pairs], cosines)
    with open(output, "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2)
    print(metrics)
    return metrics


if __name__ == "__main__":
    main(*sys.argv[1:4])
