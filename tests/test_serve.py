"""bertorch.serve: every endpoint and error code in-process (ASGI), answers equal to the Predictors',
dynamic batches of mixed lengths, the 429/503 paths, drain on shutdown, and one real server over HTTP.

Waiting is bounded everywhere: polls stop after WAIT seconds, and tests that must not be answered by the
batching timer use a max_wait_ms far beyond any client timeout (so only a full batch or a drain answers).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

import run_classifier  # noqa: E402
import run_ner  # noqa: E402
from bertorch.model_dir import MULTITASK_FILE  # noqa: E402
from bertorch.predict import Predictor  # noqa: E402
from bertorch.predictors.encoder import SentenceEncoder  # noqa: E402
from bertorch.serve.app import create_app  # noqa: E402
from bertorch.serve.batcher import Item, Job, take_batch  # noqa: E402
from bertorch.serve.service import ServeConfig, load_models  # noqa: E402
from conftest import NEGATIVE, POSITIVE, ROOT  # noqa: E402
from run_simcse import main as simcse_main  # noqa: E402
from test_ner import ner_args, ner_files  # noqa: E402, F401  (fixture)

WAIT = 60.0          # seconds: the bound on every poll and client call
NEVER_MS = 600_000   # a batching timer no test may depend on
TEXTS = POSITIVE + NEGATIVE
SHORT = ["好", "差"]  # 3 tokens with [CLS] and [SEP]
LONG = ["这家酒店很好，服务周到，房间干净，早餐丰富，非常满意，下次还来", "屏幕有坏点，很失望，物流太慢，包装破损，电脑发热严重，电池不行"]
NER_TEXTS = ["张三去北京，李四去上海", "李四在上海公司。", "ABC公司很好😀",
             "张三去北京，李四去上海。" * 4]  # the last is over max_seq_length 24: windows


# -- models (trained for a few steps by the real scripts) -------------------------------------------------
def classifier_args(tiny_bert, train, labels, out, *extra):
    return ["--pretrained_model_name_or_path", tiny_bert, "--train_data_file", train, "--label_file", labels,
            "--saved_dir", str(out), "--max_steps", "6", "--batch_size", "8", "--learning_rate", "3e-3",
            "--save_steps", "0", "--max_seq_length", "24", "--seed", "5", *extra]


@pytest.fixture(scope="module")
def classifier(tiny_bert, sentiment_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("serve_cls")
    run_classifier.main(classifier_args(tiny_bert, sentiment_files["train"], sentiment_files["labels"], out))
    return str(out)


@pytest.fixture(scope="module")
def pair_classifier(tiny_bert, sentiment_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("serve_pair")
    train = out.parent / "pairs.tsv"
    train.write_text("".join(f"{a}\t{b}\t{'positive' if i % 2 else 'negative'}\n"
                             for i, (a, b) in enumerate(zip(TEXTS, TEXTS[::-1]))), encoding="utf-8")
    run_classifier.main(classifier_args(tiny_bert, str(train), sentiment_files["labels"], out, "--is_text_pair"))
    return str(out)


@pytest.fixture(scope="module")
def tagger(tiny_bert, ner_files, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("serve_ner")
    run_ner.main(ner_args(tiny_bert, ner_files, out, "--use_crf", "--max_steps", "6"))
    return str(out)


@pytest.fixture(scope="module")
def encoder(tiny_bert, tmp_path_factory):
    out = tmp_path_factory.mktemp("serve_enc")
    sentences = out.parent / "sentences.txt"
    sentences.write_text("".join(t + "\n" for t in TEXTS), encoding="utf-8")
    simcse_main(["--pretrained_model_name_or_path", tiny_bert, "--train_data_file", str(sentences), "--saved_dir",
                 str(out / "model"), "--max_steps", "2", "--batch_size", "4", "--save_steps", "0",
                 "--pooling_mode", "cls", "--output_emb_size", "16"])
    return str(out / "model")


# -- helpers -----------------------------------------------------------------------------------------------
def serve(model_dir, body, loader=load_models, **config):
    """Run `await body(client, app)` against the app with its lifespan (load, then drain on exit)."""
    async def main():
        app = create_app(ServeConfig(model_dir, **config), loader=loader)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve",
                                         timeout=WAIT) as client:
                if loader is load_models:
                    await asyncio.to_thread(app.state.service.loaded.wait, WAIT)
                    assert app.state.service.state == "ok", app.state.service.detail
                return await asyncio.wait_for(body(client, app), WAIT)
    return asyncio.run(main())


async def until(predicate, what: str):
    for _ in range(int(WAIT / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"gave up waiting for {what}")


class Recording:
    """A backend that records the shape of every forward pass it runs."""

    def __init__(self, backend):
        self.backend, self.shapes = backend, []

    def __call__(self, inputs):
        self.shapes.append(inputs["input_ids"].shape)
        return self.backend(inputs)


def record(app, name="default") -> Recording:
    predictor = app.state.service.models[name].predictor
    predictor.backend = Recording(predictor.backend)
    return predictor.backend


def assert_same_predictions(got: list[dict], expected: list[dict]):
    assert [g["label"] for g in got] == [e["label"] for e in expected]
    for g, e in zip(got, expected):
        assert g["probs"] == pytest.approx(e["probs"], abs=1e-5)


def metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
               or line.startswith(name + "{"))


# -- classification --------------------------------------------------------------------------------------
def test_predict_answers_are_the_predictors(classifier):
    predictor = Predictor.from_pretrained(classifier)
    texts = TEXTS + LONG

    async def body(client, app):
        plain = await client.post("/predict", json={"inputs": texts})
        probs = await client.post("/predict", json={"inputs": texts, "return_probs": True})
        top = await client.post("/predict", json={"inputs": texts[:3], "top_k": 1})
        empty = await client.post("/predict", json={"inputs": []})
        return plain, probs, top, empty

    plain, probs, top, empty = serve(classifier, body, max_batch_size=32)
    assert plain.status_code == probs.status_code == top.status_code == 200
    assert plain.json()["predictions"] == predictor.predict(texts)
    assert_same_predictions(probs.json()["predictions"], predictor.predict(texts, return_probs=True))
    for p, e in zip(top.json()["predictions"], predictor.predict(texts[:3], return_probs=True)):
        assert set(p) == {"label", "top_k"} and len(p["top_k"]) == 1
        assert p["top_k"][0]["label"] == e["label"] == p["label"]
        assert p["top_k"][0]["score"] == pytest.approx(max(e["probs"].values()), abs=1e-5)
    assert empty.status_code == 200 and empty.json() == {"predictions": []}


def test_pair_model_takes_pairs(pair_classifier):
    predictor = Predictor.from_pretrained(pair_classifier)
    pairs = list(zip(TEXTS[:5], TEXTS[5:10]))

    async def body(client, app):
        ok = await client.post("/predict", json={"inputs": [list(p) for p in pairs], "return_probs": True})
        single = await client.post("/predict", json={"inputs": [list(pairs[0]), "一句话"]})
        triple = await client.post("/predict", json={"inputs": [["a", "b", "c"]]})
        return ok, single, triple

    ok, single, triple = serve(pair_classifier, body)
    assert ok.status_code == 200
    assert_same_predictions(ok.json()["predictions"], predictor.predict(pairs, return_probs=True))
    assert single.status_code == 422
    assert single.json()["detail"][0]["loc"] == ["body", "inputs", 1] and "pairs" in single.json()["detail"][0]["msg"]
    assert triple.status_code == 422 and triple.json()["detail"][0]["loc"][:3] == ["body", "inputs", 0]


@pytest.mark.parametrize("max_batch_tokens", [16384, 47])
def test_concurrent_requests_of_mixed_lengths_each_get_their_own_answer(classifier, max_batch_tokens):
    """Short and long requests queued together: with room, one forward pass for all of them; with a
    47-token budget (a long input is cut to 24 tokens, a short one is 3), passes that never pad a short
    input to a long one's width. Every request gets what the Predictor answers for its own inputs."""
    predictor = Predictor.from_pretrained(classifier)
    requests = [SHORT[:1], LONG[:1], SHORT[1:] + LONG[1:], TEXTS[:3], LONG + SHORT, TEXTS[8:9]]
    total = sum(map(len, requests))

    async def body(client, app):
        backend = record(app)
        answers = await asyncio.gather(*[client.post("/predict", json={"inputs": r, "return_probs": True})
                                         for r in requests])
        return backend.shapes, answers, (await client.get("/metrics")).text

    # The batch fills at exactly `total` inputs and the timer never fires, so every request is queued
    # before anything runs, whatever the scheduling.
    shapes, answers, metrics = serve(classifier, body, max_batch_size=total, max_batch_tokens=max_batch_tokens,
                                     max_wait_ms=NEVER_MS)
    for r, answer in zip(requests, answers):
        assert answer.status_code == 200
        assert_same_predictions(answer.json()["predictions"], predictor.predict(r, return_probs=True))
    assert sum(rows for rows, _ in shapes) == total == metric(metrics, "bertorch_batch_size_sum")
    assert metric(metrics, "bertorch_batch_size_count") == len(shapes)
    if max_batch_tokens > 1000:
        assert shapes == [(total, 24)]  # one forward pass for six requests, padded to the longest
    else:
        assert all(rows * width <= max_batch_tokens or rows == 1 for rows, width in shapes)
        assert shapes.count((1, 24)) == 4  # each long input alone (cut to 24): no room for company
        assert all(width < 24 for rows, width in shapes if rows > 1)
        assert max(rows for rows, _ in shapes) >= 4, shapes  # the four one-character inputs share a pass


