"""`pip install .` and `pip install -e .` into a fresh virtual environment (system site-packages, so torch is
not reinstalled; no build isolation and no index, so nothing is downloaded: ~5 s each), then the package and
the console scripts from another directory; and the checkout's top-level scripts never shadow the package."""
import importlib.metadata
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

SCRIPTS = ["bertorch-classifier", "bertorch-ner", "bertorch-sentencebert", "bertorch-simcse", "bertorch-batchneg",
           "bertorch-distill", "bertorch-export-onnx", "bertorch-predict", "bertorch-serve"]
TOP_LEVEL = ["pyproject.toml", "README.md", "run_classifier.py", "run_ner.py", "run_sentencebert.py", "run_simcse.py",
             "run_batchneg.py", "run_distill.py", "export_onnx.py", "predict.py"]
setuptools_version = tuple(int(x) for x in importlib.metadata.version("setuptools").split(".")[:2])
needs_setuptools = pytest.mark.skipif(setuptools_version < (70, 1), reason="building a wheel without build isolation "
                                      "needs setuptools >= 70.1 (bdist_wheel built in); pip would download one")


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, **extra}


def source_copy(dest) -> str:
    """What a clone holds for packaging (the working tree's bertorch/, without caches)."""
    for name in TOP_LEVEL:
        shutil.copy(os.path.join(ROOT, name), dest / name)
    shutil.copytree(os.path.join(ROOT, "bertorch"), dest / "bertorch", ignore=shutil.ignore_patterns("__pycache__"))
    return str(dest)


def venv_install(tmp_path, *pip_args: str):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    proc = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", *pip_args], capture_output=True, text=True, env=clean_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return venv, python


def run_in(cwd, *cmd, **env) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, env=clean_env(**env),
                          timeout=300)


@needs_setuptools
def test_pip_install_gives_the_package_and_console_scripts_anywhere(tmp_path, tiny_bert, sentiment_files):
    src = tmp_path / "src"
    src.mkdir()
    venv, python = venv_install(tmp_path, source_copy(src))
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "data" / "senti").mkdir(parents=True)  # a working directory with its own data/
    for key in ("train", "dev", "labels"):
        shutil.copy(sentiment_files[key], elsewhere / "data" / "senti")
    site = run_in(elsewhere, python, "-c", "import bertorch, run_classifier, export_onnx; print(bertorch.__file__)")
    assert site.returncode == 0, site.stderr
    assert site.stdout.strip().startswith(str(venv)), site.stdout  # the installed copy, not the source
    installed = os.path.dirname(site.stdout.strip())
    for root, _, files in os.walk(src / "bertorch"):  # pyproject's package list misses no subpackage
        rel = os.path.relpath(root, src / "bertorch")
        for name in files:
            if name.endswith(".py"):
                assert os.path.isfile(os.path.join(installed, rel, name)), os.path.join(rel, name)
    # Every command is installed and its target loads (one process: each --help would import torch anew).
    assert all((venv / "bin" / script).is_file() for script in SCRIPTS)
    load = run_in(elsewhere, python, "-c", "from importlib.metadata import entry_points; "
                  "print(sorted(e.name for e in entry_points(group='console_scripts') "
                  "if e.name.startswith('bertorch-') and callable(e.load())))")
    assert load.returncode == 0 and eval(load.stdout) == sorted(SCRIPTS), load.stderr[-2000:]
    assert run_in(elsewhere, venv / "bin" / "bertorch-ner", "--help").stdout.startswith("usage: bertorch-ner")
    train = run_in(elsewhere, venv / "bin" / "bertorch-classifier", "--pretrained_model_name_or_path", tiny_bert,
                   "--train_data_file", "senti/train.tsv", "--dev_data_file", "senti/dev.tsv", "--label_file",
                   "senti/labels.txt", "--saved_dir", "out", "--max_steps", "2", "--batch_size", "8", "--save_steps", "0")
    assert train.returncode == 0, train.stderr[-3000:]
    assert (elsewhere / "out" / "all_results.json").is_file()  # relative data paths found in ./data
    (elsewhere / "texts.txt").write_text("房间干净\n屏幕有坏点\n", encoding="utf-8")
    pred = run_in(elsewhere, venv / "bin" / "bertorch-predict", "--model_dir", "out", "--input_file", "texts.txt",
                  "--output_file", "labels.txt")
    assert pred.returncode == 0, pred.stderr[-3000:]  # not the prediction count as the exit status
    assert len((elsewhere / "labels.txt").read_text(encoding="utf-8").splitlines()) == 2


@needs_setuptools
def test_pip_install_editable_imports_the_checkout_from_anywhere(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _, python = venv_install(tmp_path, "-e", source_copy(src))
    proc = run_in(tmp_path, python, "-c", "import bertorch.predict, run_ner; print(bertorch.predict.__file__)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(src / "bertorch" / "predict.py")


def test_the_top_level_predict_script_never_shadows_the_package(tmp_path):
    """From the folder above an uninstalled clone named bertorch/, `bertorch` is the clone as a namespace
    package and `bertorch.predict` its predict.py: that must say what to do, not import itself half-way."""
    (tmp_path / "bertorch").symlink_to(ROOT, target_is_directory=True)
    proc = run_in(tmp_path, sys.executable, "-c", "from bertorch.predict import Predictor")
    assert proc.returncode == 1
    assert "partially initialized" not in proc.stderr, proc.stderr
    assert "pip install -e ." in proc.stderr.strip().splitlines()[-1]
    script = run_in(ROOT, sys.executable, "predict.py", "--help")  # the script itself still works from the root
    assert script.returncode == 0 and "--model_dir" in script.stdout, script.stderr
    other = run_in(tmp_path, sys.executable, os.path.join(ROOT, "predict.py"), "--help")  # and by path, elsewhere
    assert other.returncode == 0 and "--model_dir" in other.stdout, other.stderr
