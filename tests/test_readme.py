"""The README's examples on a fresh clone: every relative data path in its commands is found in the data the
repository ships, with no ../shared/data beside the checkout and from any working directory."""
import json
import os
import re
import shlex

import pytest

from bertorch.data import readers
from conftest import ROOT

README = os.path.join(ROOT, "README.md")
DATA_FLAGS = ("--train_data_file", "--dev_data_file", "--label_file", "--aux_data_file", "--dev_file")
SPEC_KEYS = ("train=", "dev=", "labels=")  # run_distill.py --task_spec name=... train=... dev=...


def bash_blocks(path: str = README) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", open(path, encoding="utf-8").read(), re.S)


def commands(path: str = README) -> list[list[str]]:
    """Each command of the README's bash blocks as words (continuations joined, comments dropped)."""
    out = []
    for block in bash_blocks(path):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                out.append(words)
    return out


def data_paths(path: str = README) -> list[str]:
    found = []
    for words in commands(path):
        for i, word in enumerate(words):
            if word in DATA_FLAGS and i + 1 < len(words):
                found.append(words[i + 1])
            found += [word.split("=", 1)[1] for key in SPEC_KEYS if word.startswith(key)]
    return found


def test_the_readme_names_data_files():
    paths = data_paths()
    assert {"chnsenticorp/train.tsv", "afqmc/train.txt", "ner/resume/labels.txt", "unsup/sentences.txt",
            "stsb/sts-b-dev.txt"} <= set(paths), paths


def test_every_readme_data_path_resolves_on_a_fresh_clone(tmp_path, monkeypatch):
    """No ../shared/data, no $BERTORCH_DATA_DIR, another working directory: only the shipped data/."""
    monkeypatch.setattr(readers, "SHARED_DATA_DIR", str(tmp_path / "no-shared"))
    monkeypatch.setattr(readers, "FETCHED_DATA_DIR", str(tmp_path / "nothing-fetched"))
    monkeypatch.delenv("BERTORCH_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    for path in data_paths():
        if path.startswith(("outputs/", "/", "~")):
            continue
        found = readers.resolve_path(path)
        assert os.path.isfile(found), path
        assert os.path.commonpath([found, os.path.join(ROOT, "data")]) == os.path.join(ROOT, "data"), found


SHIPPED = {  # file -> (reader, examples the data README documents)
    "chnsenticorp/train.tsv": ("classification", 8913), "afqmc/train.txt": ("pair", 34334),
    "afqmc/dev.txt": ("pair", 4316), "stsb/sts-b-train.txt": ("sts", 5191), "stsb/sts-b-dev.txt": ("sts", 1452),
    "ner/resume/train.json": ("tagged", 3814), "ner/resume/dev.json": ("tagged", 462),
    "ner/weibo/train.json": ("tagged", 1270), "ner/weibo/dev.json": ("tagged", 262),
    "unsup/sentences.txt": ("sentences", 20000),
}


@pytest.mark.parametrize("path", sorted(SHIPPED))
def test_the_shipped_sets_load_whole_with_the_readers(path):
    """Every shipped file loads with the reader its task uses (labels checked against its labels.txt),
    and holds every example the data README documents, not a stub."""
    from bertorch.data.sentence import read_sentences, read_sts
    from bertorch.data.tagged import read_tagged

    kind, count = SHIPPED[path]
    full = os.path.join(ROOT, "data", path)
    labels_file = os.path.join(os.path.dirname(full), "labels.txt")
    labels = readers.read_labels(labels_file) if os.path.exists(labels_file) else None
    examples = {"classification": lambda: readers.read_classification(full, labels, False),
                "pair": lambda: readers.read_classification(full, labels, True),
                "sts": lambda: read_sts(full), "tagged": lambda: read_tagged(full, labels),
                "sentences": lambda: read_sentences(full)}[kind]()
    assert len(examples) == count


def python_blocks(path: str = README) -> list[str]:
    return re.findall(r"```python\n(.*?)```", open(path, encoding="utf-8").read(), re.S)


def test_the_readme_python_examples_run_as_written(tiny_bert, tmp_path, monkeypatch):
    """The training example (with the tiny model in place of m3e-small: the only change), then the predicting
    example on the model it saved, from a fresh working directory."""
    import shutil

    train = next(b for b in python_blocks() if "bertorch.train(" in b)
    predict = next(b for b in python_blocks() if "Predictor.from_pretrained(" in b)
    assert "model = fetch_m3e_small()" in train
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(train.replace("model = fetch_m3e_small()", f"model = {tiny_bert!r}"), "README", "exec"), scope)
    assert scope["result"].model_dir == os.path.join("outputs/api-senti", "best")
    assert len(scope["ner"].predictor.predict(["李四去上海"])[0]["tags"]) == 5
    shutil.copytree("outputs/api-senti/best", "outputs/quickstart/best")
    scope = {}
    exec(compile(predict, "README", "exec"), scope)
    assert set(scope["predictor"].predict(["房间很干净，服务周到", "屏幕有坏点"])) <= {"positive", "negative"}
    # The ONNX section: its export command (dev file found in the shipped data/), then its Predictor block.
    import export_onnx

    (export,) = [words for words in commands() if words[:2] == ["python", "export_onnx.py"]]
    assert export_onnx.main(export[2:]) == 0
    report = json.load(open("outputs/quickstart-onnx/onnx_export.json", encoding="utf-8"))
    assert report["parity"]["ok"] and "int8" in report and report["int8"]["fp32_metrics"]
    scope = {}
    exec(compile(next(b for b in python_blocks() if 'backend="onnx"' in b), "README", "exec"), scope)
    torch_labels = scope["Predictor"].from_pretrained("outputs/quickstart/best").predict(["房间很干净，服务周到"])
    assert scope["onnx"].predict(["房间很干净，服务周到"]) == torch_labels