def item(key, cost, job=None):
    return Item(job or Job(key, [None], None, None), 0, cost, 0.0)


def test_take_batch_groups_by_length_within_the_token_budget_and_never_starves_the_oldest():
    pending = [item("a", c) for c in (10, 100, 12, 98, 11, 101)]
    batches = []
    while pending:
        batches.append([it.cost for it in take_batch(pending, max_items=8, max_tokens=300)])
    assert batches == [[10, 11, 12], [100, 101], [98]]  # nearest first: 101 is 1 from 100, 98 is 2
    pending = [item("a", 5), item("b", 5), item("a", 6), item("a", 500)]  # keys never mix; an oversize input runs alone
    assert [it.cost for it in take_batch(pending, max_items=8, max_tokens=100)] == [5, 6]
    assert [it.job.key for it in take_batch(pending, 8, 100)] == ["b"]
    assert [it.cost for it in take_batch(pending, 8, 100)] == [500] and not pending
    pending = [item("a", 1) for _ in range(5)]
    assert len(take_batch(pending, max_items=3, max_tokens=10**6)) == 3 and len(pending) == 2


def test_pricing_inputs_leaves_the_predictors_tokenizer_alone(classifier):
    """The event loop prices inputs while the worker thread tokenises a batch. A fast tokenizer keeps its
    truncation in shared state, so pricing with the Predictor's own tokenizer would switch truncation off
    mid-batch (found by the load test: over-long inputs reached the model, answers changed)."""
    served = load_models(ServeConfig(classifier))["default"]
    shared = served.predictor.tokenizer
    shared([LONG[0] * 3], truncation=True, max_length=served.max_length)  # what predict() leaves set
    before = dict(shared.backend_tokenizer.truncation)
    assert served.check([LONG[0] * 3, "好"], truncate=True)[1] == [24, 3]
    assert shared.backend_tokenizer.truncation == before


