"""Shared fixtures: tiny random BERT models built from the fixture characters, and tiny data files."""
from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")

from bertorch.models.random_init import build_char_vocab, make_random_bert  # noqa: E402

POSITIVE = ["这家酒店很好，服务周到", "房间干净，早餐丰富，非常满意", "性价比很高，推荐入住", "位置方便，环境优雅",
            "前台热情，下次还来", "屏幕清晰，速度很快", "质量很好，物流也快", "书的内容精彩，值得一读"]
NEGATIVE = ["房间太小，隔音很差", "服务态度恶劣，不会再来", "早餐难吃，价格太贵", "电脑发热严重，电池不行",
            "屏幕有坏点，很失望", "物流太慢，包装破损", "书的印刷质量差", "环境嘈杂，卫生不好"]
EXTRA_CHARS = "０１２３４５６７８９ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz人名地点机构公司北京上海张三李四。，！？"


@pytest.fixture(scope="session")
def tiny_texts():
    return POSITIVE + NEGATIVE


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, tiny_texts):
    """Hidden 32, 2 layers, dropout 0 so runs are deterministic across process counts."""
    out = tmp_path_factory.mktemp("tiny_bert")
    vocab = build_char_vocab(tiny_texts + [EXTRA_CHARS])
    return make_random_bert(str(out), vocab, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.fixture(scope="session")
def tiny_bert_4layer(tmp_path_factory, tiny_texts):
    """A deeper variant (teacher for distillation tests)."""
    out = tmp_path_factory.mktemp("tiny_bert4")
    vocab = build_char_vocab(tiny_texts + [EXTRA_CHARS])
    return make_random_bert(str(out), vocab, hidden_size=48, num_layers=4, num_heads=2, intermediate_size=96,
                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.fixture(scope="session")
def sentiment_files(tmp_path_factory):
    """train/dev tsv (`text\\tlabel`) and labels.txt; the two classes are separable by their characters."""
    d = tmp_path_factory.mktemp("senti")
    rows = [(t, "positive") for t in POSITIVE] + [(t, "negative") for t in NEGATIVE]
    (d / "train.tsv").write_text("".join(f"{t}\t{l}\n" for t, l in rows * 4), encoding="utf-8")
    (d / "dev.tsv").write_text("".join(f"{t}\t{l}\n" for t, l in rows), encoding="utf-8")
    (d / "labels.txt").write_text("negative\npositive\n", encoding="utf-8")
    return {"train": str(d / "train.tsv"), "dev": str(d / "dev.tsv"), "labels": str(d / "labels.txt"), "dir": d}
