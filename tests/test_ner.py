"""Sequence labelling: per-character alignment, windows, spans, scoring, bad input, end-to-end, resume."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from loguru import logger
from safetensors.torch import load_file
from torchcrf import CRF
from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

import run_ner
from bertorch.cli import build_parser
from bertorch.data.tagged import encode_documents, read_tagged
from bertorch.losses.classification import build_loss
from bertorch.metrics import sequence_metrics
from bertorch.model_dir import TASK_FILE, read_task_info
from bertorch.models.tagger import Tagger
from bertorch.predict import Predictor
from bertorch.predictors.tagger import TaggerPredictor
from bertorch.tagging import count_illegal_transitions, make_windows, transition_constraints
from bertorch.tasks.ner import NerTask

LABELS = ["O", "B-PER", "I-PER", "S-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]  # BIOS, as msra/resume
SENTENCES = [  # (surface, type): one character -> S-, longer -> B- I-...
    [("张三", "PER"), ("去", None), ("北京", "LOC"), ("，", None), ("李四", "PER"), ("去", None), ("上海", "LOC")],
    [("李四", "PER"), ("在", None), ("上海公司", "ORG"), ("。", None)],
    [("张", "PER"), (" ", None), ("和", None), ("李四", "PER"), ("在", None), ("北京", "LOC"), ("１２３", None)],
    [("ABC公司", "ORG"), ("很好", None), ("😀", None)],
    [("上海", "LOC"), ("的", None), ("张三", "PER"), ("！", None)],
]
MIXED = "张三 在北京１２３ABc😀龘\u200b\t李四，上海公司。"  # spaces, zero-width, tab, emoji, rare, full-width


def tags_of(parts):
    tags = []
    for surface, kind in parts:
        if kind is None:
            tags += ["O"] * len(surface)
        elif len(surface) == 1:
            tags.append(f"S-{kind}")
        else:
            tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(surface) - 1)
    return tags


def line(parts):
    return json.dumps({"text": list("".join(s for s, _ in parts)), "label": tags_of(parts)}, ensure_ascii=False)


@pytest.fixture(scope="module")
def ner_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ner")
    long_doc = [p for _ in range(3) for s in SENTENCES for p in s]  # ~100 chars: split into windows
    (d / "train.json").write_text("\n".join(line(s) for s in SENTENCES * 6 + [long_doc]) + "\n", encoding="utf-8")
    (d / "dev.json").write_text("\n".join(line(s) for s in SENTENCES + [long_doc]) + "\n", encoding="utf-8")
    (d / "labels.txt").write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    return {k: str(d / f) for k, f in (("train", "train.json"), ("dev", "dev.json"), ("labels", "labels.txt"))}


def ner_args(tiny_bert, files, out, *extra):
    return ["--pretrained_model_name_or_path", tiny_bert, "--train_data_file", files["train"],
            "--dev_data_file", files["dev"], "--label_file", files["labels"], "--saved_dir", str(out),
            "--batch_size", "8", "--max_steps", "30", "--learning_rate", "5e-3", "--max_seq_length", "24",
            "--doc_stride", "6", "--logging_steps", "10", "--save_steps", "0", "--seed", "1", *extra]


@pytest.fixture(scope="module")
def trained(tiny_bert, ner_files, tmp_path_factory):
    """Run run_ner.main once per head and keep (saved dir, results)."""
    runs = {}

    def get(head: str):
        if head not in runs:
            out = tmp_path_factory.mktemp(f"ner_{head}")
            extra = ["--use_crf"] if head == "crf" else []
            runs[head] = (str(out), run_ner.main(ner_args(tiny_bert, ner_files, out, *extra)))
        return runs[head]
    return get


def reference_tags(model_dir: str, texts: list[str], use_crf: bool, decoding: str = "constrained") -> list[list[str]]:
    """The model itself (Tagger + load_weights), torch CRF decode, argmax or constrained, on single-window texts."""
    config = AutoConfig.from_pretrained(model_dir)
    model = Tagger.from_pretrained(model_dir, config, build_loss("cross_entropy", len(LABELS)), use_crf)
    model.load_weights(model_dir, strict=True)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    features = encode_documents(tokenizer, [list(t) for t in texts], 512, 32)
    task = NerTask(build_parser(NerTask, None).parse_args(["--train_data_file", "-", "--label_file", "-"]), None)
    task.tokenizer = tokenizer
    batch = task.collate(features)
    with torch.no_grad():
        out = model(**batch)
    if use_crf:
        ids = model.crf.crf.decode(out.logits.float(), mask=batch["char_mask"].bool())  # pytorch-crf's Viterbi
    elif decoding == "constrained":  # pytorch-crf's Viterbi over log-probabilities, the scheme's rules as transitions
        rules = CRF(len(LABELS), batch_first=True)
        for param, scores in zip((rules.start_transitions, rules.end_transitions, rules.transitions),
                                 transition_constraints(LABELS, "bios")):
            param.data = torch.from_numpy(scores)
        ids = rules.decode(out.logits.float().log_softmax(-1), mask=batch["char_mask"].bool())
    else:
        ids = [row[:n] for row, n in zip(out.logits.argmax(-1).tolist(), batch["char_mask"].sum(1).tolist())]
    return [[config.id2label[i] for i in row] for row in ids]


# -- alignment and windows ------------------------------------------------------------------------------
def test_every_character_gets_its_own_token_even_if_the_tokenizer_drops_it(tiny_bert):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    chars = list(MIXED)
    [feature] = encode_documents(tokenizer, [chars], 128, 8)
    assert len(feature["char_index"]) == len(chars)
    assert feature["char_index"] == sorted(set(feature["char_index"]))  # one token each, in order
    assert feature["input_ids"][0] == tokenizer.cls_token_id and feature["input_ids"][-1] == tokenizer.sep_token_id
    got = [feature["input_ids"][i] for i in feature["char_index"]]
    unk = tokenizer.unk_token_id
    for ch, token in zip(chars, got):
        expected = tokenizer.convert_tokens_to_ids(ch.lower())
        assert token == (expected if expected != unk and not ch.isspace() else unk), ch


def test_windows_respect_a_token_budget_when_characters_split():
    assert make_windows(6, 4, 1, sizes=[1, 3, 1, 1, 2, 1]) == [(0, 2), (1, 3), (2, 5), (4, 6)]
    assert make_windows(6, 2, 1, sizes=[3, 1, 1, 1, 1, 1])[0] == (0, 1)  # lone over-budget char
    assert make_windows(3000, 126, 32, sizes=[1] * 3000) == make_windows(3000, 126, 32)


def test_long_document_windows_cover_every_character_with_the_right_tokens(tiny_bert):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    doc = list((MIXED * 200)[:3000])
    whole = encode_documents(tokenizer, [doc], 10 ** 5, 0)[0]
    windows = encode_documents(tokenizer, [doc], 34, 8)
    assert len(windows) > 90 and all(len(f["input_ids"]) <= 34 for f in windows)
    covered = np.zeros(len(doc), dtype=int)
    for f in windows:
        n = len(f["char_index"])
        covered[f["start"]:f["start"] + n] += 1
        got = [f["input_ids"][i] for i in f["char_index"]]
        assert got == [whole["input_ids"][i] for i in whole["char_index"][f["start"]:f["start"] + n]]
    assert covered.min() >= 1


# -- scoring --------------------------------------------------------------------------------------------
def test_bios_scoring_ends_entities_on_i_and_counts_s():
    gold = [["B-PER", "I-PER", "O", "S-LOC"], ["S-PER", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["S-PER", "B-LOC"]]
    m = sequence_metrics(gold, pred, "bios")
    assert (m["precision"], m["recall"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert "PER" in m["report"] and "LOC" in m["report"]


def test_bmes_scoring_treats_m_as_inside_and_reports_words():
    gold = [["B", "M", "E", "S", "B", "E"]]
    assert sequence_metrics(gold, gold, "bmes")["f1"] == 1.0
    m = sequence_metrics(gold, [["B", "E", "B", "E", "B", "E"]], "bmes")  # words: 2 of 3 gold, 3 predicted
    assert m["word_precision"] == pytest.approx(1 / 3) and m["word_recall"] == pytest.approx(1 / 3)
    assert m["f1"] == pytest.approx(m["word_f1"])


# -- end to end -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("head", ["linear", "crf"])
def test_end_to_end_saved_dir_and_predictor_match_the_model(trained, head):
    out, results = trained(head)
    assert results["global_step"] == 30 and results["best_f1"] > 0.3, results
    model, info = AutoModelForTokenClassification.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and model.config.id2label[3] == "S-PER"
    assert os.path.isfile(os.path.join(out, "head.safetensors")) == (head == "crf")
    texts = ["".join(s for s, _ in parts) for parts in SENTENCES] + [MIXED, "龘"]
    predictor = Predictor.from_pretrained(out)
    assert isinstance(predictor, TaggerPredictor) and (predictor.crf is not None) == (head == "crf")
    got = predictor.predict(texts, batch_size=3)
    assert [r["tags"] for r in got] == reference_tags(out, texts, head == "crf")
    assert got[0]["text"] == texts[0] and predictor.predict([]) == [] and predictor.predict([""])[0]["tags"] == []


@pytest.mark.parametrize("head", ["linear", "crf"])
def test_3000_character_document_gets_3000_tags_and_exact_spans(trained, head):
    out, _ = trained(head)
    text = (MIXED * 200)[:3000]
    [result] = Predictor.from_pretrained(out).predict([text])
    assert len(result["tags"]) == 3000
    assert result["entities"], "a trained model should find some entities"
    for e in result["entities"]:
        assert e["text"] == text[e["start"]:e["end"]]


def test_span_extraction_with_spaces_digits_english_emoji_rare_chars(trained):
    predictor = Predictor.from_pretrained(trained("linear")[0])
    text = "张 三在ＡＢＣ😀龘公司１２"
    tags = ["B-PER", "I-PER", "I-PER", "O", "B-ORG", "I-ORG", "I-ORG", "I-ORG", "I-ORG", "I-ORG", "I-ORG", "S-PER",
            "S-LOC"]
    entities = predictor.result(text, list(text), tags)["entities"]
    assert [(e["type"], e["text"]) for e in entities] == [("PER", "张 三"), ("ORG", "ＡＢＣ😀龘公司"), ("PER", "１"),
                                                          ("LOC", "２")]
    assert all(e["text"] == text[e["start"]:e["end"]] for e in entities)


def test_predict_file_raw_and_json_lines(trained, tmp_path):
    predictor = Predictor.from_pretrained(trained("crf")[0])
    src, dst = tmp_path / "in.txt", tmp_path / "out.jsonl"
    src.write_text("张三去北京\n" + json.dumps({"text": list("李四 在上海"), "label": ["O"] * 6}) + "\n", encoding="utf-8")
    assert predictor.predict_file(str(src), str(dst)) == 2
    rows = [json.loads(x) for x in dst.read_text(encoding="utf-8").splitlines()]
    assert rows[0]["text"] == "张三去北京" and len(rows[1]["tags"]) == 6
    with pytest.raises(ValueError, match="no model.onnx"):  # not exported yet: says how to export
        Predictor.from_pretrained(trained("crf")[0], backend="onnx")


def test_bmes_segmentation_end_to_end(tiny_bert, tmp_path):
    words = [["张三", "去", "北京"], ["李四", "在", "上海", "公司"], ["很", "好"]]
    rows = [{"text": list("".join(ws)), "label": [t for w in ws for t in (["S"] if len(w) == 1 else
             ["B"] + ["M"] * (len(w) - 2) + ["E"])]} for ws in words]
    (tmp_path / "d.json").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows * 4), encoding="utf-8")
    (tmp_path / "labels.txt").write_text("B\nM\nE\nS\n", encoding="utf-8")
    files = {"train": str(tmp_path / "d.json"), "dev": str(tmp_path / "d.json"), "labels": str(tmp_path / "labels.txt")}
    results = run_ner.main(ner_args(tiny_bert, files, tmp_path / "out", "--max_steps", "3"))
    assert "final_word_f1" in results
    [r] = Predictor.from_pretrained(str(tmp_path / "out")).predict(["张三去北京"])
    assert "".join(r["words"]) == "张三去北京" and len(r["tags"]) == 5


def test_linear_head_decodes_legal_sequences_by_default_and_argmax_on_request(trained, tiny_bert, ner_files,
                                                                                tmp_path):
    out, results = trained("linear")
    assert read_task_info(out)["decoding"] == "constrained" and read_task_info(trained("crf")[0])["decoding"] == "crf"
    texts = ["".join(s for s, _ in parts) for parts in SENTENCES] + [MIXED * 3]
    constrained = [r["tags"] for r in Predictor.from_pretrained(out).predict(texts)]
    assert not any(count_illegal_transitions(tags) for tags in constrained)
    # the same weights scored per character: what --decoding argmax evaluates, and predicts from its directory
    argmax = reference_tags(out, texts[:-1], use_crf=False, decoding="argmax")
    argmax_run = tmp_path / "argmax"
    run_ner.main(ner_args(tiny_bert, ner_files, argmax_run, "--decoding", "argmax", "--max_steps", "2"))
    assert read_task_info(str(argmax_run))["decoding"] == "argmax"
    predictor = Predictor.from_pretrained(str(argmax_run))
    assert predictor.constraints is None
    assert [r["tags"] for r in predictor.predict(texts[:-1])] == reference_tags(str(argmax_run), texts[:-1], False,
                                                                                "argmax")
    for legal, per_character in zip(constrained, argmax):  # a legal argmax is the most probable legal sequence
        assert (legal == per_character) == (not count_illegal_transitions(per_character))


@pytest.mark.parametrize("decoding, f1", [(None, 1.0), ("argmax", 0.4)])
def test_dev_scores_decode_as_the_flag_says(decoding, f1):
    """B-PER O I-PER from the scores: per character two entities, neither gold (F1 0.4 with the S-PER); constrained the gold one."""
    argv = ["--train_data_file", "-", "--label_file", "-"] + (["--decoding", decoding] if decoding else [])
    task = NerTask(build_parser(NerTask, None).parse_args(argv), None)
    task.labels, task.scheme = LABELS, "bios"
    task.eval_features, task.dev_tags = [{"doc": 0, "start": 0}, {"doc": 1, "start": 0}], [["B-PER", "I-PER", "I-PER"],
                                                                                         ["S-PER"]]
    probs = {"B-PER": [0.8, 0.1, 0.1], "I-PER": [0.1, 0.4, 0.8], "O": [0.1, 0.5, 0.1]}
    split = np.log([[probs.get(label, [1e-3] * 3)[t] for label in LABELS] for t in range(3)])
    single = np.log([[0.9 if label == "S-PER" else 0.01 for label in LABELS]])
    metrics = task.compute_metrics([split, single], model=types.SimpleNamespace(crf_arrays=lambda: None))
    assert metrics["f1"] == pytest.approx(f1, abs=1e-4)


def test_directory_without_a_decoding_entry_predicts_argmax_as_before(trained, tmp_path):
    """A tagger saved before --decoding was scored per character; its predictions do not change under it."""
    out = shutil.copytree(trained("linear")[0], tmp_path / "old")
    info = json.loads((out / TASK_FILE).read_text())
    del info["decoding"]
    (out / TASK_FILE).write_text(json.dumps(info))
    predictor = Predictor.from_pretrained(str(out))
    texts = ["".join(s for s, _ in parts) for parts in SENTENCES]
    assert predictor.constraints is None
    assert [r["tags"] for r in predictor.predict(texts)] == reference_tags(str(out), texts, False, "argmax")


@pytest.mark.parametrize("head", [["--use_crf"], ["--head", "global_pointer"]])
def test_decoding_flag_is_refused_where_a_head_decodes_its_own_way(tiny_bert, ner_files, tmp_path, head, capsys):
    with pytest.raises(SystemExit):
        run_ner.main(ner_args(tiny_bert, ner_files, tmp_path / "out", "--decoding", "argmax", *head))
    assert "--decoding argmax is for the Linear head" in capsys.readouterr().err


def test_crf_learning_rate_defaults_to_ten_times(tiny_bert, ner_files, tmp_path):
    parser = build_parser(NerTask, None)
    base = ner_args(tiny_bert, ner_files, tmp_path, "--use_crf")
    assert NerTask(parser.parse_args(base), None).lr_overrides() == {"crf.": pytest.approx(5e-2)}
    args = parser.parse_args(base + ["--crf_learning_rate", "5e-5"])
    assert NerTask(args, None).lr_overrides() == {"crf.": 5e-5}


# -- bad input ------------------------------------------------------------------------------------------
GOOD = json.dumps({"text": ["张", "三"], "label": ["B-PER", "I-PER"]}, ensure_ascii=False)


@pytest.mark.parametrize("bad, message", [
    ('{"text": ["张", "三"], "label": ["B-PER"]}', "train.json:2: 2 characters but 1 labels"),
    ('{"text": ["张", "三"], "label": ["B-PER", "I-XXX"]}', "train.json:2: tag at position 1 not in the label file: 'I-XXX'"),
    ('{"text": ["张", "三"], "label": [', "train.json:2: invalid JSON"),
    ('{"text": ["张", "三"]}', 'train.json:2: missing key "label"'),
    ('{"text": [], "label": []}', "train.json:2: empty text"),
])
def test_bad_lines_name_file_and_line(tiny_bert, ner_files, tmp_path, bad, message):
    (tmp_path / "train.json").write_text(GOOD + "\n" + bad + "\n", encoding="utf-8")
    files = {**ner_files, "train": str(tmp_path / "train.json")}
    with pytest.raises(SystemExit, match=message.replace("[", r"\[")):
        run_ner.main(ner_args(tiny_bert, files, tmp_path / "out"))


def test_bio_flag_with_s_tags_names_the_label_line(tiny_bert, ner_files, tmp_path):
    with pytest.raises(SystemExit, match=r"labels.txt:4: .*'S-PER'"):
        run_ner.main(ner_args(tiny_bert, ner_files, tmp_path / "out", "--tag", "bio"))


def test_i_after_o_is_a_warning_with_count_and_examples(tmp_path):
    rows = [{"text": list("张三去"), "label": ["O", "I-PER", "O"]}, {"text": list("李四"), "label": ["I-PER", "I-PER"]}]
    (tmp_path / "t.json").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    messages = []
    sink = logger.add(messages.append, level="WARNING")
    try:
        examples = read_tagged(str(tmp_path / "t.json"), LABELS)
    finally:
        logger.remove(sink)
    assert len(examples) == 2 and len(messages) == 1
    assert "2 continuation tags" in messages[0] and "t.json:1:" in messages[0] and "[三]" in messages[0]


# -- resume and distributed -----------------------------------------------------------------------------
def test_resume_gives_the_weights_of_an_uninterrupted_run(tiny_bert, ner_files, tmp_path):
    common = ["--max_steps", "4", "--save_steps", "2", "--use_crf", "--batch_size", "4"]
    run_ner.main(ner_args(tiny_bert, ner_files, tmp_path / "full", *common))
    run_ner.main(ner_args(tiny_bert, ner_files, tmp_path / "resumed", *common,
                          "--resume_from_checkpoint", str(tmp_path / "full" / "checkpoint-2")))
    for name in ("model.safetensors", "head.safetensors"):
        a, b = load_file(str(tmp_path / "full" / name)), load_file(str(tmp_path / "resumed" / name))
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), name


def test_two_gloo_processes_give_the_metrics_of_one(tiny_bert, ner_files, tmp_path):
    # 40 examples = 5 full global batches of 8, so 2 x 4 averages exactly like 1 x 8 (CRF: mean per sequence).
    (tmp_path / "train.json").write_text("\n".join(line(s) for s in SENTENCES * 8), encoding="utf-8")
    ner_files = {**ner_files, "train": str(tmp_path / "train.json")}
    common = ["--max_steps", "3", "--batch_size", "4", "--use_crf", "--no_cuda"]
    one = run_ner.main(ner_args(tiny_bert, ner_files, tmp_path / "one", *common, "--batch_size", "8"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.path.dirname(run_ner.__file__)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           run_ner.__file__, *ner_args(tiny_bert, ner_files, tmp_path / "two", *common)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "all_results.json").read_text())
    for key in ("final_f1", "final_precision", "final_recall", "final_loss"):
        assert two[key] == pytest.approx(one[key], abs=1e-4), key
