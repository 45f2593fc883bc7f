"""--ema_decay and --rdrop_alpha, the training options every task with a head gets from the shared loop: the
maths against hand computation, the saved model, exact resume and DDP equality."""
import os
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import run_classifier
import run_ner
from bertorch.checkpoint import load_training_state
from bertorch.ema import WeightEMA
from bertorch.losses.rdrop import doubled_batch, symmetric_kl
from bertorch.trainer import Trainer
from test_classifier import args_for, final_weights
from test_distributed import assert_same, free_port, launch, results, script_args
from test_ner import ner_args, ner_files  # noqa: F401  (a fixture)


def test_symmetric_kl_is_the_mean_of_both_directions_over_the_masked_positions():
    torch.manual_seed(0)
    a, b = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    p, q = torch.softmax(a, -1).numpy(), torch.softmax(b, -1).numpy()
    per_position = [[0.5 * sum(p[i, j, k] * np.log(p[i, j, k] / q[i, j, k]) + q[i, j, k] * np.log(q[i, j, k] / p[i, j, k])
                               for k in range(4)) for j in range(3)] for i in range(2)]
    kept = [per_position[i][j] for i in range(2) for j in range(3) if mask[i, j]]
    assert float(symmetric_kl(a, b, mask)) == pytest.approx(sum(kept) / len(kept), rel=1e-5)
    assert float(symmetric_kl(a, b)) == pytest.approx(np.mean(per_position), rel=1e-5)
    assert float(symmetric_kl(a, a)) == pytest.approx(0.0, abs=1e-7)


def test_rdrop_loss_is_the_mean_loss_of_both_passes_plus_alpha_times_their_kl():
    """One forward pass over the doubled batch: each example meets two dropout masks."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(6, 3))

    def forward(x, labels):
        logits = model(x)
        return SimpleNamespace(logits=logits, loss=F.cross_entropy(logits, labels))

    batch = {"x": torch.randn(4, 6), "labels": torch.tensor([0, 1, 2, 1])}
    fake = SimpleNamespace(rdrop_alpha=0.7, autocast=lambda: torch.autocast("cpu", enabled=False),
                           model=lambda **b: forward(**b),
                           task=SimpleNamespace(rdrop_logits=lambda batch, output: (output.logits, None)))
    torch.manual_seed(1)
    _, loss, rows = Trainer.forward_loss(fake, batch)
    assert rows["x"].shape == (8, 6)  # the output's rows: the batch twice
    torch.manual_seed(1)
    logits = model(torch.cat([batch["x"], batch["x"]]))
    first, second = logits[:4], logits[4:]
    assert not torch.allclose(first, second)  # two different dropout masks
    ce = (F.cross_entropy(first, batch["labels"]) + F.cross_entropy(second, batch["labels"])) / 2
    p, q = F.log_softmax(first, -1), F.log_softmax(second, -1)
    kl = 0.5 * ((p.exp() * (p - q)).sum(-1) + (q.exp() * (q - p)).sum(-1)).mean()
    torch.testing.assert_close(loss, ce + 0.7 * kl)
    assert doubled_batch({"a": torch.ones(2, 3), "n": 5})["a"].shape == (4, 3)


def test_rdrop_without_dropout_trains_exactly_as_without_it(tiny_bert, sentiment_files, tmp_path):
    """No dropout: both passes agree, the KL is 0 and the doubled batch's mean loss is the batch's own."""
    common = ["--max_steps", "4", "--dropout_rate", "0.0"]
    plain = run_classifier.main(args_for(tiny_bert, sentiment_files, tmp_path / "plain", *common))
    rdrop = run_classifier.main(args_for(tiny_bert, sentiment_files, tmp_path / "rdrop", *common,
                                         "--rdrop_alpha", "1.0"))
    assert rdrop["final_loss"] == pytest.approx(plain["final_loss"], abs=1e-5)
    a, b = final_weights(tmp_path / "plain"), final_weights(tmp_path / "rdrop")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)


def test_rdrop_with_a_crf_trains_and_resumes_exactly(tiny_bert, ner_files, tmp_path):
    common = ["--use_crf", "--rdrop_alpha", "1.0", "--dropout_rate", "0.3", "--max_steps", "6", "--batch_size", "4"]
    run_ner.main(ner_args(tiny_bert, ner_files, tmp_path / "full", *common, "--save_steps", "3"))
    run_ner.main(ner_args(tiny_bert, ner_files, tmp_path / "resumed", *common, "--save_steps", "3",
                          "--resume_from_checkpoint", str(tmp_path / "full" / "checkpoint-3")))
    a, b = final_weights(tmp_path / "full"), final_weights(tmp_path / "resumed")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def ema_of_checkpoint(directory) -> dict:
    """The weight average in a checkpoint's training state, named as in model.safetensors."""
    state = load_training_state(str(directory))["ema"]
    prefix = "module.backbone."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def test_ema_is_saved_as_the_model_and_follows_its_recurrence(tiny_bert, sentiment_files, tmp_path):
    decay = 0.6
    out = tmp_path / "ema"
    run_classifier.main(args_for(tiny_bert, sentiment_files, out, "--max_steps", "4", "--save_steps", "1",
                                 "--save_total_limit", "0", "--ema_decay", str(decay)))
    saved = final_weights(out)
    raw_4 = final_weights(out / "checkpoint-4")  # checkpoints hold the weights being trained
    ema_3, ema_4 = ema_of_checkpoint(out / "checkpoint-3"), ema_of_checkpoint(out / "checkpoint-4")
    assert set(saved) <= set(ema_4)
    moved = 0
    for key in saved:
        torch.testing.assert_close(saved[key], ema_4[key])  # the model saved is the average
        torch.testing.assert_close(ema_4[key], decay * ema_3[key] + (1 - decay) * raw_4[key])
        moved += not torch.allclose(saved[key], raw_4[key])
    assert moved > 0  # and it is not the raw weights


