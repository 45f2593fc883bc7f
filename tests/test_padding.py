"""--pad_to_multiple_of: under autocast batches are padded to a multiple of 8 (fewer shapes for oneDNN's
per-shape cache), and the extra pad tokens change no result: a run trains the weights of one padded to its
longest example, for a label task, a character-level tagger with a CRF and a sentence encoder."""
from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

import run_batchneg
import run_classifier
import run_ner
from bertorch import cli
from bertorch.tasks.base import Task
from bertorch.tasks.classification import ClassificationTask
from conftest import NEGATIVE, POSITIVE

TEXTS = POSITIVE + NEGATIVE


def write(path, lines) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def classifier_args(tmp_path, sentiment_files):
    f = sentiment_files
    return run_classifier.main, ["--train_data_file", f["train"], "--dev_data_file", f["dev"], "--label_file",
                                 f["labels"]]


def ner_args(tmp_path, sentiment_files):
    lines = [json.dumps({"text": list(t), "label": ["B-X"] + ["I-X"] * (len(t) - 1)}, ensure_ascii=False)
             if i % 2 else json.dumps({"text": list(t), "label": ["O"] * len(t)}, ensure_ascii=False)
             for i, t in enumerate(TEXTS)]
    data = write(tmp_path / "ner.json", lines)
    return run_ner.main, ["--train_data_file", data, "--dev_data_file", data, "--use_crf",
                          "--label_file", write(tmp_path / "labels.txt", ["O", "B-X", "I-X"])]


def pair_args(tmp_path, sentiment_files):
    shifted = TEXTS[1:] + TEXTS[:1]
    pairs = write(tmp_path / "pairs.txt", [f"{a}\t{b}\t1" for a, b in zip(TEXTS, shifted)])
    sts = write(tmp_path / "sts.txt", [f"{a}\t{b}\t{i % 5}" for i, (a, b) in enumerate(zip(TEXTS, shifted))])
    return run_batchneg.main, ["--train_data_file", pairs, "--dev_data_file", sts, "--pooling_mode", "mean"]


@pytest.mark.parametrize("kind", [classifier_args, ner_args, pair_args], ids=["classifier", "ner_crf", "batchneg"])
def test_padding_to_a_multiple_trains_the_same_weights(kind, tiny_bert, sentiment_files, tmp_path, monkeypatch):
    main, data = kind(tmp_path, sentiment_files)
    widths = []
    real_pad_to = Task.pad_to
    monkeypatch.setattr(Task, "pad_to", lambda self, features: widths.append(real_pad_to(self, features))
                        or widths[-1])
    weights = {}
    for multiple in ("1", "16"):
        widths.clear()
        out = tmp_path / f"m{multiple}"
        results = main(["--pretrained_model_name_or_path", tiny_bert, *data, "--saved_dir", str(out),
                        "--max_steps", "4", "--batch_size", "4", "--learning_rate", "3e-3", "--logging_steps", "1",
                        "--save_steps", "0", "--seed", "3", "--pad_to_multiple_of", multiple])
        assert results["global_step"] == 4
        weights[multiple] = load_file(os.path.join(out, "model.safetensors"))
        if multiple == "16":  # every batch (the fixture's texts are 7-16 characters) was widened to 16 or 32
            assert widths and all(w % 16 == 0 for w in widths)
        else:
            assert any(w % 16 for w in widths)
    for key, value in weights["1"].items():
        torch.testing.assert_close(weights["16"][key], value, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("flags, expected", [([], 1), (["--bf16"], 8), (["--bf16", "--pad_to_multiple_of", "1"], 1),
                                             (["--pad_to_multiple_of", "4"], 4)])
def test_autocast_pads_to_a_multiple_of_8_unless_told(flags, expected):
    args = cli.parse_args(ClassificationTask, ["--train_data_file", "t.tsv", "--label_file", "l.txt", *flags])
    assert args.pad_to_multiple_of == expected


def test_pad_multiple_is_checked(capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(ClassificationTask, ["--train_data_file", "t", "--label_file", "l", "--pad_to_multiple_of", "0"])
    assert "--pad_to_multiple_of" in capsys.readouterr().err
