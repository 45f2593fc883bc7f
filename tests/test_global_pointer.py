"""GlobalPointer span NER: the loss and the head against hand computations, span data, window merging, the
exact-span metric against seqeval, nested entities end to end, the saved dir, predictor, ONNX and /ner."""
from __future__ import annotations

import json
import math
import os
import random

import numpy as np
import pytest
import torch
from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities

import run_ner
from bertorch.data.readers import DataError
from bertorch.data.spans import read_span_labels, read_spans
from bertorch.losses.spans import global_pointer_loss, multilabel_categorical_crossentropy
from bertorch.metrics import span_metrics
from bertorch.model_dir import read_task_info
from bertorch.models.global_pointer import MASKED, EfficientGlobalPointer, GlobalPointer, rotate
from bertorch.predict import Predictor
from bertorch.predictors.spans import SpanPredictor
from bertorch.tagging import merge_window_spans
from conftest import SHARED_DATA


# -- maths -----------------------------------------------------------------------------------------------
def test_loss_matches_a_hand_computation_and_ignores_masked_spans():
    scores = torch.tensor([[1.0, -2.0, 0.5, MASKED]])
    targets = torch.tensor([[1, 0, 0, 0]])
    by_hand = math.log(1 + math.exp(-2.0) + math.exp(0.5)) + math.log(1 + math.exp(-1.0))
    assert multilabel_categorical_crossentropy(scores, targets).item() == pytest.approx(by_hand, rel=1e-6)
    # no positives: only the negatives' term; every score far below 0: nothing to learn
    assert multilabel_categorical_crossentropy(scores, torch.zeros(1, 4)).item() == pytest.approx(
        math.log(1 + math.exp(1.0) + math.exp(-2.0) + math.exp(0.5)), rel=1e-6)
    assert multilabel_categorical_crossentropy(torch.full((1, 3), -30.0), torch.zeros(1, 3)).item() < 1e-12
    spans = torch.randn(2, 3, 4, 4)
    labels = (torch.rand(2, 3, 4, 4) > 0.8).long()
    rows = [multilabel_categorical_crossentropy(spans[b, k].reshape(1, -1), labels[b, k].reshape(1, -1))
            for b in range(2) for k in range(3)]
    assert global_pointer_loss(spans, labels).item() == pytest.approx(torch.cat(rows).mean().item(), rel=1e-6)