# -- errors -------------------------------------------------------------------------------------------------
def test_error_codes(classifier):
    async def body(client, app):
        out = {
            "malformed": await client.post("/predict", content=b'{"inputs": [', headers={"content-type": "application/json"}),
            "no inputs": await client.post("/predict", json={"texts": ["好"]}),
            "not a list": await client.post("/predict", json={"inputs": "好"}),
            "typo": await client.post("/predict", json={"inputs": ["好"], "return_prob": True}),
            "top_k 0": await client.post("/predict", json={"inputs": ["好"], "top_k": 0}),
            "pair to a single model": await client.post("/predict", json={"inputs": ["好", ["a", "b"]]}),
            "too long": await client.post("/predict", json={"inputs": ["好", LONG[0] * 2], "truncate": False}),
            "unknown task": await client.post("/predict", json={"inputs": ["好"], "task": "nope"}),
            "too many": await client.post("/predict", json={"inputs": ["好"] * 9}),
            "wrong endpoint": await client.post("/ner", json={"inputs": ["好"]}),
            "cut": await client.post("/predict", json={"inputs": [LONG[0] * 2]}),
        }
        return out

    r = serve(classifier, body, max_batch_size=8)
    field = {k: v.json()["detail"][0]["loc"] for k, v in r.items() if v.status_code == 422}
    assert field == {"malformed": ["body", 12], "no inputs": ["body", "inputs"], "not a list": ["body", "inputs"],
                     "typo": ["body", "return_prob"], "top_k 0": ["body", "top_k"],
                     "pair to a single model": ["body", "inputs", 1], "too long": ["body", "inputs", 1],
                     "unknown task": ["body", "task"]}
    assert "max length 24" in r["too long"].json()["detail"][0]["msg"]
    assert r["too many"].status_code == 413 and "max_batch_size 8" in r["too many"].json()["detail"]
    assert r["wrong endpoint"].status_code == 404 and "/predict" in r["wrong endpoint"].json()["detail"]
    assert r["cut"].status_code == 200  # truncate defaults to true, as the Predictor


