"""Saving is atomic per directory: a process killed at any point of a save leaves the complete old or the complete
new model where a reader looks (best/, a checkpoint, the final model in --saved_dir beside its logs and
checkpoints), leftovers are removed at the next start, and what is saved has the user's umask.

Each crash is real: the save runs in a child process whose injected hook calls os._exit at the chosen point, so no
Python clean-up runs, as with kill -9 or a power cut."""
import json
import os
import shutil
import subprocess
import sys

import pytest

import run_classifier
from conftest import ROOT
from bertorch import atomic_dirs, model_dir
from bertorch.predict import Predictor

MODEL_NAMES = ("bertorch.json", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
TEXTS = ["这家酒店很好", "房间太小，隔音很差", "物流太慢"]


def train(model, files, out, *extra):
    return run_classifier.main(["--pretrained_model_name_or_path", model, "--train_data_file", files["train"],
                                "--label_file", files["labels"], "--saved_dir", str(out), "--max_steps", "2",
                                "--batch_size", "4", "--save_steps", "0", "--logging_steps", "0", *extra])


@pytest.fixture(scope="module")
def models(tiny_bert, sentiment_files, tmp_path_factory):
    """Two saved classifiers, old (2 labels) and new (3 labels, another seed): just their model files."""
    root = tmp_path_factory.mktemp("models")
    three = root / "labels3.txt"
    three.write_text("negative\nneutral\npositive\n", encoding="utf-8")
    found = {}
    for name, extra in (("old", ["--seed", "1"]), ("new", ["--seed", "2", "--label_file", str(three)])):
        train(tiny_bert, sentiment_files, root / f"{name}-run", *extra)
        (root / name).mkdir()
        for file in MODEL_NAMES:
            shutil.copy2(root / f"{name}-run" / file, root / name / file)
        found[name] = str(root / name)
    return found


def model_files(directory) -> dict[str, bytes]:
    paths = {n: os.path.join(directory, n) for n in (*MODEL_NAMES, "model.onnx")}
    return {n: open(p, "rb").read() for n, p in paths.items() if os.path.exists(p)}


def predictions(directory):
    return Predictor.from_pretrained(str(directory)).predict(TEXTS, return_probs=True)


def which_model(directory, models) -> str:
    """'old' or 'new' when `directory` holds exactly that model's files and loads as it; anything else fails."""
    found = model_files(directory)
    old = {**model_files(models["old"]), "model.onnx": b"an export of the old model"}
    if found == old:
        name = "old"
    else:
        assert found == model_files(models["new"]), sorted(found)
        name = "new"
    assert predictions(directory) == predictions(models[name])
    return name


def leftovers(*directories) -> list[str]:
    return [n for d in directories for n in os.listdir(d) if atomic_dirs.LEFTOVER.match(n)]


CRASH = r"""
import json, os, shutil, sys
sys.path.insert(0, {root!r})
from bertorch import atomic_dirs, model_dir

spec = json.loads(sys.argv[1])
calls = [0]

def crashing(real):
    def wrapper(*args, **kwargs):
        calls[0] += 1
        hit = calls[0] == spec["nth"]
        if hit and not spec["after"]:
            os._exit(3)
        result = real(*args, **kwargs)
        if hit:
            os._exit(3)
        return result
    return wrapper

if spec["no_exchange"]:  # as on a kernel or file system without RENAME_EXCHANGE
    atomic_dirs.exchange = lambda a, b: False
if spec["at"] == "exchange":
    atomic_dirs.exchange = crashing(atomic_dirs.exchange)
elif spec["at"] == "link":
    atomic_dirs.link_tree = crashing(atomic_dirs.link_tree)
elif spec["at"] == "rename":
    os.replace = crashing(os.replace)

def write(tmp):
    names = sorted(os.listdir(spec["source"]))
    for i, name in enumerate(names):
        if spec["at"] == "write" and i == len(names) // 2:
            os._exit(3)
        shutil.copy2(os.path.join(spec["source"], name), os.path.join(tmp, name))

save = model_dir.save_directory if spec["how"] == "directory" else model_dir.save_into
save(spec["target"], write)
""".format(root=ROOT)


def save_in_child(how, target, source, at=None, nth=1, after=False, no_exchange=False) -> int:
    spec = {"how": how, "target": str(target), "source": source, "at": at, "nth": nth, "after": after,
            "no_exchange": no_exchange}
    return subprocess.run([sys.executable, "-c", CRASH, json.dumps(spec)], capture_output=True, text=True,
                          timeout=120).returncode


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
def test_the_exchange_is_one_atomic_swap_here(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_text("a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "f").write_text("b")
    assert atomic_dirs.exchange(str(tmp_path / "a"), str(tmp_path / "b"))
    assert (tmp_path / "a" / "f").read_text() == "b" and (tmp_path / "b" / "f").read_text() == "a"


# (crash point, calls of it before the crash, crash after the call rather than before, no RENAME_EXCHANGE) -> model
BEST_CRASHES = {
    "while writing": (("write", 1, False, False), "old"),
    "before the exchange": (("exchange", 1, False, False), "old"),
    "after the exchange": (("exchange", 1, True, False), "new"),
    "fallback: between the two renames": (("rename", 1, True, True), "old"),  # put back by remove_leftovers
    "fallback: after both renames": (("rename", 2, True, True), "new"),
}


@pytest.mark.parametrize("point", list(BEST_CRASHES))
def test_a_crash_while_replacing_best_leaves_the_old_or_the_new_model(models, tmp_path, point):
    (at, nth, after, no_exchange), expected = BEST_CRASHES[point]
    best = tmp_path / "out" / "best"
    shutil.copytree(models["old"], best)
    (best / "model.onnx").write_bytes(b"an export of the old model")
    assert save_in_child("directory", best, models["new"], at, nth, after, no_exchange) == 3
    if point != "fallback: between the two renames":  # the one moment without best/, where there is no exchange
        assert which_model(best, models) == expected
    model_dir.remove_leftovers(str(tmp_path / "out"))
    assert which_model(best, models) == expected
    assert leftovers(tmp_path / "out") == []


SAVE_INTO_CRASHES = {
    "while writing": (("write", 1, False, False), "old"),
    "while linking logs and checkpoints": (("link", 3, False, False), "old"),
    "before the exchange": (("exchange", 1, False, False), "old"),
    "after the exchange": (("exchange", 1, True, False), "new"),
}


def run_dir_with_history(models, out):
    """An older run's --saved_dir: its model, an ONNX export of it, logs, a checkpoint, best/ and a symlink."""
    shutil.copytree(models["old"], out)
    (out / "model.onnx").write_bytes(b"an export of the old model")
    (out / "metrics.jsonl").write_text('{"kind": "train"}\n')
    shutil.copytree(models["old"], out / "checkpoint-2")
    shutil.copytree(models["old"], out / "best")
    (out / "runs").mkdir()
    (out / "runs" / "events").write_bytes(b"tensorboard")
    os.symlink("metrics.jsonl", out / "latest_metrics")


def assert_history_kept(out, models):
    assert (out / "metrics.jsonl").read_text() == '{"kind": "train"}\n'
    assert (out / "runs" / "events").read_bytes() == b"tensorboard"
    assert os.readlink(out / "latest_metrics") == "metrics.jsonl"
    for sub in ("checkpoint-2", "best"):
        assert model_files(out / sub) == model_files(models["old"])


@pytest.mark.parametrize("point", list(SAVE_INTO_CRASHES))
def test_a_crash_while_saving_the_final_model_leaves_the_old_or_the_new_one(models, tmp_path, point):
    (at, nth, after, no_exchange), expected = SAVE_INTO_CRASHES[point]
    out = tmp_path / "out"
    run_dir_with_history(models, out)
    assert save_in_child("into", out, models["new"], at, nth, after, no_exchange) == 3
    assert which_model(out, models) == expected
    assert_history_kept(out, models)
    model_dir.remove_leftovers(str(out))
    assert leftovers(out, tmp_path) == []
    assert which_model(out, models) == expected
    assert_history_kept(out, models)


def test_the_final_model_replaces_the_old_one_whole_and_keeps_the_rest(models, tmp_path):
    out = tmp_path / "out"
    run_dir_with_history(models, out)
    inode = os.stat(out / "checkpoint-2" / "model.safetensors").st_ino
    assert save_in_child("into", out, models["new"]) == 0
    assert which_model(out, models) == "new"  # and the old model.onnx is gone: it was a file of the old model
    assert_history_kept(out, models)
    assert os.stat(out / "checkpoint-2" / "model.safetensors").st_ino == inode  # linked, not copied
    assert leftovers(out, tmp_path) == []


def test_without_the_exchange_the_final_model_is_never_a_loadable_mix(models, tmp_path):
    """The fallback moves file by file, the old config.json out first: killed midway, transformers refuses the
    directory instead of loading new weights under the old config."""
    out = tmp_path / "out"
    run_dir_with_history(models, out)
    assert save_in_child("into", out, models["new"], "rename", 2, True, no_exchange=True) == 3
    assert not (out / "config.json").exists()
    with pytest.raises(Exception):
        Predictor.from_pretrained(str(out))
    assert save_in_child("into", out, models["new"], no_exchange=True) == 0
    assert model_files(out) == {**model_files(models["new"]), "model.onnx": b"an export of the old model"}


def test_leftovers_are_removed_when_the_next_run_starts(tiny_bert, sentiment_files, tmp_path):
    out = tmp_path / "out"
    train(tiny_bert, sentiment_files, out)
    for name in (".best.tmp-abcd1234", ".model.tmp-x_y_z_12", ".checkpoint-4.old-00000000"):
        (out / name).mkdir()
        (out / name / "model.safetensors").write_bytes(b"half")
    (tmp_path / ".out.tmp-12345678").mkdir()
    (tmp_path / ".other.tmp-12345678").mkdir()  # not named after --saved_dir: someone else's
    train(tiny_bert, sentiment_files, out, "--overwrite_output_dir")
    assert leftovers(out) == [] and sorted(leftovers(tmp_path)) == [".other.tmp-12345678"]


def test_saved_models_and_checkpoints_have_the_users_umask(tiny_bert, sentiment_files, tmp_path):
    previous = os.umask(0o022)
    try:
        train(tiny_bert, sentiment_files, tmp_path / "out", "--save_steps", "1", "--save_best_model",
              "--dev_data_file", sentiment_files["dev"])
        train(tiny_bert, sentiment_files, tmp_path / "out", "--overwrite_output_dir")  # over an existing model
        os.umask(0o027)
        train(tiny_bert, sentiment_files, tmp_path / "private")
    finally:
        os.umask(previous)
    out = tmp_path / "out"
    for directory in (out, out / "best", out / "checkpoint-1", out / "checkpoint-2"):
        assert oct(os.stat(directory).st_mode & 0o777) == "0o755", directory
        for name in ("model.safetensors", "config.json"):
            assert oct(os.stat(directory / name).st_mode & 0o777) == "0o644", directory / name
    assert oct(os.stat(out / "checkpoint-2" / "training_state.pt").st_mode & 0o777) == "0o644"
    assert oct(os.stat(tmp_path / "private" / "model.safetensors").st_mode & 0o777) == "0o640"