def rotation(position: float, dim: int) -> np.ndarray:
    """RoPE as a block-diagonal matrix: pair i turned by position x 10000^(-2i/dim)."""
    out = np.zeros((dim, dim))
    for i in range(dim // 2):
        angle = position * 10000 ** (-2 * i / dim)
        out[2 * i:2 * i + 2, 2 * i:2 * i + 2] = [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]
    return out


def test_rope_is_the_rotation_matrix_so_scores_see_only_relative_positions():
    x = torch.randn(1, 5, 8)
    positions = torch.tensor([[0, 3, 4, 9, 20]])
    got = rotate(x, positions)[0].numpy()
    for t, p in enumerate(positions[0].tolist()):
        np.testing.assert_allclose(got[t], rotation(p, 8) @ x[0, t].numpy(), atol=1e-5)
    q, k = torch.randn(1, 1, 8), torch.randn(1, 1, 8)
    dots = [float((rotate(q, torch.tensor([[i]])) * rotate(k, torch.tensor([[i + 3]]))).sum()) for i in (0, 5, 40)]
    assert dots == pytest.approx([dots[0]] * 3, abs=1e-4)


def test_both_heads_equal_their_formulas():
    torch.manual_seed(0)
    hidden, positions = torch.randn(2, 6, 16), torch.arange(6).repeat(2, 1)
    gp, egp = GlobalPointer(16, 3, 8), EfficientGlobalPointer(16, 3, 8)
    with torch.no_grad():
        scores = gp(hidden, positions)
        qk = gp.dense(hidden).view(2, 6, 3, 2, 8)
        shared = egp.dense(hidden)
        bias = egp.bias(shared).view(2, 6, 3, 2)  # per type: (end bias, start bias)
        efficient = egp(hidden, positions)
    for b, k, i, j in [(0, 0, 0, 0), (1, 2, 1, 4), (0, 1, 5, 2)]:
        q, key = rotation(i, 8) @ qk[b, i, k, 0].numpy(), rotation(j, 8) @ qk[b, j, k, 1].numpy()
        assert scores[b, k, i, j].item() == pytest.approx(q @ key / math.sqrt(8), abs=1e-4)
        q, key = rotation(i, 8) @ shared[b, i, ::2].numpy(), rotation(j, 8) @ shared[b, j, 1::2].numpy()
        expected = q @ key / math.sqrt(8) + bias[b, i, k, 1].item() / 2 + bias[b, j, k, 0].item() / 2
        assert efficient[b, k, i, j].item() == pytest.approx(expected, abs=1e-4)
    assert sum(p.numel() for p in egp.parameters()) < sum(p.numel() for p in gp.parameters())


# -- data, windows, metric -------------------------------------------------------------------------------
def write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_span_cluener_and_tag_lines_give_the_same_entities(tmp_path):
    text = "张三在北京公司"
    path = write(tmp_path / "mixed.json", [
        {"text": text, "entities": [{"start": 3, "end": 7, "type": "ORG"}, {"start": 3, "end": 5, "type": "LOC"},
                                    {"start": 0, "end": 2, "type": "PER", "text": "张三"}]},
        {"text": text, "label": {"ORG": {"北京公司": [[3, 6]]}, "LOC": {"北京": [[3, 4]]}, "PER": {"张三": [[0, 1]]}}},
        {"text": list(text), "label": ["B-PER", "I-PER", "O", "B-ORG", "I-ORG", "I-ORG", "I-ORG"]},
    ])
    nested, cluener, tagged = read_spans(path)
    assert nested.entities == cluener.entities == [(0, 2, "PER"), (3, 5, "LOC"), (3, 7, "ORG")]
    assert tagged.entities == [(0, 2, "PER"), (3, 7, "ORG")]


@pytest.mark.parametrize("row, message", [
    ({"text": "张三", "entities": [{"start": 1, "end": 3, "type": "PER"}]}, "0 <= start < end <= 2"),
    ({"text": "张三", "entities": [{"start": 0, "end": 2, "type": "PER", "text": "李四"}]}, "not text[0:2]"),
    ({"text": "张三", "label": {"PER": {"李四": [[0, 1]]}}}, "is '张三' in the text"),
    ({"text": "张三", "entities": [{"start": 0, "end": 2, "type": "ORG"}]}, "not in the label file"),
    ({"text": "张三", "label": ["B-PER"]}, "2 characters but 1 labels"),
    ({"text": "张三"}, 'expected "entities"'),
])
def test_bad_lines_name_file_line_and_value(tmp_path, row, message):
    path = write(tmp_path / "bad.json", [{"text": "好", "entities": []}, row])
    with pytest.raises(DataError, match=f"bad.json:2: .*{message}".replace("(", r"\(").replace("[", r"\[")):
        read_spans(path, types=["PER"])


def test_label_file_of_tags_or_of_types(tmp_path):
    (tmp_path / "tags.txt").write_text("O\nB-PER\nI-PER\nS-PER\nB-LOC\nI-LOC\n", encoding="utf-8")
    (tmp_path / "types.txt").write_text("PER\nLOC\n", encoding="utf-8")
    assert read_span_labels(str(tmp_path / "tags.txt")) == (["PER", "LOC"], ["O", "B-PER", "I-PER", "S-PER",
                                                                              "B-LOC", "I-LOC"], "bios")
    assert read_span_labels(str(tmp_path / "types.txt")) == (["PER", "LOC"], None, None)


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, "ner", "resume")), reason="no shared resume data")
def test_resume_bios_converts_to_the_entities_seqeval_scores():
    directory = os.path.join(SHARED_DATA, "ner", "resume")
    types, tags, scheme = read_span_labels(os.path.join(directory, "labels.txt"))
    examples = read_spans(os.path.join(directory, "dev.json"), types, tags, scheme)
    with open(os.path.join(directory, "dev.json"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    assert len(examples) == len(rows)
    for example, row in zip(examples, rows):
        assert example.entities == sorted((s, e + 1, t) for t, s, e in get_entities(row["label"]))


def test_exact_span_f1_is_seqevals_on_flat_data():
    rng = random.Random(0)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "S-PER"]
    gold = [[rng.choice(tags) for _ in range(rng.randint(1, 30))] for _ in range(200)]
    pred = [[t if rng.random() < 0.8 else rng.choice(tags) for t in seq] for seq in gold]
    spans = lambda seqs: [[(t, s, e + 1) for t, s, e in get_entities(seq)] for seq in seqs]  # noqa: E731
    m = span_metrics(spans(gold), spans(pred))
    assert m["f1"] == pytest.approx(f1_score(gold, pred)) and 0.3 < m["f1"] < 0.95
    assert m["precision"] == pytest.approx(precision_score(gold, pred))
    assert m["recall"] == pytest.approx(recall_score(gold, pred))
    assert set(m["per_type"]) == {"PER", "LOC"} and "micro avg" in m["report"]


def test_a_span_two_windows_see_is_kept_once_and_judged_by_the_more_central():
    windows = [(0, 10), (6, 16), (12, 20)]
    per_window = [[(0, 8, 9), (1, 1, 3)],  # doc 8..10 at window 0's cut edge; doc 1..4 only window 0 holds
                  [(0, 2, 3)],  # doc 8..10 again, two characters from window 1's cut edges
                  [(0, 0, 2)]]  # doc 12..15: window 1 holds it too, more centrally, and did not predict it
    assert merge_window_spans(20, windows, per_window) == [(0, 8, 10), (1, 1, 4)]
    assert merge_window_spans(20, windows, [[(0, 8, 9)], [], []]) == []  # the more central window said no


# -- end to end: nested entities ------------------------------------------------------------------------
def entity(text: str, surface: str, type_: str) -> dict:
    start = text.index(surface)
    return {"start": start, "end": start + len(surface), "type": type_}


def nested_rows() -> list[dict]:
    """Organisations that contain a place (北京公司 ORG holding 北京 LOC), and the places on their own."""
    rows = []
    for person in ("张三", "李四"):
        for city in ("北京", "上海"):
            text = f"{person}在{city}公司"
            rows.append({"text": text, "entities": [entity(text, person, "PER"), entity(text, city + "公司", "ORG"),
                                                    entity(text, city, "LOC")]})
            text = f"{person}去{city}。"
            rows.append({"text": text, "entities": [entity(text, person, "PER"), entity(text, city, "LOC")]})
    return rows


def expected(rows):
    return [sorted((e["type"], e["start"], e["end"]) for e in r["entities"]) for r in rows]


@pytest.fixture(scope="module")
def nested(tmp_path_factory):
    d = tmp_path_factory.mktemp("nested")
    rows = nested_rows()
    long_text = "".join(r["text"] for r in rows)  # ~55 characters: over one 24-token window
    offsets = [sum(len(r["text"]) for r in rows[:i]) for i in range(len(rows))]
    long_row = {"text": long_text, "entities": [{**e, "start": e["start"] + o, "end": e["end"] + o}
                                                for r, o in zip(rows, offsets) for e in r["entities"]]}
    return {"train": write(d / "train.json", rows * 4 + [long_row] * 4), "dev": write(d / "dev.json", rows + [long_row]),
            "rows": rows, "long": long_row}


def gp_args(tiny_bert, files, out, *extra):
    return ["--pretrained_model_name_or_path", tiny_bert, "--train_data_file", files["train"],
            "--dev_data_file", files["dev"], "--saved_dir", str(out), "--batch_size", "8", "--learning_rate", "5e-3",
            "--max_seq_length", "24", "--doc_stride", "8", "--logging_steps", "50", "--save_steps", "0",
            "--seed", "1", "--gp_head_size", "16", *extra]


@pytest.fixture(scope="module")
def trained(tiny_bert, nested, tmp_path_factory):
    out = tmp_path_factory.mktemp("gp")
    results = run_ner.main(gp_args(tiny_bert, nested, out, "--head", "global_pointer", "--max_steps", "150"))
    return str(out), results


def test_nested_entities_a_tagger_cannot_express_are_all_found(trained, nested):
    out, results = trained
    gold = expected(nested["rows"])
    assert any(a[1] < b[2] and b[1] < a[2] for g in gold for a in g for b in g if a != b)  # overlapping spans
    assert results["best_f1"] == 1.0
    predictor = Predictor.from_pretrained(out)
    assert isinstance(predictor, SpanPredictor) and predictor.labels == ["LOC", "ORG", "PER"]  # from the data
    got = predictor.predict([r["text"] for r in nested["rows"]])
    assert [sorted((e["type"], e["start"], e["end"]) for e in r["entities"]) for r in got] == gold
    first = got[0]
    assert [(e["type"], e["text"]) for e in first["entities"]] == [("PER", "张三"), ("ORG", "北京公司"), ("LOC", "北京")]


def test_saved_dir_records_the_head_and_long_texts_are_windowed(trained, nested, tmp_path):
    out, _ = trained
    info = read_task_info(out)
    assert info["head"] == "global_pointer" and info["use_crf"] is False and info["max_seq_length"] == 24
    predictor = Predictor.from_pretrained(out)
    long_row = nested["long"]
    [got] = predictor.predict([long_row["text"]])
    assert sorted((e["type"], e["start"], e["end"]) for e in got["entities"]) == expected([long_row])[0]
    assert all(long_row["text"][e["start"]:e["end"]] == e["text"] for e in got["entities"])
    lines = tmp_path / "in.txt"
    lines.write_text("张三在北京公司\n\n" + json.dumps({"text": "李四去上海。"}, ensure_ascii=False) + "\n",
                     encoding="utf-8")
    predictor.predict_file(str(lines), str(tmp_path / "out.json"))
    answers = [json.loads(x) for x in (tmp_path / "out.json").read_text(encoding="utf-8").splitlines()]
    assert [len(a["entities"]) for a in answers] == [3, 0, 2] and "tags" not in answers[0]


def test_evaluation_only_needs_no_label_file(trained, nested, tmp_path):
    out, results = trained
    again = run_ner.main(["--pretrained_model_name_or_path", out, "--dev_data_file", nested["dev"], "--no-do_train",
                          "--saved_dir", str(tmp_path / "eval"), "--max_seq_length", "24",
                          "--doc_stride", "8"])
    assert again["final_f1"] == results["best_f1"] == 1.0


def test_onnx_graph_outputs_span_scores_with_parity(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    from bertorch.onnx import check_parity, export_model

    out, _ = trained
    path = export_model(out, str(tmp_path / "onnx"))
    report = check_parity(out, path)
    assert report.ok and report.max_abs_diff < 1e-3, report.table()
    texts = ["张三在北京公司", "李四去上海。" * 9]  # the second over one window
    assert Predictor.from_pretrained(path, backend="onnx").predict(texts) == Predictor.from_pretrained(out).predict(texts)


def test_efficient_head_trains_and_bio_files_convert(tiny_bert, tmp_path):
    from test_ner import LABELS, SENTENCES, line

    (tmp_path / "train.json").write_text("\n".join(line(s) for s in SENTENCES * 4) + "\n", encoding="utf-8")
    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    files = {"train": str(tmp_path / "train.json"), "dev": str(tmp_path / "train.json")}
    results = run_ner.main(gp_args(tiny_bert, files, tmp_path / "out", "--head", "efficient_global_pointer",
                                   "--label_file", str(tmp_path / "labels.txt"), "--max_steps", "60"))
    assert results["final_f1"] > 0.5
    predictor = Predictor.from_pretrained(str(tmp_path / "out"))
    assert predictor.labels == ["PER", "LOC", "ORG"] and predictor.head == "efficient_global_pointer"


@pytest.mark.parametrize("extra, message", [
    (["--use_crf", "--head", "global_pointer"], "--use_crf is --head crf: it cannot go with --head global_pointer"),
    (["--use_crf", "--head", "linear"], "cannot go with --head linear"),
    (["--head", "global_pointer", "--gp_head_size", "7"], "--gp_head_size must be an even number"),
])
def test_conflicting_head_flags_are_one_error(tiny_bert, nested, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit):
        run_ner.main(gp_args(tiny_bert, nested, tmp_path, *extra))
    assert message in capsys.readouterr().err


def test_head_crf_is_use_crf(tiny_bert, tmp_path):
    from test_ner import LABELS, SENTENCES, line

    (tmp_path / "train.json").write_text("\n".join(line(s) for s in SENTENCES) + "\n", encoding="utf-8")
    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    files = {"train": str(tmp_path / "train.json"), "dev": str(tmp_path / "train.json")}
    run_ner.main(gp_args(tiny_bert, files, tmp_path / "out", "--head", "crf", "--label_file",
                         str(tmp_path / "labels.txt"), "--max_steps", "2"))
    info = read_task_info(str(tmp_path / "out"))
    assert info["use_crf"] is True and info["head"] == "crf"
    assert Predictor.from_pretrained(str(tmp_path / "out")).crf is not None


def test_ner_endpoint_answers_with_the_span_predictor(trained):
    from test_serve import serve

    out, _ = trained
    texts = ["张三在北京公司", "李四去上海。" * 9]

    async def body(client, app):
        return await client.post("/ner", json={"inputs": texts}), await client.get("/info")

    answer, info = serve(out, body, max_wait_ms=1)
    assert answer.status_code == 200
    assert answer.json()["predictions"] == json.loads(json.dumps(Predictor.from_pretrained(out).predict(texts),
                                                                 ensure_ascii=False))
    model = info.json()["models"][0]
    assert model["head"] == "global_pointer" and model["labels"] == ["LOC", "ORG", "PER"]


def test_a_span_model_loads_as_a_distillation_teacher_with_its_saved_head(trained):
    from bertorch.distill.distiller import load_teacher
    from bertorch.models.global_pointer import SpanNer

    teacher, info = load_teacher(trained[0])  # its students: tests/test_span_distill.py
    assert isinstance(teacher, SpanNer) and not teacher.training and info["head"] == "global_pointer"
    assert not any(p.requires_grad for p in teacher.parameters())


def test_resume_and_two_gloo_processes_match_one_uninterrupted_process(tiny_bert, nested, tmp_path):
    import subprocess
    import sys

    from safetensors.torch import load_file

    # 32 short examples = 4 full global batches of 8, so 2 x 4 averages exactly like 1 x 8
    files = {"train": write(tmp_path / "train.json", nested["rows"] * 4), "dev": nested["dev"]}
    common = ["--head", "global_pointer", "--max_steps", "4", "--no_cuda"]
    one = run_ner.main(gp_args(tiny_bert, files, tmp_path / "one", *common, "--save_steps", "2"))
    run_ner.main(gp_args(tiny_bert, files, tmp_path / "resumed", *common, "--resume_from_checkpoint",
                         str(tmp_path / "one" / "checkpoint-2")))
    for name in ("model.safetensors", "head.safetensors"):
        a, b = load_file(str(tmp_path / "one" / name)), load_file(str(tmp_path / "resumed" / name))
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), name
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.path.dirname(run_ner.__file__)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", run_ner.__file__,
           *gp_args(tiny_bert, files, tmp_path / "two", *common, "--batch_size", "4")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "all_results.json").read_text())
    for key in ("final_f1", "final_precision", "final_recall", "final_loss"):
        assert two[key] == pytest.approx(one[key], abs=1e-4), key
