"""ONNX: export + parity per model kind (2 batch sizes x 2 lengths), numpy Viterbi vs pytorch-crf, int8,
ORT-backed predictors equal to the torch ones, bad input, the benchmark script."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

import export_onnx
from bertorch.models.biencoder import BiEncoder, ContrastiveHead
from bertorch.models.crf import CRFHead, viterbi_decode_numpy
from bertorch.models.random_init import build_char_vocab, make_random_bert
from bertorch.models.tagger import Tagger, load_crf_arrays
from bertorch.onnx import OnnxBackend, OnnxError, check_parity, choose_providers, export_model
from bertorch.onnx.verify import build_features, pad
from bertorch.predict import Predictor

pytest.importorskip("onnxruntime")

NER_LABELS = ["O", "B-PER", "I-PER", "S-PER", "B-LOC", "I-LOC"]
TEXTS = ["张三去北京", "李四在上海公司，房间干净，早餐丰富，非常满意", "好", "ABC公司很好😀"]
GRID = {"batch_sizes": (1, 3), "lengths": (8, 32)}


def save_dir(model, tokenizer_dir: str, out, info: dict) -> str:
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(str(out))
    (out / "bertorch.json").write_text(json.dumps(info), encoding="utf-8")
    return str(out)


@pytest.fixture(scope="module")
def trained_classifier(tiny_bert, tiny_texts, tmp_path_factory):
    """A trained tiny classifier (clear margins, not near-ties), so int8 must agree with fp32. Trained
    here in a few full-batch steps; run_classifier's own saving is covered by test_classifier."""
    torch.manual_seed(0)
    labels = ["negative", "positive"]
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2, id2label=dict(enumerate(labels)),
                                                               label2id={l: i for i, l in enumerate(labels)})
    batch = AutoTokenizer.from_pretrained(tiny_bert)(tiny_texts, padding=True, return_tensors="pt")
    gold = torch.tensor([1] * 8 + [0] * 8)  # conftest: 8 positive then 8 negative texts
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    for _ in range(30):
        optimizer.zero_grad()
        model(**batch, labels=gold).loss.backward()
        optimizer.step()
    model.eval()
    assert (model(**batch).logits.argmax(-1) == gold).float().mean() >= 0.9
    out = tmp_path_factory.mktemp("onnx_cls") / "model"
    return save_dir(model, tiny_bert, out, {"task": "classification", "is_text_pair": False, "max_seq_length": 64})


