"""Every flag a script offers does something in that script: the flags each script's --help lists are the
shared ones every task reads plus exactly the ones its task reads (shared flags for labels and losses are
offered only to the tasks with a classifier over labels, an inner task's flags only to its distillation).

A flag added to a script, or a shared flag offered to one more task, fails here until it is listed below
for the scripts that really read it."""
from __future__ import annotations

import re

import pytest

import export_onnx
import run_batchneg
import run_classifier
import run_distill
import run_ner
import run_sentencebert
import run_simcse
from bertorch import predict  # predict.py runs bertorch.predict.main

# Read for every task by cli.py, the trainer or the Task base (and so offered by every training script).
SHARED = {
    "--pretrained_model_name_or_path", "--model_name_or_path", "--init_from_ckpt", "--max_seq_length",
    "--train_data_file", "--dev_data_file", "--data_dir", "--group_by_length", "--no-group_by_length",
    "--pad_to_max_length", "--pad_to_multiple_of", "--num_workers", "--max_train_samples", "--max_eval_samples",
    "--do_train", "--no-do_train", "--eval_only", "--batch_size", "--per_device_train_batch_size",
    "--eval_batch_size", "--epochs", "--num_train_epochs", "--max_steps", "--max_train_steps",
    "--gradient_accumulation_steps", "--learning_rate", "--scheduler", "--lr_scheduler_type", "--warmup_proportion",
    "--weight_decay", "--layerwise_lr_decay", "--max_grad_norm", "--seed", "--fp16", "--bf16",
    "--low_memory_training", "--no-low_memory_training", "--checkpoint_above_tokens", "--gradient_checkpointing",
    "--adversarial", "--adv_epsilon", "--adv_alpha", "--adv_steps", "--find_unused_parameters", "--ddp_timeout",
    "--ema_decay",
    "--saved_dir", "--output_dir", "--overwrite_output_dir", "--logging_steps", "--eval_steps", "--save_steps",
    "--save_total_limit", "--save_best_model", "--resume_from_checkpoint", "--no_cuda", "--help",
}
# Tasks with a classifier over labels (Task.label_head): labels, the head's dropout, the hard-label loss.
LABELS = {"--label_file", "--dropout_rate", "--loss_type", "--label_smoothing", "--focal_gamma", "--focal_alpha"}
RDROP = {"--rdrop_alpha"}  # tasks whose predictions are distributions (Task.supports_rdrop)
CLASSIFICATION = {"--is_text_pair", "--metric_for_best"}  # ClassificationTask's own group
TAGGER = {"--use_crf", "--crf_learning_rate", "--decoding", "--doc_stride"}
NER_HEADS = {"--head", "--gp_head_size"}  # run_ner only: a distillation's tagger head comes from its teacher
SENTENCE = {"--pooling_mode", "--output_emb_size", "--matryoshka_dims", "--matryoshka_weights"}
CONTRASTIVE = SENTENCE | {"--margin", "--scale", "--gather_negatives", "--no-gather_negatives", "--no_duplicates"}
DISTILL = {
    "--task", "--teacher_model_dir", "--task_spec", "--teacher_weights", "--student_model", "--student_layers",
    "--student_layer_selection", "--student_hidden_size", "--hard_label_loss", "--hard_label_weight",
    "--hard_label_weight_schedule", "--kd_loss_type", "--temperature", "--temperature_schedule", "--kd_loss_weight",
    "--kd_loss_weight_schedule", "--matches", "--teacher_cached", "--aux_data_file", "--max_aux_examples",
}
SCRIPTS = {  # (main, arguments before --help) -> the flags its --help must list, no more, no fewer
    "run_classifier": (run_classifier.main, [], SHARED | LABELS | RDROP | CLASSIFICATION),
    "run_ner": (run_ner.main, [], SHARED | LABELS | RDROP | TAGGER | NER_HEADS | {"--tag"}),
    "run_sentencebert": (run_sentencebert.main, [], SHARED | LABELS | SENTENCE | {"--is_nli", "--concat_multiply",
                                                                        "--loss", "--cosent_scale",
                                                                        "--metric_for_best"}),
    "run_simcse": (run_simcse.main, [], SHARED | CONTRASTIVE | {"--dropout"}),
    "run_batchneg": (run_batchneg.main, [], SHARED | CONTRASTIVE | {"--mean_loss"}),
    "run_distill": (run_distill.main, [],
                    SHARED | LABELS | DISTILL | CLASSIFICATION | {"--allow_different_tokenizers"}),
    "run_distill --task sequence_labeling": (run_distill.main, ["--task", "sequence_labeling"],
                                             SHARED | LABELS | DISTILL | TAGGER | {"--tag"}),
    # each task's tag scheme and --is_text_pair come from its teacher
    "run_distill --task multitask": (run_distill.main, ["--task", "multitask"],
                                     SHARED | LABELS | DISTILL | TAGGER | {"--allow_different_tokenizers"}),
    "export_onnx": (export_onnx.main, [], {"--help", "--model_dir", "--output", "--opset", "--quantize", "--dev_file",
                                           "--data_dir", "--limit", "--pooling_mode", "--optimize", "--output_dim"}),
    "predict": (predict.main, [], {"--help", "--model_dir", "--input_file", "--output_file", "--batch_size",
                                   "--return_probs", "--backend"}),
}


def help_flags(main, before: list[str], capsys) -> set[str]:
    """The option strings of --help: the invocation column of each option line ("  --a A, --b A  help")."""
    with pytest.raises(SystemExit):
        main([*before, "--help"])
    flags = set()
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("  -"):
            invocation = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
            flags.update(re.findall(r"--[A-Za-z0-9_-]+", invocation))
    return flags


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_help_lists_exactly_the_flags_the_script_reads(script, capsys):
    main, before, expected = SCRIPTS[script]
    found = help_flags(main, before, capsys)
    assert not found - expected, f"{script} offers flags nothing in it reads: {sorted(found - expected)}"
    assert not expected - found, f"{script} lacks flags its task reads: {sorted(expected - found)}"


def test_label_and_inner_task_flags_only_where_they_are_read(capsys):
    """The cases that were silently ignored: label/loss flags in the contrastive scripts, the tagger's flags in
    classification distillation (and the classifier's in NER distillation)."""
    for script in ("run_simcse", "run_batchneg"):
        assert not help_flags(*SCRIPTS[script][:2], capsys) & LABELS
    classification = help_flags(*SCRIPTS["run_distill"][:2], capsys)
    assert not classification & (TAGGER | {"--tag"})
    tagging = help_flags(*SCRIPTS["run_distill --task sequence_labeling"][:2], capsys)
    assert not tagging & {"--is_text_pair", "--allow_different_tokenizers"}


def test_the_model_fetcher_answers_help_instead_of_fetching_into_a_directory_named_help(tmp_path, monkeypatch, capsys):
    """`python -m bertorch.pretrained --help` once fetched m3e-small into ./--help."""
    from bertorch import pretrained

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pretrained, "fetch_m3e_small", lambda dest=None: pytest.fail(f"fetched into {dest}"))
    with pytest.raises(SystemExit) as stop:
        pretrained.main(["--help"])
    assert stop.value.code == 0 and "dest" in capsys.readouterr().out and not list(tmp_path.iterdir())
