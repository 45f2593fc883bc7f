"""The README's results section, its tables and results/summary.png come from the same result files: the
section is what scripts/update_readme.py builds from results/*.md, each table is scripts/results.py's rendering
of its results/*.json, and the figure carries the sha256 of the JSON files it was drawn from."""
import argparse
import importlib.util
import json
import os
import shutil
import struct

import pytest

from conftest import ROOT

RESULTS = os.path.join(ROOT, "results")


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def png_text(path: str) -> dict[str, str]:
    """The tEXt chunks of a PNG (key -> value)."""
    data, out, pos = open(path, "rb").read(), {}, 8
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        if kind == b"tEXt":
            key, _, value = data[pos + 8:pos + 8 + length].partition(b"\0")
            out[key.decode("latin-1")] = value.decode("latin-1")
        pos += 12 + length
    return out


def test_the_readme_results_section_is_built_from_the_result_tables():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text.split("<!-- results:start -->\n", 1)[1].split("<!-- results:end -->", 1)[0]
    assert section == script("update_readme").build_section()


@pytest.mark.parametrize("name", script("update_readme").ORDER)
def test_each_table_is_the_rendering_of_its_json(name, tmp_path, monkeypatch):
    if not os.path.exists(os.path.join(RESULTS, f"{name}.json")):
        pytest.skip(f"results/{name}.json has not been produced")
    results = script("results")
    shutil.copy(os.path.join(RESULTS, f"{name}.json"), tmp_path)
    monkeypatch.setattr(results, "RESULTS_DIR", str(tmp_path))
    rendered = results.render(type("Args", (), {"name": name}))
    assert rendered == open(os.path.join(RESULTS, f"{name}.md"), encoding="utf-8").read()


def test_the_figure_was_drawn_from_the_current_result_files():
    plot = script("plot_results")
    recorded = png_text(os.path.join(RESULTS, "summary.png")).get("Source")
    assert recorded, "results/summary.png does not say what it was drawn from: run scripts/plot_results.py"
    assert set(json.loads(recorded)) == set(plot.SOURCES)  # both panels drawn
    assert recorded == plot.source_digests(), ("results/summary.png was drawn from other result files than the "
                                               "tables: run scripts/plot_results.py")


def test_the_dev_curves_were_drawn_from_the_current_tables():
    plot = script("plot_results")
    recorded = png_text(os.path.join(RESULTS, "dev_curves.png")).get("Source")
    assert recorded == plot.source_digests(RESULTS, plot.CURVE_SOURCES), (
        "results/dev_curves.png was drawn from other result files than the tables: run scripts/plot_results.py")


def test_a_row_keeps_the_dev_curve_of_its_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"kind": "train", "step": 5, "loss": 1.0}, {"kind": "eval", "step": 10, "word_f1": 0.512345, "f1": 0.1},
        {"kind": "eval", "step": 20, "word_f1": 0.7}]) + "\n")
    assert script("results").read_curve(str(run), "best_word_f1") == [[10, 0.5123], [20, 0.7]]


def test_a_changed_result_file_makes_the_figure_stale(tmp_path):
    plot = script("plot_results")
    for name in plot.SOURCES:
        shutil.copy(os.path.join(RESULTS, name), tmp_path)
    assert plot.source_digests(str(tmp_path)) == plot.source_digests()
    rows = json.load(open(tmp_path / "onnx.json", encoding="utf-8"))
    rows["rows"][2]["x torch"] += 0.01
    (tmp_path / "onnx.json").write_text(json.dumps(rows), encoding="utf-8")
    assert plot.source_digests(str(tmp_path)) != plot.source_digests()