def test_429_when_the_queue_is_full_then_the_queued_requests_are_answered(classifier):
    async def body(client, app):
        waiting = [asyncio.create_task(client.post("/predict", json={"inputs": [t]})) for t in SHORT]
        batcher = app.state.service.batcher
        await until(lambda: batcher.jobs == 2, "two queued requests")
        refused = await client.post("/predict", json={"inputs": ["好"]})
        app.state.service.drain()  # the timer never fires: the drain is what answers the two
        return refused, await asyncio.gather(*waiting)

    refused, answered = serve(classifier, body, max_concurrent=2, max_wait_ms=NEVER_MS)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert [a.status_code for a in answered] == [200, 200]
    assert [a.json()["predictions"][0] for a in answered] == Predictor.from_pretrained(classifier).predict(SHORT)


def test_503_while_loading_and_when_loading_failed(classifier):
    release = threading.Event()

    def slow_loader(config):
        assert release.wait(WAIT)
        return load_models(config)

    async def body(client, app):
        loading = [await client.get(p) for p in ("/health", "/info")]
        loading.append(await client.post("/predict", json={"inputs": ["好"]}))
        release.set()
        await asyncio.to_thread(app.state.service.loaded.wait, WAIT)
        return loading, await client.get("/health"), await client.post("/predict", json={"inputs": ["好"]})

    loading, health, ok = serve(classifier, body, loader=slow_loader)
    assert [r.status_code for r in loading] == [503, 503, 503]
    assert loading[0].json() == {"status": "loading"} and loading[2].headers["retry-after"] == "1"
    assert health.status_code == 200 and health.json() == {"status": "ok"} and ok.status_code == 200

    def broken(config):
        raise FileNotFoundError("no config.json")

    async def failed(client, app):
        await asyncio.to_thread(app.state.service.loaded.wait, WAIT)
        return await client.get("/health"), await client.post("/predict", json={"inputs": ["好"]})

    health, refused = serve(classifier, failed, loader=broken)
    assert health.status_code == 503 and health.json()["status"] == "failed"
    assert "no config.json" in health.json()["detail"] and refused.status_code == 503


