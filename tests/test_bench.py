"""`python -m bench --quick`: every training case and every inference backend reports its ratio, printed
side by side and written to --output. A smoke run on a tiny model: it checks the pipeline, not the speed."""
import json
import math
import os
import re
import subprocess
import sys

import pytest

from bench.train_throughput import CASES
from conftest import ROOT, SHARED_DATA

RATIO = r"(\d+\.\d+)x"


@pytest.mark.skipif(not os.path.isdir(SHARED_DATA), reason=f"bench reads its ChnSentiCorp, Resume, unsup and AFQMC "
                    f"from {SHARED_DATA} itself (bench/train_throughput.py SHARED), not from the shipped data/")
def test_quick_bench_prints_a_ratio_for_every_case(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--limit", "8", "--output", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    summary = proc.stdout[proc.stdout.index("training, ours vs longest"):]
    for case in CASES:
        line = re.search(rf"^{case} .*$", summary, re.M)
        assert line, f"no summary line for {case}:\n{summary}"
        assert len(re.findall(RATIO, line.group())) == 2, line.group()  # speed and peak memory
    for backend in ("torch", "onnx fp32", "onnx int8"):
        line = re.search(rf"^{backend} .*$", summary, re.M)
        assert line and len(re.findall(RATIO, line.group())) == 2, summary  # batch 1 and batch 32
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert set(saved["training"]) == set(CASES)
    values = [v for case in saved["training"].values() for v in case.values()] + list(saved["inference"].values())
    assert len(saved["inference"]) == 6 and all(math.isfinite(v) and v > 0 for v in values)
    assert saved["inference"]["torch batch 1"] == 1.0
    train = json.loads((tmp_path / "train_throughput.json").read_text())
    assert {mode for runs in train.values() for mode in runs} == {"ours", "longest"}
    assert len(json.loads((tmp_path / "inference.json").read_text())) == 6


def test_model_dir_needs_its_dev_file(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench", "--model_dir", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--model_dir needs --dev_file" in proc.stderr


def test_optimizer_step_times_every_adamw_implementation_on_the_same_parameters(tiny_bert, capsys):
    from bench import optimizer_step

    summary = optimizer_step.main(["--model_dir", tiny_bert, "--steps", "2"])
    assert set(summary) == {*optimizer_step.IMPLEMENTATIONS, "clip (foreach)", "clip (loop)"}
    assert all(0 < s["best_ms"] <= s["median_ms"] for s in summary.values())
    assert "M parameters" in capsys.readouterr().out
