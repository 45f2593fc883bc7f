"""Matryoshka embeddings: the prefix-summed losses against the plain losses on cut vectors, SimCSE trained with
--matryoshka_dims (dev Spearman per prefix, dims in bertorch.json), SentenceEncoder.encode(dimensions=) and an
ONNX graph cut to a prefix with --output_dim (parity checked against the cut PyTorch vector)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

import export_onnx
from bertorch.errors import UsageError
from bertorch.losses.contrastive import in_batch_negatives_loss, pair_contrastive_loss
from bertorch.losses.matryoshka import check_dims, matryoshka_sum
from bertorch.onnx import OnnxBackend, check_parity
from bertorch.onnx.verify import pad
from bertorch.predictors.encoder import SentenceEncoder
from conftest import NEGATIVE, POSITIVE
from run_simcse import main as simcse_main

TEXTS = POSITIVE + NEGATIVE


def test_sum_is_weighted_and_defaults_to_the_whole_vector():
    assert matryoshka_sum(lambda d: torch.tensor(float(d or 100))) == 100
    assert matryoshka_sum(lambda d: torch.tensor(float(d)), [8, 4, 2]) == 14
    assert matryoshka_sum(lambda d: torch.tensor(float(d)), [8, 4], [0.5, 2.0]) == 12


@pytest.mark.parametrize("dims,weights,size,message", [
    ([0, 4], None, None, "--matryoshka_dims 0 4: give distinct positive sizes"),
    ([4, 4], None, None, "--matryoshka_dims 4 4: give distinct positive sizes"),
    ([64, 4], None, 32, "--matryoshka_dims 64 is over the embedding size 32"),
    ([8, 4], [1.0], 32, "--matryoshka_weights gives 1 weights for 2 --matryoshka_dims"),
    (None, [1.0], 32, "--matryoshka_weights needs --matryoshka_dims")])
def test_bad_dims_are_one_line_usage_errors(dims, weights, size, message):
    with pytest.raises(UsageError, match=message):
        check_dims(dims, weights, size)
    check_dims([32, 8], [1.0, 0.5], 32)  # and good ones pass


@pytest.mark.parametrize("symmetric", [False, True])
def test_contrastive_prefix_sum_equals_the_loss_of_each_cut_vector(symmetric):
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(5, 2, 12, generator=g, dtype=torch.float64)
    got = pair_contrastive_loss(emb, 20.0, 0.2, symmetric, gather=False, dims=[12, 6, 3], weights=[1.0, 1.0, 0.5])
    ref = 0.0
    for d, w in zip([12, 6, 3], [1.0, 1.0, 0.5]):
        a, b = emb[:, 0, :d], emb[:, 1, :d]
        loss = in_batch_negatives_loss(a, b, None, 20.0, 0.2)
        if symmetric:
            loss = (loss + in_batch_negatives_loss(b, a, None, 20.0, 0.2)) / 2
        ref = ref + w * loss
    assert torch.allclose(got, ref, rtol=1e-12)
    assert torch.allclose(pair_contrastive_loss(emb, 20.0, 0.2, symmetric, gather=False, dims=[12]),
                          pair_contrastive_loss(emb, 20.0, 0.2, symmetric, gather=False))


@pytest.fixture(scope="module")
def matryoshka_model(tiny_bert, tmp_path_factory):
    """A tiny SimCSE model trained with --matryoshka_dims 16 8 4 on 16-dimensional vectors, and its results."""
    root = tmp_path_factory.mktemp("matryoshka")
    (root / "sents.txt").write_text("".join(t + "\n" for t in TEXTS), encoding="utf-8")
    shifted = TEXTS[1:] + TEXTS[:1]
    (root / "sts.txt").write_text("".join(f"{a}\t{b}\t{i % 6}\n" for i, (a, b) in enumerate(zip(TEXTS, shifted))),
                                  encoding="utf-8")
    out = root / "model"
    results = simcse_main(["--pretrained_model_name_or_path", tiny_bert, "--saved_dir", str(out), "--max_steps", "3",
                           "--batch_size", "4", "--save_steps", "0", "--train_data_file", str(root / "sents.txt"),
                           "--dev_data_file", str(root / "sts.txt"), "--pooling_mode", "mean", "--output_emb_size",
                           "16", "--matryoshka_dims", "16", "8", "4", "--matryoshka_weights", "1", "1", "0.5"])
    return str(out), results


def test_dev_spearman_per_prefix_and_dims_saved(matryoshka_model):
    model_dir, results = matryoshka_model
    assert {"final_spearman@16", "final_spearman@8", "final_spearman@4"} <= set(results)
    assert results["final_spearman@16"] == pytest.approx(results["final_spearman"])
    assert len({round(results[f"final_spearman@{d}"], 6) for d in (16, 8, 4)}) > 1  # the prefixes really differ
    assert json.load(open(f"{model_dir}/bertorch.json"))["matryoshka_dims"] == [16, 8, 4]
    assert SentenceEncoder.from_pretrained(model_dir).matryoshka_dims == [16, 8, 4]


def test_encode_dimensions_is_the_renormalised_prefix(matryoshka_model):
    encoder = SentenceEncoder.from_pretrained(matryoshka_model[0])
    full = encoder.encode(TEXTS, batch_size=5, normalize=False)
    cut = encoder.encode(TEXTS, batch_size=5, dimensions=8)
    assert cut.shape == (len(TEXTS), 8)
    assert np.allclose(cut, full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True), atol=1e-6)
    assert np.allclose(encoder.encode(TEXTS[:3], normalize=False, dimensions=4), full[:3, :4], atol=1e-6)
    assert encoder.encode(TEXTS[0], dimensions=4).shape == (4,) and encoder.encode([], dimensions=4).shape == (0, 4)
    assert np.allclose(encoder.similarity(TEXTS[:3], TEXTS[3:6], dimensions=8), (cut[:3] * cut[3:6]).sum(1), atol=1e-6)
    for bad in (0, 17, 2.5):
        with pytest.raises(UsageError, match=f"dimensions={bad}: give a prefix length from 1 to the embedding size 16"):
            encoder.encode(TEXTS[:2], dimensions=bad)


def test_onnx_graph_cut_to_a_prefix_matches_torch(matryoshka_model, tmp_path):
    pytest.importorskip("onnxruntime")
    model_dir = matryoshka_model[0]
    out = tmp_path / "onnx8"
    assert export_onnx.main(["--model_dir", model_dir, "--output", str(out), "--output_dim", "8"]) == 0  # parity ok
    assert check_parity(model_dir, str(out / "model.onnx"), batch_sizes=(1, 3), lengths=(8, 32)).ok
    info = json.load(open(out / "bertorch.json"))
    assert info["output_dim"] == 8 and info["matryoshka_dims"] == [8, 4]  # the dims this graph can still serve
    backend = OnnxBackend(str(out))
    assert backend.metadata["bertorch.output_dim"] == "8"
    onnx_encoder = SentenceEncoder.from_pretrained(str(out), backend="onnx")
    expected = SentenceEncoder.from_pretrained(model_dir).encode(TEXTS, dimensions=8)
    tokenizer = onnx_encoder.tokenizer
    graph = backend(pad([{"input_ids": tokenizer(TEXTS[1])["input_ids"]}], tokenizer.pad_token_id))
    assert graph["sentence_embedding"].shape == (1, 8) and np.allclose(graph["normalized_embedding"], expected[1:2],
                                                                        atol=1e-5)
    assert np.allclose(onnx_encoder.encode(TEXTS), expected, atol=1e-5)
    assert np.allclose(onnx_encoder.encode(TEXTS, dimensions=4), SentenceEncoder.from_pretrained(model_dir).encode(
        TEXTS, dimensions=4), atol=1e-5)


def test_output_dim_that_cannot_be_served_is_refused(matryoshka_model, tiny_bert, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    classifier = tmp_path / "classifier"
    AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2).save_pretrained(str(classifier))
    for name in ("vocab.txt", "tokenizer_config.json"):
        (classifier / name).write_bytes(open(f"{tiny_bert}/{name}", "rb").read())
    (classifier / "bertorch.json").write_text(json.dumps({"task": "classification", "max_seq_length": 32}))
    for model_dir, dim, message in [(matryoshka_model[0], "17", "--output_dim 17: give a prefix length from 1 to the "
                                                                "embedding size 16"),
                                    (tiny_bert, "0", "--output_dim 0: give a prefix length from 1 to the embedding "
                                                     "size 32"),
                                    (str(classifier), "8", "--output_dim 8: only sentence encoders")]:
        with pytest.raises(SystemExit, match=message):
            export_onnx.main(["--model_dir", model_dir, "--output", str(tmp_path / "x"), "--output_dim", dim])
    assert not (tmp_path / "x").exists()  # refused before anything was written
    export_onnx.main(["--model_dir", matryoshka_model[0], "--output", str(tmp_path / "y"), "--output_dim", "12"])
    assert "--output_dim 12 is not among the dims the model was trained for" in capsys.readouterr().err
