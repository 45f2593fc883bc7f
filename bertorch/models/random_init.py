"""Build a randomly initialised BERT with a character vocabulary taken from the data.

Used by the tests, the benchmarks and the QUICK reproduction mode, where no pretrained model can be
downloaded; also useful for training a small model from scratch.
"""
from __future__ import annotations

import os
from collections import Counter
from typing import Iterable

from transformers import BertConfig, BertModel, BertTokenizer

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_char_vocab(texts: Iterable[str], min_freq: int = 1, max_size: int | None = None) -> list[str]:
    """Special tokens followed by the characters of ``texts`` (lower-cased), most frequent first."""
    counts = Counter(ch.lower() for text in texts for ch in text if not ch.isspace())
    chars = [ch for ch, n in counts.most_common(max_size) if n >= min_freq and ch not in SPECIAL_TOKENS]
    return SPECIAL_TOKENS + chars


def make_random_bert(output_dir: str, vocab: list[str], hidden_size: int = 32, num_layers: int = 2,
                     num_heads: int = 2, intermediate_size: int = 64, seed: int = 0, **config_kwargs) -> str:
    """Write a random ``BertModel`` + tokenizer directory that ``from_pretrained`` loads. Written to a
    temporary sibling and renamed into place: an interrupted build leaves no half-written model that a
    later "built already?" check (``main``, scripts/common.sh) would take for a complete one."""
    import torch

    from bertorch.model_dir import atomic_directory

    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden_size, num_hidden_layers=num_layers,
                        num_attention_heads=num_heads, intermediate_size=intermediate_size,
                        max_position_embeddings=config_kwargs.pop("max_position_embeddings", 512),
                        **config_kwargs)
    torch.manual_seed(seed)
    with atomic_directory(output_dir) as tmp:
        # A bare encoder (with pooler): every head built on top reports only its own weights as new.
        BertModel(config).save_pretrained(tmp)
        with open(os.path.join(tmp, "vocab.txt"), "w", encoding="utf-8") as f:
            f.writelines(token + "\n" for token in vocab)
        BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True).save_pretrained(tmp)
    return output_dir


def main(argv=None) -> str:
    """Build (once) a small random BERT whose vocab covers the shared datasets: QUICK runs and benchmarks."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("output_dir")
    parser.add_argument("--data_dir", required=True, help="folder holding unsup/sentences.txt")
    parser.add_argument("--hidden_size", type=int, default=64)
    parser.add_argument("--num_layers", type=int, default=2)
    parser.add_argument("--num_heads", type=int, default=2)
    parser.add_argument("--intermediate_size", type=int, default=128)
    parser.add_argument("--max_lines", type=int, default=100000)
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.output_dir, "config.json")):
        with open(os.path.join(args.data_dir, "unsup", "sentences.txt"), encoding="utf-8") as f:
            texts = [line for _, line in zip(range(args.max_lines), f)]
        make_random_bert(args.output_dir, build_char_vocab(texts), args.hidden_size, args.num_layers,
                         args.num_heads, args.intermediate_size)
    print(args.output_dir)
    return args.output_dir


if __name__ == "__main__":
    main()