def test_a_row_carries_the_recipe_and_command_of_its_run(tmp_path, monkeypatch):
    """Each row says how it was trained (epochs and lr shown; the flags and command line kept in the JSON);
    an evaluation-only run has no recipe of its own."""
    results = script("results")
    monkeypatch.setattr(results, "RESULTS_DIR", str(tmp_path))
    for name, do_train in (("trained", True), ("raw", False)):
        run = tmp_path / name
        run.mkdir()
        (run / "all_results.json").write_text(json.dumps({"global_step": 40 if do_train else 0, "train_seconds": 9.6,
                                                          "best_f1": 0.91234}))
        (run / "training_args.json").write_text(json.dumps({
            "do_train": do_train, "epochs": 10, "max_steps": -1, "learning_rate": 1e-4, "crf_learning_rate": 1e-2,
            "max_seq_length": 128, "script": "run_ner.py", "argv": ["--epochs", "10", "--use_crf"]}))
        results.main(["add", "t", "--run", str(run), "--set", f"dataset={name}", "--metric", "f1=best_f1"])
    trained, raw = json.load(open(tmp_path / "t.json"))["rows"]
    assert (trained["epochs"], trained["lr"], trained["steps"], trained["train time (s)"]) == (10, "1e-4", 40, 10)
    assert trained["_recipe"]["crf_learning_rate"] == 1e-2
    assert trained["_recipe"]["command"] == "run_ner.py --epochs 10 --use_crf"
    assert [raw[k] for k in ("epochs", "lr", "steps", "train time (s)")] == ["-"] * 4 and raw["f1"] == 0.9123
    table = results.render(argparse.Namespace(name="t"))
    assert "| trained | 0.9123 | 10 | 1e-4 | 40 | 10 |" in table and "| raw | 0.9123 | - | - | - | - |" in table and "_recipe" not in table


def test_rows_of_different_max_lengths_each_say_their_own(tmp_path, monkeypatch):
    """The header states one max length; a sweep over it must not print the last run's for every row."""
    results = script("results")
    monkeypatch.setattr(results, "RESULTS_DIR", str(tmp_path))
    for length in (128, 256):
        run = tmp_path / f"len{length}"
        run.mkdir()
        (run / "all_results.json").write_text(json.dumps({"global_step": 300, "train_seconds": 5.0, "best_acc": 0.9}))
        (run / "training_args.json").write_text(json.dumps({
            "epochs": 3, "max_steps": 300, "learning_rate": 1e-4, "batch_size": 32, "max_seq_length": length}))
        monkeypatch.setenv("MAX_SEQ_LENGTH", str(length))
        monkeypatch.setenv("BATCH_SIZE", "32")
        results.main(["add", "t", "--run", str(run), "--set", f"sweep=len {length}", "--metric", "acc=best_acc"])
        table = results.render(argparse.Namespace(name="t"))
    assert "batch 32, max length per row" in table
    assert "| sweep | acc | max length | epochs |" in table
    assert "| len 128 | 0.9000 | 128 | - |" in table and "| len 256 | 0.9000 | 256 | - |" in table
    assert "train batch" not in table  # the same for every row: the header says it


