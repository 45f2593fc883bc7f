"""Sentence-BERT, SimCSE and batchneg: end-to-end runs, encoder reload, STS metrics, samplers, bad input."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr

from bertorch import cli
from bertorch.data.readers import DataError, TextExample
from bertorch.data.sentence import ContrastiveBatchSampler, read_pairs, read_sentences, read_sts
from bertorch.distributed import DistEnv
from bertorch.models.biencoder import BiEncoder, PairClassifier
from bertorch.predictors.encoder import SentenceEncoder
from bertorch.tasks.sbert import SentenceBertTask
from bertorch.tasks.sentence import sts_metrics
from bertorch.tasks.simcse import SimCSETask
from conftest import NEGATIVE, POSITIVE
from run_batchneg import main as batchneg_main
from run_sentencebert import main as sbert_main
from run_simcse import main as simcse_main

TEXTS = POSITIVE + NEGATIVE


def write(path, lines) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


@pytest.fixture
def files(tmp_path):
    shifted = POSITIVE[1:] + POSITIVE[:1] + NEGATIVE[1:] + NEGATIVE[:1]
    return {
        "sentences": write(tmp_path / "sents.txt", TEXTS + TEXTS[:4]),  # a few repeated sentences
        "sts": write(tmp_path / "sts.txt", [f"{a}\t{b}\t{i % 6}" for i, (a, b) in enumerate(zip(TEXTS, shifted))]),
        "pairs": write(tmp_path / "pairs.txt", [f"{a}\t{b}\t{int(i % 4 != 0)}" for i, (a, b) in
                                                enumerate(zip(TEXTS, shifted))]),
        "labelled": write(tmp_path / "afqmc.txt", [f"{a}\t{b}\t{int(i % 2)}" for i, (a, b) in
                                                    enumerate(zip(TEXTS, TEXTS[::-1]))]),
        "nli": write(tmp_path / "nli.txt", [f"{a}\t{b}\t{['entailment', 'neutral', 'contradiction'][i % 3]}"
                                            for i, (a, b) in enumerate(zip(TEXTS, shifted))]),
        "nli_labels": write(tmp_path / "nli_labels.txt", ["entailment", "neutral", "contradiction"]),
        "dir": tmp_path,
    }


def common(model, out, *extra):
    return ["--pretrained_model_name_or_path", model, "--saved_dir", str(out), "--max_steps", "3",
            "--batch_size", "4", "--logging_steps", "1", "--save_steps", "0", *extra]


# -- end to end --------------------------------------------------------------------------------------
def test_simcse_end_to_end_then_encode(tiny_bert, files, capsys):
    out = files["dir"] / "simcse"
    results = simcse_main(common(tiny_bert, out, "--train_data_file", files["sentences"], "--dev_data_file",
                                 files["sts"], "--pooling_mode", "mean", "--output_emb_size", "16",
                                 "--no_duplicates", "--dropout", "0.1"))
    log = capsys.readouterr().err
    assert "negatives per anchor = 3" in log
    assert re.search(r"spearman corr: -?\d\.\d{4}, pearson corr: -?\d\.\d{4}", log)
    assert np.isfinite(results["final_spearman"]) and results["best_spearman"] is not None
    info = json.load(open(out / "bertorch.json"))
    assert info["task"] == "sentence_embedding" and info["pooling_mode"] == "mean"

    encoder = SentenceEncoder.from_pretrained(str(out))
    vectors = encoder.encode(TEXTS, batch_size=5)
    assert vectors.shape == (len(TEXTS), 16) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    npy = str(files["dir"] / "vectors.npy")
    assert encoder.predict_file(files["sentences"], npy) == len(TEXTS) + 4
    assert np.allclose(np.load(npy)[: len(TEXTS)], vectors, atol=1e-6)
    sims = encoder.similarity(TEXTS[:3], TEXTS[1:4])
    assert np.allclose(sims, (vectors[:3] * vectors[1:4]).sum(1), atol=1e-5)


def test_batchneg_keeps_label_one_pairs_and_continues_from_simcse(tiny_bert, files, capsys):
    first = files["dir"] / "bn1"
    batchneg_main(common(tiny_bert, first, "--train_data_file", files["pairs"], "--dev_data_file", files["sts"],
                         "--mean_loss", "--output_emb_size", "8", "--pooling_mode", "cls"))
    log = capsys.readouterr().err
    assert "kept 12 label-1 pairs, dropped 4 label-0 pairs" in log
    second = files["dir"] / "bn2"
    results = batchneg_main(common(tiny_bert, second, "--train_data_file", files["pairs"], "--dev_data_file",
                                   files["sts"], "--output_emb_size", "8", "--pooling_mode", "cls",
                                   "--init_from_ckpt", str(first), "--max_steps", "1"))
    log = capsys.readouterr().err
    assert f"warm-started from {first}" in log and "newly initialised" not in log  # projection came along
    assert np.isfinite(results["final_spearman"])


@pytest.mark.parametrize("nli", [False, True])
def test_sentencebert_end_to_end(tiny_bert, files, nli):
    out = files["dir"] / f"sbert{int(nli)}"
    data = ["--train_data_file", files["nli"], "--dev_data_file", files["nli"], "--is_nli", "--label_file",
            files["nli_labels"]] if nli else ["--train_data_file", files["labelled"], "--dev_data_file",
                                              files["labelled"]]
    results = sbert_main(common(tiny_bert, out, *data, "--concat_multiply", "--pooling_mode", "mean"))
    assert 0.0 <= results["final_accuracy"] <= 1.0
    assert ("final_spearman" in results) is (not nli)  # cosine vs 0/1 similarity labels only
    assert os.path.isfile(out / "head.safetensors")  # the classifier, for --init_from_ckpt / resume
    config = json.load(open(out / "config.json"))
    assert config["id2label"]["0"] == ("entailment" if nli else "0")
    assert SentenceEncoder.from_pretrained(str(out)).encode(TEXTS[:2]).shape == (2, 32)


def test_sentencebert_metric_for_best_picks_the_best_model_by_macro_f1(tiny_bert, files):
    """As for classification: on imbalanced pairs (AFQMC) the best-accuracy model can be a majority vote."""
    out = files["dir"] / "sbert_f1"
    results = sbert_main(common(tiny_bert, out, "--train_data_file", files["pairs"], "--dev_data_file", files["pairs"],
                                "--pooling_mode", "mean", "--max_steps", "12", "--eval_steps", "2",
                                "--save_best_model", "--metric_for_best", "macro_f1", "--learning_rate", "3e-3"))
    evals = [r for r in map(json.loads, open(out / "metrics.jsonl", encoding="utf-8")) if r["kind"] == "eval"]
    best = max(evals, key=lambda r: r["macro_f1"])  # max() keeps the first of equals, as the trainer does
    assert len({r["macro_f1"] for r in evals}) > 1  # the choice is not among equals
    assert results["best_step"] == best["step"] and results["best_macro_f1"] == best["macro_f1"]


# -- the saved encoder is the trained encoder ----------------------------------------------------------
def make_task(task_cls, model_dir, out, *extra) -> tuple:
    args = cli.build_parser(task_cls, None).parse_args(
        ["--pretrained_model_name_or_path", model_dir, "--train_data_file", "x", "--saved_dir", str(out), *extra])
    cli.validate_args(args, cli.build_parser(task_cls, None))
    task = task_cls(args, DistEnv())
    task.tokenizer = task.load_tokenizer(model_dir)
    return task, args


@pytest.mark.parametrize("mode,size", [("linear", None), ("cls", 12), ("mean", 12), ("mean", None)])
def test_encode_after_reload_equals_in_memory_model(tiny_bert, tmp_path, mode, size):
    extra = ["--pooling_mode", mode] + (["--output_emb_size", str(size)] if size else [])
    task, _ = make_task(SimCSETask, tiny_bert, tmp_path, *extra)
    model = task.build_model(lambda s: torch.nn.Identity())
    torch.manual_seed(3)
    with torch.no_grad():  # move away from the pretrained weights so a wrong reload cannot pass
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    task.save(model, str(tmp_path))
    model.eval()
    features = task.pair_features([TextExample(t) for t in TEXTS], "test")
    batch = task.collate(features)  # padded: sentences of different lengths in one batch
    with torch.no_grad():
        expected = model.encode(batch["input_ids"][:, 0], batch["attention_mask"][:, 0]).numpy()
    encoder = SentenceEncoder.from_pretrained(str(tmp_path))
    got = encoder.encode(TEXTS, batch_size=3, normalize=False)
    assert got.shape == (len(TEXTS), size or 32)
    assert np.allclose(got, expected, atol=1e-5, rtol=1e-4)


def test_plain_huggingface_directory_encodes_with_mean_pooling(tiny_bert):
    encoder = SentenceEncoder.from_pretrained(tiny_bert)
    assert encoder.encode(TEXTS[:3]).shape == (3, 32)
    assert encoder.encode([]).shape == (0, 32)
    with pytest.raises(ValueError, match="onnx"):  # no exported graph here: a clear error, not a crash
        SentenceEncoder.from_pretrained(tiny_bert, backend="onnx")


# -- metrics -----------------------------------------------------------------------------------------
def test_sts_metrics_equal_scipy():
    gold = [0, 1, 1, 2, 3, 5, 4, 4]  # ties, as in STS-B's integer scores
    cos = [0.1, 0.3, 0.2, 0.5, 0.4, 0.9, 0.95, 0.7]
    m = sts_metrics(gold, cos)
    assert m["spearman"] == pytest.approx(spearmanr(gold, cos).statistic, abs=1e-12)
    assert m["pearson"] == pytest.approx(pearsonr(gold, cos).statistic, abs=1e-12)


def test_sentencebert_spearman_ranks_cosine_against_similarity_labels(tiny_bert, tmp_path):
    task, _ = make_task(SentenceBertTask, tiny_bert, tmp_path)
    task.labels = ["0", "1"]
    task.eval_features = [{"label": label} for label in [0, 1, 1, 0, 1]]
    predictions = [(0, 0.2), (1, 0.9), (0, 0.4), (0, 0.5), (1, 0.8)]
    metrics = task.compute_metrics(predictions)
    assert metrics["accuracy"] == pytest.approx(0.8)
    assert metrics["spearman"] == pytest.approx(spearmanr([0, 1, 1, 0, 1], [0.2, 0.9, 0.4, 0.5, 0.8]).statistic)


# -- batching ----------------------------------------------------------------------------------------
def test_no_duplicates_sampler_keeps_texts_apart_and_covers_every_example():
    keys = [[i % 5] for i in range(23)]  # 5 distinct texts, each repeated
    sampler = ContrastiveBatchSampler([3] * 23, 2, rank=0, world_size=2, seed=0, keys=keys)
    batches = sampler.global_batches()
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(23))
    full = [b for b in batches if len(b) == 4]
    assert all(len({keys[i][0] for i in b}) == len(b) for b in full[:-1])
    for rank in range(2):  # each rank gets its interleaved share of the same global batches
        ranked = ContrastiveBatchSampler([3] * 23, 2, rank=rank, world_size=2, seed=0, keys=keys)
        assert [b[rank::2] for b in batches] == list(ranked)


@pytest.mark.parametrize("n,batch_size,world,expected", [(9, 4, 1, 2), (11, 2, 4, 1), (8, 4, 1, 2), (13, 2, 4, 2)])
def test_too_small_trailing_batch_is_folded_into_another(n, batch_size, world, expected):
    """A global batch of 1 (no negative) or smaller than the world size (wrapped: repeats) is merged."""
    sampler = ContrastiveBatchSampler([5] * n, batch_size, world_size=world, seed=1)
    batches = sampler.global_batches()
    assert len(batches) == len(sampler) == expected and min(map(len, batches)) >= max(2, world)
    assert sorted(i for b in batches for i in b) == list(range(n))


# -- bad input ---------------------------------------------------------------------------------------
def test_batch_size_one_has_no_negatives(tiny_bert, files):
    with pytest.raises(SystemExit, match="--batch_size 1 leaves no in-batch negatives"):
        simcse_main(common(tiny_bert, files["dir"] / "o", "--train_data_file", files["sentences"],
                           "--batch_size", "1"))


def test_single_sentence_file_to_sentencebert(tiny_bert, files):
    with pytest.raises(SystemExit, match=re.escape(files["sentences"]) + r":1: expected 3 tab-separated columns"):
        sbert_main(common(tiny_bert, files["dir"] / "o", "--train_data_file", files["sentences"]))


def test_sts_score_out_of_range_names_file_line_value(tiny_bert, files):
    bad = write(files["dir"] / "bad_sts.txt", ["甲\t乙\t3", "丙\t丁\t5.5"])
    with pytest.raises(SystemExit, match=re.escape(bad) + r":2: score outside the declared range 0..5: '5.5'"):
        simcse_main(common(tiny_bert, files["dir"] / "o", "--train_data_file", files["sentences"],
                           "--dev_data_file", bad))
    with pytest.raises(DataError, match=r":1: score is not a number: 'high'"):
        read_sts(write(files["dir"] / "nan.txt", ["甲\t乙\thigh"]))


def test_pair_file_errors(files):
    missing = write(files["dir"] / "missing.txt", ["甲\t乙", "只有一句"])
    with pytest.raises(DataError, match=re.escape(missing) + r":2: expected text_a\\ttext_b"):
        read_pairs(missing)
    with pytest.raises(DataError, match=r":1: column 2 is empty"):
        read_pairs(write(files["dir"] / "empty.txt", ["甲\t "]))
    with pytest.raises(DataError, match=r":1: the label column must be 0 or 1"):
        read_pairs(write(files["dir"] / "lab.txt", ["甲\t乙\tyes"]))
    with pytest.raises(DataError, match=r"no similar pairs"):
        read_pairs(write(files["dir"] / "zeros.txt", ["甲\t乙\t0"]))
    with pytest.raises(DataError, match=r":1: expected one sentence a line"):
        read_sentences(files["pairs"])


def test_nli_needs_label_file(tiny_bert, files):
    with pytest.raises(SystemExit, match="--is_nli needs --label_file"):
        sbert_main(common(tiny_bert, files["dir"] / "o", "--train_data_file", files["nli"], "--is_nli"))


def test_biencoder_forward_takes_every_collated_key(tiny_bert, tmp_path):
    task, _ = make_task(SentenceBertTask, tiny_bert, tmp_path, "--pooling_mode", "cls")
    task.labels = ["0", "1"]
    model = task.build_model(lambda size: PairClassifier(size, 2))
    assert isinstance(model, BiEncoder)
    features = task.pair_features([TextExample(a, b) for a, b in zip(TEXTS, TEXTS[1:])], "t")
    for f in features:
        f["label"] = 1
    out = model(**task.collate(features))
    assert out.loss is not None and out.logits.shape == (len(features), 2) and out.embeddings.shape[1] == 2
