"""Atomic directory writes, checkpoint rotation, and training state that loads with weights_only."""
import os

import pytest
import torch

from bertorch import checkpoint as ckpt


def test_atomic_directory_keeps_old_content_when_writing_fails(tmp_path):
    target = tmp_path / "best"
    ckpt.save_directory(str(target), lambda d: open(os.path.join(d, "model"), "w").write("v1"))

    def crash(d):
        open(os.path.join(d, "model"), "w").write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        ckpt.save_directory(str(target), crash)
    assert (target / "model").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["best"]  # no temporary leftovers


def test_save_into_writes_config_last_and_keeps_other_files(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("{}")

    def write(d):
        for name in ("config.json", "model.safetensors"):
            open(os.path.join(d, name), "w").write(name)

    ckpt.save_into(str(tmp_path), write)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "metrics.jsonl", "model.safetensors"]


def test_rotation_and_latest(tmp_path):
    for step in (5, 10, 15):
        (tmp_path / f"checkpoint-{step}").mkdir()
    ckpt.rotate_checkpoints(str(tmp_path), keep=2)
    assert [os.path.basename(p) for p in ckpt.list_checkpoints(str(tmp_path))] == ["checkpoint-10", "checkpoint-15"]
    assert ckpt.resolve_resume("latest", str(tmp_path)).endswith("checkpoint-15")


def test_training_state_roundtrip_is_weights_only(tmp_path):
    torch.manual_seed(1)
    state = {"rng": ckpt.rng_state(), "step": 3}
    ckpt.save_training_state(str(tmp_path), state)
    expected = torch.rand(3)
    loaded = ckpt.load_training_state(str(tmp_path))  # torch.load(weights_only=True) inside
    ckpt.set_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(3), expected)
    assert loaded["step"] == 3
