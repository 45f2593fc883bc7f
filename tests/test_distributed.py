"""Every launch mode gives the result of one process with the same global batch (gloo on CPU).

One process with batch 16, torchrun with 2 processes of batch 8, the legacy torch.distributed.launch
(which passes --local-rank), and two torchrun "nodes" on 127.0.0.1 must reach the same dev metric and
the same weights. The tiny model has no dropout, so the runs are deterministic.
"""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def script_args(model, files, out, batch_size):
    return [os.path.join(ROOT, "run_classifier.py"), "--pretrained_model_name_or_path", model,
            "--train_data_file", files["train"], "--dev_data_file", files["dev"], "--label_file", files["labels"],
            "--saved_dir", str(out), "--batch_size", str(batch_size), "--learning_rate", "3e-3", "--max_steps", "8",
            "--logging_steps", "4", "--save_steps", "0", "--eval_steps", "4", "--seed", "3"]


def launch(commands, timeout=240):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = ROOT
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for cmd in commands]
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    return outputs


def results(out):
    return json.load(open(os.path.join(out, "all_results.json"))), load_file(os.path.join(out, "model.safetensors"))


@pytest.fixture(scope="module")
def single_process(tiny_bert, sentiment_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    launch([[sys.executable] + script_args(tiny_bert, sentiment_files, out, 16)])
    return results(out)


def assert_same(reference, other):
    (ref_results, ref_weights), (res, weights) = reference, other
    assert res["global_step"] == ref_results["global_step"] == 8
    assert res["final_accuracy"] == ref_results["final_accuracy"]
    assert res["final_loss"] == pytest.approx(ref_results["final_loss"], abs=1e-4)
    for key in ref_weights:
        torch.testing.assert_close(weights[key], ref_weights[key], atol=1e-4, rtol=1e-3)


def test_torchrun_two_processes_equal_one(single_process, tiny_bert, sentiment_files, tmp_path):
    out = tmp_path / "ddp"
    logs = launch([[sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                    "--master_port", str(free_port())] + script_args(tiny_bert, sentiment_files, out, 8)])
    assert "world size = 2" in logs[0]
    assert_same(single_process, results(out))


def test_legacy_launch_passes_local_rank_and_works(single_process, tiny_bert, sentiment_files, tmp_path):
    out = tmp_path / "legacy"
    launch([[sys.executable, "-m", "torch.distributed.launch", "--nproc_per_node", "2",
             "--master_port", str(free_port())] + script_args(tiny_bert, sentiment_files, out, 8)])
    assert_same(single_process, results(out))


def test_two_nodes_on_loopback(single_process, tiny_bert, sentiment_files, tmp_path):
    out, port = tmp_path / "nodes", free_port()
    launch([[sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(rank),
             "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port)]
            + script_args(tiny_bert, sentiment_files, out, 8) for rank in (0, 1)])
    assert_same(single_process, results(out))