@pytest.fixture(scope="module")
def models(tiny_bert, tmp_path_factory):
    """Every kind the toolkit saves, built directly (random weights, so it takes no training time)."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("onnx_models")
    made = {}
    config = AutoConfig.from_pretrained(tiny_bert, num_labels=3)
    made["pair"] = save_dir(AutoModelForSequenceClassification.from_pretrained(tiny_bert, config=config),
                            tiny_bert, root / "pair", {"task": "classification", "is_text_pair": True,
                                                       "max_seq_length": 64})
    config = AutoConfig.from_pretrained(tiny_bert, id2label=dict(enumerate(NER_LABELS)),
                                        label2id={l: i for i, l in enumerate(NER_LABELS)})
    for head in ("linear", "crf"):
        tagger = Tagger(AutoModelForTokenClassification.from_pretrained(tiny_bert, config=config), None, head == "crf")
        if tagger.crf is not None:  # strong transitions, so the CRF path differs from argmax
            for p in tagger.crf.parameters():
                p.data.normal_(0, 2.0)
        made[f"ner_{head}"] = save_dir(tagger, tiny_bert, root / f"ner_{head}", {
            "task": "ner", "tag": "bios", "use_crf": head == "crf", "doc_stride": 4, "max_seq_length": 16})
    for mode, size in (("mean", 16), ("linear", None), ("cls", 24)):
        config = AutoConfig.from_pretrained(tiny_bert)
        enc = BiEncoder.from_pretrained(tiny_bert, config, mode, size, lambda n: ContrastiveHead())
        made[f"enc_{mode}"] = save_dir(enc, tiny_bert, root / f"enc_{mode}", {
            "task": "sentence_embedding", "pooling_mode": mode, "output_emb_size": size, "max_seq_length": 64})
    made["plain_encoder"] = tiny_bert  # a plain transformers dir: mean pooling, no bertorch.json
    return made


@pytest.fixture(scope="module")
def exported(models, trained_classifier, tmp_path_factory):
    """kind -> (model dir, export dir)."""
    root, out = tmp_path_factory.mktemp("onnx_out"), {}
    for kind, model_dir in {**models, "classifier": trained_classifier}.items():
        out[kind] = (model_dir, os.path.dirname(export_model(model_dir, str(root / kind), opset=17)))
    return out


KINDS = ["classifier", "pair", "ner_linear", "ner_crf", "enc_mean", "enc_linear", "enc_cls", "plain_encoder"]


@pytest.mark.parametrize("kind", KINDS)
def test_export_matches_torch_at_two_batch_sizes_and_two_lengths(kind, exported):
    import onnx

    model_dir, export_dir = exported[kind]
    graph = onnx.load(os.path.join(export_dir, "model.onnx")).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    for i in graph.input:  # dynamic batch and sequence axes, not frozen to the traced shape
        assert [d.dim_param for d in i.type.tensor_type.shape.dim] == ["batch", "sequence"]
    examples = [list(t) for t in TEXTS] if kind.startswith("ner") else (
        list(zip(TEXTS, TEXTS[1:] + TEXTS[:1])) if kind == "pair" else TEXTS)
    report = check_parity(model_dir, export_dir, examples, **GRID)
    assert report.ok, report.table()
    assert [(r["batch_size"], r["length"]) for r in report.rows] == [(1, 8), (3, 8), (1, 16 if kind.startswith("ner") else 32),
                                                                     (3, 16 if kind.startswith("ner") else 32)]
    assert report.rows[0]["longest"] <= 8 < report.rows[-1]["longest"]  # the two lengths really differ
    assert report.max_abs_diff < 1e-4


@pytest.mark.parametrize("kind", KINDS)
def test_optimised_graph_is_fused_and_matches_torch_and_the_plain_graph_on_any_mask(kind, exported, tmp_path):
    """--optimize: one Attention per layer (raw 2-D mask); it agrees with PyTorch on every cell, and with
    the plain graph also on masks that are not right padding."""
    import onnx

    model_dir, export_dir = exported[kind]
    path = export_model(model_dir, str(tmp_path / "fused"), opset=17, optimize=True)
    fused = onnx.load(path)
    ops = [n.op_type for n in fused.graph.node]
    assert ops.count("Attention") == 2 and "SkipLayerNormalization" in ops  # tiny BERT: 2 layers
    assert "Attention:2" in {p.key: p.value for p in fused.metadata_props}["bertorch.fused_ops"]
    assert "Attention" not in [n.op_type for n in onnx.load(os.path.join(export_dir, "model.onnx")).graph.node]
    examples = [list(t) for t in TEXTS] if kind.startswith("ner") else (
        list(zip(TEXTS, TEXTS[1:] + TEXTS[:1])) if kind == "pair" else TEXTS)
    report = check_parity(model_dir, path, examples, **GRID)
    assert report.ok and report.max_abs_diff < 1e-4, report.table()
    info = json.load(open(os.path.join(export_dir, "bertorch.json")))
    tokenizer = AutoTokenizer.from_pretrained(export_dir)
    a, b = OnnxBackend(export_dir), OnnxBackend(path)
    # left padding and a hole: the fused attention reads the mask itself, not per-row lengths
    inputs = pad(build_features(info, tokenizer, examples, 16)[:3], tokenizer.pad_token_id)
    lengths = inputs["attention_mask"].sum(1)
    short, width = int(lengths.argmin()), inputs["input_ids"].shape[1]
    assert lengths[short] < width
    for value in inputs.values():
        value[short] = np.roll(value[short], width - lengths[short])
    inputs["attention_mask"][(short + 1) % 3, 1] = 0
    for name, value in a(inputs).items():
        assert np.allclose(value, b(inputs)[name], atol=1e-4), name


def torch_viterbi(head, emissions: np.ndarray) -> list[int]:
    """pytorch-crf's decode of one sequence (a bool mask: its default uint8 one is deprecated in torch)."""
    e = torch.from_numpy(emissions)[None]
    return head.crf.decode(e, mask=torch.ones(e.shape[:2], dtype=torch.bool))[0]


