"""Resuming refuses what it cannot continue exactly: another batch size, accumulation, --max_seq_length, seed or
world size than the checkpoint was written with, and a damaged training_state.pt or weights file -- each in one
line naming the file or the saved and the given value."""
import os

import pytest
import torch

import run_classifier
from bertorch import checkpoint as ckpt
from bertorch.errors import ModelError, UsageError


def argv(model, files, out, *extra):
    return ["--pretrained_model_name_or_path", model, "--train_data_file", files["train"], "--label_file",
            files["labels"], "--saved_dir", str(out), "--batch_size", "4", "--max_steps", "4", "--save_steps", "2",
            "--logging_steps", "0", "--max_seq_length", "32", "--seed", "7", *extra]


@pytest.fixture(scope="module")
def trained(tiny_bert, sentiment_files, tmp_path_factory):
    """A run stopped after 4 of 4 steps with checkpoint-2 and checkpoint-4; each test resumes a copy."""
    out = tmp_path_factory.mktemp("resume") / "out"
    run_classifier.main(argv(tiny_bert, sentiment_files, out))
    return out


@pytest.fixture
def copy_of(trained, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(trained, out)
    return out


def resume_error(model, files, out, *extra) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_classifier.main(argv(model, files, out, "--max_steps", "6", "--resume_from_checkpoint", "latest", *extra))
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


def test_the_checkpoint_records_the_run_shape(trained):
    state = torch.load(trained / "checkpoint-4" / ckpt.TRAINING_STATE_NAME, weights_only=True)
    assert state["run"] == {"batch_size": 4, "gradient_accumulation_steps": 1, "max_seq_length": 32, "seed": 7,
                            "world_size": 1}


@pytest.mark.parametrize("flag, given", [("--batch_size", "2"), ("--gradient_accumulation_steps", "2"),
                                         ("--max_seq_length", "64"), ("--seed", "8")])
def test_resuming_with_another_run_shape_is_refused(tiny_bert, sentiment_files, copy_of, flag, given):
    saved = {"--batch_size": 4, "--gradient_accumulation_steps": 1, "--max_seq_length": 32, "--seed": 7}[flag]
    message = resume_error(tiny_bert, sentiment_files, copy_of, flag, given)
    assert message == (f"error: --resume_from_checkpoint {copy_of / 'checkpoint-4'}: written with {flag} {saved}, "
                       f"resumed with {flag} {given}: give {saved} to resume it, or start a new run from its weights "
                       f"with --init_from_ckpt {copy_of / 'checkpoint-4'}")


def test_resuming_with_the_same_shape_goes_on(tiny_bert, sentiment_files, copy_of):
    results = run_classifier.main(argv(tiny_bert, sentiment_files, copy_of, "--max_steps", "6",
                                       "--resume_from_checkpoint", "latest"))
    assert results["global_step"] == 6


def test_another_world_size_is_refused(trained):
    import argparse

    directory = str(trained / "checkpoint-4")
    state = ckpt.load_training_state(directory)
    args = argparse.Namespace(batch_size=4, gradient_accumulation_steps=1, max_seq_length=32, seed=7)
    ckpt.check_run_shape(directory, state, args, world_size=1)
    with pytest.raises(UsageError, match=r"written by 1 process\(es\), resumed by 2: launch 1 to resume it"):
        ckpt.check_run_shape(directory, state, args, world_size=2)
    ckpt.check_run_shape(directory, {k: v for k, v in state.items() if k != "run"}, args, world_size=2)  # older


def damage(path, how):
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[:len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(b"\x80\x02garbage" * 100)


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage"])
@pytest.mark.parametrize("name", [ckpt.TRAINING_STATE_NAME, "model.safetensors"])
def test_a_damaged_checkpoint_file_is_one_line_naming_it(tiny_bert, sentiment_files, copy_of, name, how):
    path = copy_of / "checkpoint-4" / name
    damage(path, how)
    message = resume_error(tiny_bert, sentiment_files, copy_of)
    assert message.startswith(f"error: {path}: ") and "weights_only=False" not in message, message


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_pickle_payload_in_the_training_state_is_refused_not_run(tmp_path):
    torch.save({"optimizer": Payload(), "scheduler": {}, "trainer": {}, "history": "[]"},
               tmp_path / ckpt.TRAINING_STATE_NAME)
    with pytest.raises(ModelError, match="never unpickled") as error:
        ckpt.load_training_state(str(tmp_path))
    assert "weights_only=False" not in str(error.value)


def test_a_state_of_another_program_is_named(tmp_path):
    torch.save({"model": torch.zeros(2)}, tmp_path / ckpt.TRAINING_STATE_NAME)
    with pytest.raises(ModelError, match=r"training_state.pt: not a bertorch training state \(no 'optimizer'\)"):
        ckpt.load_checkpoint(str(tmp_path), model=None, args=None, world_size=1)