def test_shutdown_drains_the_queue(classifier):
    """Requests queued when shutdown starts are all answered; new ones get 503; the worker stops."""
    predictor = Predictor.from_pretrained(classifier)
    requests = [[t] for t in TEXTS[:5]] + [LONG]

    async def body(client, app):
        service = app.state.service
        waiting = [asyncio.create_task(client.post("/predict", json={"inputs": r, "return_probs": True}))
                   for r in requests]
        await until(lambda: service.batcher.queued_items == 7, "seven queued inputs")
        service.drain()
        late = await client.post("/predict", json={"inputs": ["好"]})
        health = await client.get("/health")
        return late, health, await asyncio.gather(*waiting), service

    late, health, answers, service = serve(classifier, body, max_batch_size=32, max_wait_ms=NEVER_MS)
    assert late.status_code == 503 and health.status_code == 503 and health.json()["status"] == "draining"
    for r, a in zip(requests, answers):
        assert a.status_code == 200
        assert_same_predictions(a.json()["predictions"], predictor.predict(r, return_probs=True))
    assert not service.batcher.thread.is_alive() and service.batcher.queued_items == 0


# -- ONNX -------------------------------------------------------------------------------------------------
def test_onnx_int8_backend_answers_as_the_onnx_predictor(classifier, tmp_path):
    pytest.importorskip("onnxruntime")
    from bertorch.onnx import export_model, quantize_int8

    int8 = quantize_int8(export_model(classifier, str(tmp_path / "onnx")))
    predictor = Predictor.from_pretrained(int8, backend="onnx")
    texts = TEXTS[:6] + LONG

    async def body(client, app):
        assert app.state.service.models["default"].predictor.backend.path == int8
        return await client.post("/predict", json={"inputs": texts, "return_probs": True}), await client.get("/info")

    answer, info = serve(classifier, body, backend="onnx", onnx_dir=str(tmp_path / "onnx"), int8=True, threads=1)
    assert answer.status_code == 200 and info.json()["backend"] == "onnx int8"
    assert_same_predictions(answer.json()["predictions"], predictor.predict(texts, return_probs=True))


# -- NER, embeddings, multi-task, info, metrics --------------------------------------------------------------
def test_ner_answers_are_the_tagger_predictors_with_windows(tagger):
    predictor = Predictor.from_pretrained(tagger)
    inputs = NER_TEXTS + [list("张三 在北京")]

    async def body(client, app):
        backend = record(app)
        ok = await client.post("/ner", json={"inputs": inputs})
        refused = await client.post("/ner", json={"inputs": NER_TEXTS, "truncate": False})
        info = await client.get("/info")
        return ok, refused, info, backend.shapes

    ok, refused, info, shapes = serve(tagger, body, max_wait_ms=1)
    assert ok.status_code == 200
    got = ok.json()["predictions"]
    assert got == json.loads(json.dumps(predictor.predict(inputs), ensure_ascii=False))
    long_doc = got[3]
    assert len(long_doc["tags"]) == len(NER_TEXTS[3]) > 24  # one tag per character across the windows
    assert all(NER_TEXTS[3][e["start"]:e["end"]] == e["text"] for e in long_doc["entities"])
    assert len(shapes) == 1 and shapes[0][0] > len(inputs)  # one pass, several windows for the long text
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "inputs", 3]
    model = info.json()["models"][0]
    assert model["task"] == "ner" and model["endpoint"] == "/ner" and model["use_crf"] is True
    assert model["max_length"] == 24 and model["tag_scheme"] == "bios" and "B-PER" in model["labels"]