def test_numpy_viterbi_equals_pytorch_crf_on_random_and_exported_emissions(exported):
    model_dir, export_dir = exported["ner_crf"]
    start, end, trans = load_crf_arrays(export_dir)
    head = CRFHead(len(NER_LABELS))
    with torch.no_grad():
        for p, a in zip((head.crf.start_transitions, head.crf.end_transitions, head.crf.transitions), (start, end, trans)):
            p.copy_(torch.from_numpy(a))
    rng = np.random.default_rng(0)
    for length in (1, 2, 7, 30):
        e = rng.normal(size=(length, len(NER_LABELS))).astype(np.float32) * 3
        assert viterbi_decode_numpy(e, start, end, trans) == torch_viterbi(head, e)
    tokenizer = AutoTokenizer.from_pretrained(export_dir)
    info = json.load(open(os.path.join(export_dir, "bertorch.json")))
    features = build_features(info, tokenizer, [list(t) for t in TEXTS], 16)
    logits = OnnxBackend(export_dir)(pad(features, tokenizer.pad_token_id))["logits"]
    differs_from_argmax = False
    for row, f in enumerate(features):
        e = logits[row, f["char_index"]]
        path = viterbi_decode_numpy(e, start, end, trans)
        assert path == torch_viterbi(head, e)
        differs_from_argmax |= path != e.argmax(-1).tolist()
    assert differs_from_argmax  # the CRF really took part


def test_onnx_predictors_return_the_same_structures_as_torch(exported):
    for kind in ("classifier", "pair", "ner_linear", "ner_crf", "enc_mean", "plain_encoder"):
        model_dir, export_dir = exported[kind]
        torch_p = Predictor.from_pretrained(model_dir, device="cpu")
        onnx_p = Predictor.from_pretrained(export_dir, backend="onnx")
        assert type(onnx_p) is type(torch_p) and isinstance(onnx_p.backend, OnnxBackend)
        if kind in ("classifier", "pair"):
            inputs = TEXTS if kind == "classifier" else list(zip(TEXTS, TEXTS[::-1]))
            assert onnx_p.predict(inputs, batch_size=3) == torch_p.predict(inputs, batch_size=3)
            a, b = onnx_p.predict(inputs, return_probs=True), torch_p.predict(inputs, return_probs=True)
            assert [x["label"] for x in a] == [x["label"] for x in b]
            assert all(x["probs"] == pytest.approx(y["probs"], abs=1e-5) for x, y in zip(a, b))
        elif kind.startswith("ner"):
            long_text = "".join(TEXTS) * 2  # several windows, stitched before decoding
            assert onnx_p.predict(TEXTS + [long_text, ""], batch_size=2) == torch_p.predict(TEXTS + [long_text, ""], batch_size=2)
        else:
            a, b = onnx_p.encode(TEXTS, batch_size=3), torch_p.encode(TEXTS, batch_size=3)
            assert a.shape == b.shape and a.dtype == np.float32 and np.allclose(a, b, atol=1e-5)
            assert np.allclose(onnx_p.encode(TEXTS, normalize=False), torch_p.encode(TEXTS, normalize=False), atol=1e-5)
            assert onnx_p.encode(TEXTS[0]).shape == (a.shape[1],)
    # the .onnx file itself works as well as its directory
    onnx_file = os.path.join(exported["classifier"][1], "model.onnx")
    assert Predictor.from_pretrained(onnx_file, backend="onnx").predict(TEXTS) == \
        Predictor.from_pretrained(exported["classifier"][0]).predict(TEXTS)