def test_weight_ema_copies_buffers_and_refuses_a_decay_outside_the_unit_interval():
    model = torch.nn.BatchNorm1d(3)
    ema = WeightEMA(model, 0.5)
    with torch.no_grad():
        model.weight.fill_(3.0)
        model.running_mean.fill_(7.0)
    ema.update(model)
    assert torch.allclose(ema.model.weight, torch.full((3,), 2.0))  # 0.5 * 1 + 0.5 * 3
    assert torch.allclose(ema.model.running_mean, torch.full((3,), 7.0))  # buffers copied, not averaged
    with pytest.raises(ValueError):
        WeightEMA(model, 1.0)


def test_resume_with_ema_is_exact(tiny_bert, sentiment_files, tmp_path):
    common = ["--max_steps", "6", "--batch_size", "16", "--dropout_rate", "0.3", "--ema_decay", "0.8"]
    run_classifier.main(args_for(tiny_bert, sentiment_files, tmp_path / "full", *common, "--save_steps", "3"))
    run_classifier.main(args_for(tiny_bert, sentiment_files, tmp_path / "resumed", *common, "--resume_from_checkpoint",
                                 str(tmp_path / "full" / "checkpoint-3")))
    a, b = final_weights(tmp_path / "full"), final_weights(tmp_path / "resumed")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resuming_without_a_saved_average_is_one_clear_error(tiny_bert, sentiment_files, tmp_path, capsys):
    run_classifier.main(args_for(tiny_bert, sentiment_files, tmp_path / "plain", "--max_steps", "2", "--save_steps", "2"))
    with pytest.raises(SystemExit) as stop:
        run_classifier.main(args_for(tiny_bert, sentiment_files, tmp_path / "more", "--max_steps", "4",
                                     "--ema_decay", "0.9", "--resume_from_checkpoint",
                                     str(tmp_path / "plain" / "checkpoint-2")))
    assert "written without it" in str(stop.value) and "\n" not in str(stop.value)


def test_ema_under_two_processes_equals_one(tiny_bert, sentiment_files, tmp_path):
    ema = ["--ema_decay", "0.8"]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    launch([[sys.executable] + script_args(tiny_bert, sentiment_files, single, 16) + ema])
    launch([[sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
             str(free_port())] + script_args(tiny_bert, sentiment_files, ddp, 8) + ema])
    assert_same(results(str(single)), results(str(ddp)))
    assert os.path.exists(ddp / "model.safetensors")