def test_embed_answers_are_the_sentence_encoders_and_dimensions_are_a_renormalised_prefix(encoder):
    predictor = SentenceEncoder.from_pretrained(encoder)
    texts = TEXTS[:6] + LONG

    async def body(client, app):
        return [await client.post("/embed", json=b) for b in (
            {"inputs": texts}, {"inputs": texts, "normalize": False}, {"inputs": texts, "dimensions": 8},
            {"inputs": texts, "dimensions": 17}, {"inputs": ["好"], "dimensions": 0})] + [await client.get("/info")]

    unit, raw, prefix, over, zero, info = serve(encoder, body)
    assert unit.status_code == raw.status_code == prefix.status_code == 200
    assert np.allclose(unit.json()["embeddings"], predictor.encode(texts), atol=1e-5)
    expected_raw = predictor.encode(texts, normalize=False)
    assert np.allclose(raw.json()["embeddings"], expected_raw, atol=1e-5) and raw.json()["dimensions"] == 16
    cut = expected_raw[:, :8] / np.linalg.norm(expected_raw[:, :8], axis=1, keepdims=True)
    assert prefix.json()["dimensions"] == 8 and np.allclose(prefix.json()["embeddings"], cut, atol=1e-5)
    assert over.status_code == 422 and over.json()["detail"][0]["loc"] == ["body", "dimensions"]
    assert zero.status_code == 422
    assert info.json()["models"][0]["embedding_size"] == 16 and info.json()["models"][0]["endpoint"] == "/embed"


def test_multi_task_student_serves_each_task_at_its_endpoint(classifier, tagger, tmp_path):
    """The multi-task student layout: multitask.json naming one model directory per task."""
    student = tmp_path / "student"
    for name, source in (("senti", classifier), ("resume", tagger)):
        shutil.copytree(source, student / name)
    (student / MULTITASK_FILE).write_text(json.dumps({"tasks": {
        "senti": {"task": "classification", "directory": "senti"}, "resume": {"task": "ner", "directory": "resume"}}}))

    async def body(client, app):
        return [await client.post("/predict", json={"inputs": SHORT}),
                await client.post("/ner", json={"inputs": NER_TEXTS[:2], "task": "resume"}),
                await client.post("/ner", json={"inputs": NER_TEXTS[:2], "task": "senti"}),
                await client.post("/embed", json={"inputs": SHORT}), await client.get("/info")]

    labels, tags, wrong, missing, info = serve(str(student), body)
    assert labels.json()["predictions"] == Predictor.from_pretrained(classifier).predict(SHORT)
    assert tags.json()["predictions"] == Predictor.from_pretrained(tagger).predict(NER_TEXTS[:2])
    assert wrong.status_code == 422 and "/predict" in wrong.json()["detail"][0]["msg"]
    assert missing.status_code == 404
    assert {m["name"]: m["endpoint"] for m in info.json()["models"]} == {"senti": "/predict", "resume": "/ner"}


def test_info_metrics_and_docs(classifier):
    async def body(client, app):
        for _ in range(3):
            await client.post("/predict", json={"inputs": SHORT})
        await client.post("/predict", json={"inputs": "x"})
        return [await client.get(p) for p in ("/info", "/metrics", "/docs", "/openapi.json")]

    info, metrics, docs, openapi = serve(classifier, body, max_wait_ms=1)
    assert info.json()["models"][0] == {"name": "default", "task": "classification", "endpoint": "/predict",
                                        "max_length": 24, "labels": ["negative", "positive"], "is_text_pair": False}
    assert info.json()["backend"] == "torch" and info.json()["version"]
    text = metrics.text
    assert metric(text, 'bertorch_requests_total{path="/predict",status="200"}') == 3
    assert metric(text, 'bertorch_requests_total{path="/predict",status="422"}') == 1
    assert metric(text, 'bertorch_items_total{path="/predict"}') == 6
    assert metric(text, "bertorch_batch_size_sum") == 6 and metric(text, "bertorch_queue_seconds_count") == 6
    assert "bertorch_request_seconds_bucket" in text and "bertorch_queued_items 0.0" in text
    assert docs.status_code == 200 and {"/predict", "/ner", "/embed", "/health"} <= set(openapi.json()["paths"])


