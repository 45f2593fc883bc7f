"""scripts/gpu_check.sh: refuses clearly without a CUDA device, and every command it plans is one the
scripts accept (a typo in a flag would otherwise surface only on the GPU machine)."""
import importlib
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import gpu_check  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device: the check would run")
def test_refuses_without_a_cuda_device_instead_of_falling_back(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "RESULT": str(tmp_path / "gpu_check.json")}
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "gpu_check.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: no CUDA device") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "gpu_check.json").exists()  # nothing ran


def accepted_flags(target: str, capsys) -> set[str]:
    """The flags `target` (a script path or `-m module`) lists in its --help."""
    module = importlib.import_module(target[:-3] if target.endswith(".py") else target)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    return set(re.findall(r"--[a-z][a-z0-9_-]*", capsys.readouterr().out))


def test_every_planned_command_uses_flags_its_script_accepts(capsys, tmp_path):
    steps = gpu_check.plan("MODEL", "DATA", str(tmp_path), gpus=2)
    names = [s["name"] for s in steps]
    for wanted in ("classifier_fp16", "classifier_bf16", "ner_crf_fp16", "simcse_fp16", "sentencebert_fp16",
                   "distill_2_layers_fp16", "eval_only_ner_crf_fp16", "onnx_export_parity_gpu", "onnx_predictor_cuda",
                   "bench_inference_gpu", "classifier_fp16_torchrun_2"):
        assert wanted in names
    assert "classifier_fp16_torchrun_2" not in [s["name"] for s in gpu_check.plan("M", "D", str(tmp_path), gpus=1)]
    helps = {}
    for step in steps:
        argv = step["argv"]
        target = argv[1] if argv[0] == "-m" else argv[0]
        if target.endswith("gpu_check.py"):
            continue
        if target not in helps:
            helps[target] = accepted_flags(target, capsys)
        used = {a for a in argv if a.startswith("--")}
        assert used <= helps[target], (step["name"], used - helps[target])
        if "--no-do_train" in used:  # eval-only reads the model the matching training step saved
            source = step["argv"][step["argv"].index("--pretrained_model_name_or_path") + 1]
            assert any(s.get("model_dir") == source for s in steps), step["name"]


def test_plan_mode_needs_no_gpu(capsys):
    assert gpu_check.main(["--plan", "--model", "M", "--data_dir", "D"]) == 0
    assert len(json.loads(capsys.readouterr().out)) >= 14