def test_session_threads_and_spinning_reach_every_predictor(exported):
    for kind in ("classifier", "ner_crf", "enc_mean"):
        predictor = Predictor.from_pretrained(exported[kind][1], backend="onnx", threads=1, spinning=False)
        options = predictor.backend.session.get_session_options()
        assert options.intra_op_num_threads == 1
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_encoder_graph_outputs_the_normalised_vector_of_encode(exported):
    from bertorch.predictors.encoder import SentenceEncoder

    model_dir, export_dir = exported["enc_mean"]
    tokenizer = AutoTokenizer.from_pretrained(export_dir)
    out = OnnxBackend(export_dir)(pad([{"input_ids": tokenizer(TEXTS[1])["input_ids"]}], tokenizer.pad_token_id))
    expected = SentenceEncoder.from_pretrained(model_dir, device="cpu").encode([TEXTS[1]])
    assert out["normalized_embedding"].shape == (1, 16)
    assert np.allclose(out["normalized_embedding"], expected, atol=1e-5)


def test_int8_export_agrees_with_fp32_and_reports_metrics(trained_classifier, sentiment_files, tmp_path):
    out = tmp_path / "q"
    assert export_onnx.main(["--model_dir", trained_classifier, "--output", str(out), "--quantize", "int8",
                             "--dev_file", sentiment_files["dev"], "--optimize"]) == 0
    report = json.loads((out / "onnx_export.json").read_text(encoding="utf-8"))
    assert report["parity"]["ok"] and len(report["parity"]["cells"]) == 4
    q = report["int8"]
    assert os.path.isfile(q["onnx"]) and q["size_mb"] > 0 and q["agreement_with_fp32"] >= 0.8
    assert abs(q["int8_metrics"]["accuracy"] - q["fp32_metrics"]["accuracy"]) <= 0.2
    assert Predictor.from_pretrained(q["onnx"], backend="onnx").predict(TEXTS)  # the int8 file serves too
    import onnx

    ops = {n.op_type for n in onnx.load(q["onnx"]).graph.node}
    assert "QAttention" in ops and "Attention" not in ops  # Q/K/V projections quantised inside the fused attention


def test_export_refuses_success_when_the_graph_disagrees(trained_classifier, tmp_path, monkeypatch):
    from bertorch.onnx import export

    monkeypatch.setattr(export.GraphModule, "forward", lambda self, input_ids, attention_mask, token_type_ids:
                        -self.model(input_ids=input_ids, attention_mask=attention_mask,
                                    token_type_ids=token_type_ids)["logits"])
    with pytest.raises(SystemExit) as e:
        export_onnx.main(["--model_dir", trained_classifier, "--output", str(tmp_path / "bad")])
    assert e.value.code == 1
    assert not json.loads((tmp_path / "bad" / "onnx_export.json").read_text())["parity"]["ok"]


def test_a_fused_graph_that_disagrees_falls_back_to_the_plain_graph(trained_classifier, tmp_path, monkeypatch):
    import onnx
    from onnx import numpy_helper

    from bertorch.onnx import export, optimize

    def wrong_fusion(path, config):  # stands for an optimizer pattern that changed the maths
        fused = optimize.optimize_graph(path, config)
        model = onnx.load(path)
        for t in model.graph.initializer:
            if t.name.endswith("classifier.weight"):
                t.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(t), t.name))
        onnx.save(model, path)
        return fused

    monkeypatch.setattr(export, "optimize_graph", wrong_fusion)
    assert export_onnx.main(["--model_dir", trained_classifier, "--output", str(tmp_path / "o"), "--optimize"]) == 0
    report = json.loads((tmp_path / "o" / "onnx_export.json").read_text())
    assert report["parity"]["ok"] and report["fused_ops"] == ""
    assert "Attention" not in [n.op_type for n in onnx.load(str(tmp_path / "o" / "model.onnx")).graph.node]


