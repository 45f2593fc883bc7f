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


@pytest.mark.parametrize("pooling", ["pooler", "mean"])
def test_quality_parity_plain_loop_trains_either_pooling_and_scores_the_whole_dev_set(tiny_bert, sentiment_files,
                                                                                      pooling, tmp_path, capsys):
    from bench import quality_parity

    out = tmp_path / "rows.jsonl"
    quality_parity.main(["--model_dir", tiny_bert, "--data_dir", str(sentiment_files["dir"]), "--loops", "plain",
                         "--seeds", "0", "--steps", "3", "--batch_size", "4", "--dev_limit", "0",
                         "--pooling", pooling, "--bf16", "--output", str(out)])
    row = json.loads(out.read_text(encoding="utf-8"))
    dev_lines = len(open(sentiment_files["dev"], encoding="utf-8").read().splitlines())
    assert row["pooling"] == pooling and row["bf16"] is True and row["steps"] == 3
    assert row["dev_examples"] == dev_lines  # --dev_limit 0: every dev line scored
    assert "plain dev accuracy" in capsys.readouterr().out


def test_mean_pooled_classifier_reads_the_mean_of_the_real_tokens(tiny_bert):
    import torch
    from bench.quality_parity import mean_pooled_classifier

    model = mean_pooled_classifier(tiny_bert, 3).eval()
    ids = torch.tensor([[2, 5, 6, 7, 3]])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1)
        mask = torch.tensor([[1] * 5 + [0] * 3])
        hidden = model.encoder(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        assert torch.allclose(model(input_ids=padded, attention_mask=mask).logits, logits, atol=1e-5)
        assert torch.allclose(model.head(hidden.mean(1)), logits, atol=1e-5)
    assert logits.shape == (1, 3)


def test_dropout_attention_times_every_implementation_per_shape_and_dtype(capsys):
    from bench import dropout_attention

    rows = dropout_attention.main(["--shapes", "2x2x8x4", "--steps", "1", "--repeats", "1"])
    assert [(r["shape"], r["dtype"]) for r in rows] == [("2x2x8x4", "float32"), ("2x2x8x4", "bfloat16")]
    for row in rows:
        assert set(row) == {"shape", "dtype", "low-memory ms", "one chunk ms", "sdpa ms", "sdpa-nodrop ms"}
        assert all(row[k] > 0 for k in row if k.endswith(" ms"))
    assert "one chunk" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        dropout_attention.main(["--shapes", "2x8x4"])
