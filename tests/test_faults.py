"""Faults a long run meets: SIGTERM/SIGINT mid-run (preemption, Ctrl-C), a 2-process resume with dropout."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import EXTRA_CHARS, ROOT
from test_distributed import free_port
from bertorch.models.random_init import build_char_vocab, make_random_bert


def classifier_argv(model, files, out, *extra):
    return [os.path.join(ROOT, "run_classifier.py"), "--pretrained_model_name_or_path", model,
            "--train_data_file", files["train"], "--label_file", files["labels"], "--saved_dir", str(out),
            "--batch_size", "8", "--learning_rate", "3e-3", "--warmup_proportion", "0.1", "--logging_steps", "1",
            "--save_steps", "0", "--seed", "5", *extra]


def clean_env():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = ROOT
    return env


def weights(out):
    return load_file(os.path.join(out, "model.safetensors"))


def train_rows(out):
    path = os.path.join(out, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    return [json.loads(line) for line in open(path, encoding="utf-8") if '"train"' in line]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_run_checkpoints_and_the_resumed_run_equals_an_uninterrupted_one(
        signum, tiny_bert, sentiment_files, tmp_path):
    steps = ["--max_steps", "120", "--dropout_rate", "0.3"]  # head dropout: the RNG state must come back too
    full = tmp_path / "full"
    subprocess.run([sys.executable, *classifier_argv(tiny_bert, sentiment_files, full, *steps)], env=clean_env(),
                   check=True, capture_output=True, timeout=600)
    out = tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, *classifier_argv(tiny_bert, sentiment_files, out, *steps)],
                            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while len(train_rows(out)) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signum, stderr[-3000:]
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert f"stopped by {signal.Signals(signum).name}" in last and "--resume_from_checkpoint latest" in last
    checkpoints = [d for d in os.listdir(out) if d.startswith("checkpoint-")]
    assert len(checkpoints) == 1
    stopped_at = int(checkpoints[0].split("-")[1])
    assert 3 <= stopped_at < 120 and f"after optimisation step {stopped_at} of 120" in last
    resumed = subprocess.run([sys.executable, *classifier_argv(tiny_bert, sentiment_files, out, *steps,
                                                               "--resume_from_checkpoint", "latest")],
                             env=clean_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = weights(full), weights(out)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def bert_with_dropout(tmp_path_factory, tiny_texts):
    out = tmp_path_factory.mktemp("bert_dropout")
    return make_random_bert(str(out), build_char_vocab(tiny_texts + [EXTRA_CHARS]), hidden_size=32, num_layers=2,
                            num_heads=2, intermediate_size=64)  # BERT's default dropout of 0.1


def test_two_process_resume_with_dropout_equals_the_uninterrupted_run(bert_with_dropout, sentiment_files, tmp_path):
    """A checkpoint holds every rank's random state and a 2-process resume continues bit for bit. (On CPU the
    ranks' generators stay in step -- CPU dropout draws one seed per call whatever the shape -- so here the
    states coincide; on CUDA the Philox offset grows with each rank's own tensor sizes and they part ways.)"""
    def torchrun(out, *extra):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
               *classifier_argv(bert_with_dropout, sentiment_files, out, "--max_steps", "8",
                                "--no-low_memory_training", *extra)]
        proc = subprocess.run(cmd, env=clean_env(), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]

    full, resumed = tmp_path / "full", tmp_path / "resumed"
    torchrun(full, "--save_steps", "3")
    state = torch.load(full / "checkpoint-6" / "training_state.pt", weights_only=True)
    assert len(state["rng_per_rank"]) == 2
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-3", resumed / "checkpoint-3")
    torchrun(resumed, "--resume_from_checkpoint", "latest")
    a, b = weights(full), weights(resumed)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def rank_pid(out, rank):
    """The pid of the training process of `rank` whose command line names `out` (read from /proc)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if str(out).encode() in cmdline and f"RANK={rank}".encode() in environ and b"run_classifier.py" in b" ".join(
                cmdline) and b"torch.distributed.run" not in b" ".join(cmdline):
            return int(pid)
    return None


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the rank's process in /proc")
def test_a_stuck_rank_ends_the_run_within_ddp_timeout(tiny_bert, sentiment_files, tmp_path):
    out = tmp_path / "stuck"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           *classifier_argv(tiny_bert, sentiment_files, out, "--max_steps", "100000", "--ddp_timeout", "10")]
    proc = subprocess.Popen(cmd, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stuck = None
    try:
        deadline = time.time() + 300
        while len(train_rows(out)) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        stuck = rank_pid(out, 1)
        assert stuck is not None and proc.poll() is None
        os.kill(stuck, signal.SIGSTOP)  # alive but never answering: what a hung GPU or a stopped job looks like
        stopped_at = time.time()
        output, _ = proc.communicate(timeout=180)
        assert time.time() - stopped_at < 120  # 10 s timeout + torchrun's shutdown, not forever
    finally:
        if stuck is not None:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(stuck, sig)
                except ProcessLookupError:
                    pass
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "a collective waited longer than --ddp_timeout 10.0 s" in output, output[-3000:]