def test_bad_input_gives_clear_errors(tiny_bert, trained_classifier, exported, tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    for argv, message in (([str(tmp_path / "empty")], "not a bertorch/transformers model"),
                          ([str(tmp_path / "nope")], "no such directory"),
                          ([trained_classifier, "--opset", "9"], "too old")):
        with pytest.raises(SystemExit, match=message):
            export_onnx.main(["--model_dir", argv[0], "--output", str(tmp_path / "o"), *argv[1:]])
    with pytest.raises(OnnxError, match="no model.onnx"):
        Predictor.from_pretrained(trained_classifier, backend="onnx")
    # a graph exported from another vocabulary, dropped into this export dir
    small = make_random_bert(str(tmp_path / "small"), build_char_vocab(["张三"]), hidden_size=16, num_layers=1,
                             num_heads=1, intermediate_size=16)
    AutoModelForSequenceClassification.from_pretrained(small, num_labels=2).save_pretrained(small)
    other = export_model(small, str(tmp_path / "small_onnx"))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in os.listdir(exported["classifier"][1]):
        (mixed / name).write_bytes(open(os.path.join(exported["classifier"][1], name), "rb").read())
    (mixed / "model.onnx").write_bytes(open(other, "rb").read())
    with pytest.raises(OnnxError, match="exported from another model"):
        Predictor.from_pretrained(str(mixed), backend="onnx")
    # a graph whose inputs are not the tokenizer's
    torch.onnx.export(torch.nn.Embedding(10, 4), (torch.zeros(1, 3, dtype=torch.long),), str(mixed / "model.onnx"),
                      input_names=["tokens"], dynamo=False)
    with pytest.raises(OnnxError, match="do not match the tokenizer"):
        Predictor.from_pretrained(str(mixed), backend="onnx")
    # no onnxruntime: the error names the extras
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(OnnxError, match=r"bertorch\[onnx\].*onnx-gpu"):
        Predictor.from_pretrained(exported["classifier"][1], backend="onnx")
    with pytest.raises(SystemExit, match="onnx-gpu"):
        export_onnx.main(["--model_dir", trained_classifier, "--output", str(tmp_path / "o2")])


def test_cuda_provider_when_available_else_cpu_with_a_warning(monkeypatch):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert choose_providers() == ["CPUExecutionProvider"]
    with pytest.warns(UserWarning, match="onnx-gpu"):
        assert choose_providers(device="cuda") == ["CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert choose_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(device="cpu") == ["CPUExecutionProvider"]


def test_inference_benchmark_runs_all_backends(exported, sentiment_files, capsys):
    from bench import inference

    rows = inference.main(["--model_dir", exported["classifier"][0], "--onnx_dir", exported["classifier"][1],
                           "--dev_file", sentiment_files["dev"], "--limit", "6", "--batch_sizes", "1", "4"])
    assert {(r["backend"], r["batch_size"]) for r in rows} == {(b, s) for b in ("torch", "onnx fp32", "onnx int8")
                                                               for s in (1, 4)}
    assert all(r["examples_per_s"] > 0 and "accuracy" in r["metrics"] for r in rows)
    out = capsys.readouterr().out
    assert "vs torch" in out and "spinning off" in out
    # batched longest first: the same examples, so the same metrics
    again = inference.main(["--model_dir", exported["classifier"][0], "--onnx_dir", exported["classifier"][1],
                            "--dev_file", sentiment_files["dev"], "--limit", "6", "--batch_sizes", "4",
                            "--sort_by_length", "--threads", "1"])
    assert [r["metrics"] for r in again] == [r["metrics"] for r in rows if r["batch_size"] == 4]


def test_inference_benchmark_compares_other_models_without_onnx(exported, sentiment_files, capsys):
    from bench import inference

    classifier, pair_model = exported["classifier"][0], exported["pair"][0]
    rows = inference.main(["--model_dir", classifier, "--compare", classifier, "--no-onnx",
                           "--dev_file", sentiment_files["dev"], "--limit", "6", "--batch_sizes", "4"])
    name = f"torch {os.path.basename(classifier)}"
    assert [r["backend"] for r in rows] == ["torch", name]  # same model twice: same predictions
    assert rows[0]["metrics"] == rows[1]["metrics"] and "onnx" not in capsys.readouterr().out
    with pytest.raises(SystemExit, match="is_text_pair True differs"):  # a model of another task is refused
        inference.main(["--model_dir", classifier, "--compare", pair_model, "--no-onnx",
                        "--dev_file", sentiment_files["dev"], "--limit", "6"])


@pytest.mark.parametrize("kind", ["classifier", "pair"])
def test_gemm_share_times_every_weight_product_of_both_backends(kind, exported, sentiment_files, tmp_path):
    """bench/gemm_share.py: each Linear layer of PyTorch and each weight MatMul/Gemm of onnxruntime is timed
    once per call (warm-up excluded), and the shares and the ceiling follow from those times."""
    from bench import gemm_share

    model_dir, onnx_dir = exported[kind]
    dev = tmp_path / "dev.tsv"
    lines = open(sentiment_files["dev"], encoding="utf-8").read().splitlines()[:5]
    texts = [line.split("\t")[0] for line in lines]  # the random pair model's labels are LABEL_0..2
    dev.write_text("".join(f"{t}\t{t[::-1]}\tLABEL_1\n" if kind == "pair" else f"{line}\n"
                           for t, line in zip(texts, lines)), encoding="utf-8")
    threads = torch.get_num_threads()
    rows = gemm_share.main(["--model_dir", model_dir, "--onnx_dir", onnx_dir, "--dev_file", str(dev),
                            "--batch_sizes", "1", "2", "--threads", "1", "--output", str(tmp_path / "g.json")])
    assert torch.get_num_threads() == threads  # --threads 1 in-process must not slow the tests that follow
    layers = 2  # tiny_bert: per layer Q, K, V, attention output, FFN in and out; then pooler and classifier
    products = 6 * layers + 2
    assert len(gemm_share.weight_gemm_nodes(os.path.join(onnx_dir, "model.onnx"))) == products
    for row, calls in zip(rows, (5, 3)):
        assert row["torch_gemm_calls"] == row["onnx_gemm_calls"] == calls * products
        assert 0 < row["torch_gemm_s"] < row["torch_total_s"] and 0 < row["onnx_gemm_s"] < row["onnx_kernels_s"]
        assert row["ceiling"] == pytest.approx(row["torch_total_s"] / row["onnx_gemm_s"])
    assert json.load(open(tmp_path / "g.json")) == rows
    with pytest.raises(SystemExit, match="takes a classifier"):
        gemm_share.main(["--model_dir", exported["ner_linear"][0], "--dev_file", str(dev)])


def test_a_relative_dev_file_is_looked_up_like_the_scripts_and_a_missing_one_writes_nothing(trained_classifier,
                                                                                          tmp_path, monkeypatch):
    """--dev_file chnsenticorp/dev.tsv is found in the data roots (data/ here); a missing one is one error line
    before anything is exported (no model.onnx without its onnx_export.json)."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "missing"
    with pytest.raises(SystemExit, match=r"^error: no/such/dev\.tsv: file not found \(looked in"):
        export_onnx.main(["--model_dir", trained_classifier, "--output", str(out), "--dev_file", "no/such/dev.tsv"])
    assert not out.exists()
    assert export_onnx.main(["--model_dir", trained_classifier, "--output", str(tmp_path / "found"),
                             "--dev_file", "chnsenticorp/dev.tsv"]) == 0
    report = json.load(open(tmp_path / "found" / "onnx_export.json", encoding="utf-8"))
    assert report["parity"]["ok"]