# -- the real server -------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_server_over_http_drains_on_sigterm_and_exits_0(classifier):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "bertorch.serve", "--model_dir", classifier, "--port", str(port),
                             "--max_batch_size", "16", "--max_wait_ms", str(NEVER_MS), "--threads", "1"],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        async def talk():
            async with httpx.AsyncClient(base_url=url, timeout=WAIT) as client:
                for _ in range(int(WAIT / 0.1)):
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get("/health")).status_code == 200:
                            break
                    assert proc.poll() is None, proc.stdout.read()
                    await asyncio.sleep(0.1)
                info = (await client.get("/info")).json()
                waiting = [asyncio.create_task(client.post("/predict", json={"inputs": [t]})) for t in TEXTS[:3]]
                for _ in range(int(WAIT / 0.05)):  # queued, and only a drain can answer them now
                    if metric((await client.get("/metrics")).text, "bertorch_queued_items") == 3:
                        break
                    await asyncio.sleep(0.05)
                proc.send_signal(signal.SIGTERM)
                return info, await asyncio.gather(*waiting)

        info, answers = asyncio.run(talk())
        assert info["models"][0]["task"] == "classification"
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert [a.json()["predictions"][0] for a in answers] == Predictor.from_pretrained(classifier).predict(TEXTS[:3])
        assert proc.wait(timeout=WAIT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=WAIT)


def test_load_benchmark_quick_run_checks_every_server(classifier, sentiment_files, tmp_path):
    """`python -m bench.serve_load --quick`: four servers, every level answered as the Predictor, a burst
    with nothing lost, a soak, and every server drained to exit 0 (a smoke run: no speed is asserted)."""
    out = tmp_path / "serve_load.json"
    proc = subprocess.run([sys.executable, "-m", "bench.serve_load", "--model_dir", classifier, "--dev_file",
                           sentiment_files["dev"], "--quick", "--output", str(out)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    result = json.loads(out.read_text())
    assert {(r["server"], r["clients"]) for r in result["runs"]} == {
        (s, c) for s in ("torch dynamic", "torch one-at-a-time", "onnx int8 dynamic", "onnx int8 one-at-a-time")
        for c in (1, 4)}
    assert all(r["statuses"] == {"200": r["requests"]} for r in result["runs"])
    assert all(r["agree"] == r["items"] for r in result["runs"] if r["server"].startswith("torch"))
    assert all(r["mean_batch"] == 1.0 for r in result["runs"] if r["server"].endswith("one-at-a-time"))
    assert result["burst"]["ok"] and result["burst"]["mismatched"] == 0
    assert result["soak"]["rss_mb_last"] > 0 and set(result["exit_codes"].values()) == {0}
    assert "| 4 |" in (tmp_path / "serve_load.md").read_text()


@pytest.mark.parametrize("flags, message", [
    (["--max_batch_size", "0"], "--max_batch_size: must be at least 1, got 0"),
    (["--max_batch_tokens", "-5"], "--max_batch_tokens: must be at least 1"),
    (["--max_wait_ms", "-1"], "--max_wait_ms: must be >= 0"),
    (["--max_concurrent", "0"], "--max_concurrent: must be at least 1"),
    (["--threads", "0"], "--threads: must be at least 1"),
    (["--port", "70000"], "--port: must be a TCP port from 0 to 65535"),
    (["--int8"], "--int8 serves an ONNX export: add --backend onnx"),
    (["--onnx_dir", "x"], "--onnx_dir serves an ONNX export: add --backend onnx"),
])
def test_server_flags_that_cannot_work_end_in_one_line_before_loading(flags, message, capsys):
    from bertorch.serve.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["--model_dir", "no/such/model", *flags])  # refused before the directory is even looked at
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