def test_a_row_rerun_under_bf16_says_so_beside_fp32_rows(tmp_path, monkeypatch):
    """A row trained under --bf16 beside fp32 rows gets a train dtype column; rows recorded before the dtype
    was kept read it from their command line; one dtype for all rows is said once in the header."""
    results = script("results")
    monkeypatch.setattr(results, "RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("BATCH_SIZE", "32")
    monkeypatch.setenv("MAX_SEQ_LENGTH", "128")
    for name, argv in (("old", ["--epochs", "3"]), ("new", ["--epochs", "3", "--bf16"])):
        run = tmp_path / name
        run.mkdir()
        (run / "all_results.json").write_text(json.dumps({"global_step": 9, "train_seconds": 5.0, "best_acc": 0.9}))
        (run / "training_args.json").write_text(json.dumps({
            "epochs": 3, "max_steps": -1, "learning_rate": 1e-4, "bf16": "--bf16" in argv, "argv": argv}))
        results.main(["add", "t", "--run", str(run), "--set", f"dataset={name}", "--metric", "acc=best_acc"])
        table = results.render(argparse.Namespace(name="t"))
        if name == "old":
            assert "train dtype" not in table and "trained in" not in table  # fp32 alone: the default, unsaid
    table_file = tmp_path / "t.json"
    saved = json.loads(table_file.read_text())
    saved["rows"][0]["_recipe"].pop("dtype")  # a row from before the dtype was recorded
    table_file.write_text(json.dumps(saved))
    table = results.render(argparse.Namespace(name="t"))
    assert "| dataset | acc | train dtype | epochs |" in table
    assert "| old | 0.9000 | fp32 | 3 |" in table and "| new | 0.9000 | bf16 | 3 |" in table
    results.main(["add", "t", "--run", str(tmp_path / "new"), "--set", "dataset=old", "--metric", "acc=best_acc"])
    table = results.render(argparse.Namespace(name="t"))  # both rows bf16 now
    assert "batch 32, max length 128, trained in bf16;" in table and "train dtype" not in table
    saved = json.loads(table_file.read_text())
    evaluation = {"command": "run_classifier.py --no-do_train"}
    saved["rows"].append({"dataset": "untrained", "acc": 0.5, "_recipe": evaluation})
    table_file.write_text(json.dumps(saved))
    table = results.render(argparse.Namespace(name="t"))  # an evaluation has no dtype: the bf16 rows say theirs
    assert "trained in" not in table and "| untrained | 0.5000 | - |" in table and "| new | 0.9000 | bf16 |" in table


def test_a_rescored_row_replaces_its_run_and_says_how_it_was_scored(tmp_path, monkeypatch):
    """--file metrics (an evaluation of the run's best model) win over the run's own; the row keeps the run's recipe,
    and a --value column describes the row without becoming part of its identity."""
    results = script("results")
    monkeypatch.setattr(results, "RESULTS_DIR", str(tmp_path))
    run, rescored = tmp_path / "run", tmp_path / "rescored"
    for d, f1 in ((run, 0.6), (rescored, 0.7)):
        d.mkdir()
        (d / "all_results.json").write_text(json.dumps({"global_step": 40 if d == run else 0, "train_seconds": 9.6,
                                                        "best_f1": f1}))
    (run / "training_args.json").write_text(json.dumps({"epochs": 4, "max_steps": -1, "learning_rate": 1e-4}))
    results.main(["add", "t", "--run", str(run), "--set", "dataset=weibo", "--metric", "f1=best_f1"])
    results.main(["add", "t", "--run", str(run), "--file", str(rescored / "all_results.json"), "--set",
                  "dataset=weibo", "--value", "decoding=constrained (rescored)", "--metric", "f1=best_f1"])
    [row] = json.load(open(tmp_path / "t.json"))["rows"]
    assert (row["f1"], row["decoding"], row["epochs"], row["lr"], row["steps"]) == (0.7, "constrained (rescored)", 4,
                                                                                    "1e-4", 40)
    assert "| weibo | constrained (rescored) | 0.7000 | 4 | 1e-4 | 40 | 10 |" in results.render(argparse.Namespace(name="t"))


def test_a_row_keeps_the_curve_it_names_not_only_its_first_metric(tmp_path, monkeypatch):
    """NER rows list precision first; their curve is F1's (what the figure's panel says it draws)."""
    results = script("results")
    monkeypatch.setattr(results, "RESULTS_DIR", str(tmp_path))
    run = tmp_path / "run"
    run.mkdir()
    (run / "all_results.json").write_text(json.dumps({"global_step": 20, "train_seconds": 3.0, "best_precision": 0.6,
                                                      "best_recall": 0.8, "best_f1": 0.7}))
    (run / "training_args.json").write_text(json.dumps({"do_train": True, "epochs": 1, "max_steps": -1,
                                                        "learning_rate": 1e-4, "argv": []}))
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"kind": "eval", "step": 10, "precision": 0.5, "f1": 0.55}, {"kind": "eval", "step": 20, "precision": 0.6,
                                                                    "f1": 0.7}]) + "\n")
    metrics = ["--metric", "precision=best_precision", "--metric", "f1=best_f1"]
    results.main(["add", "t", "--run", str(run), "--set", "dataset=a", *metrics, "--curve", "best_f1"])
    results.main(["add", "t", "--run", str(run), "--set", "dataset=b", *metrics])
    named, first = json.load(open(tmp_path / "t.json"))["rows"]
    assert named["_curve"] == [[10, 0.55], [20, 0.7]]
    assert first["_curve"] == [[10, 0.5], [20, 0.6]]
