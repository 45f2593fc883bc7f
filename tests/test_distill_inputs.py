"""run_distill refuses, at start-up, a teacher trained on other inputs than the run gives it: a text-pair teacher
on single texts (its soft labels would be those of inputs it never saw), or a single-text one on pairs."""
import pytest

import run_classifier
import run_distill


@pytest.fixture(scope="module")
def pair_files(sentiment_files, tmp_path_factory):
    d = tmp_path_factory.mktemp("pairs")
    for split in ("train", "dev"):
        rows = [line.split("\t") for line in open(sentiment_files[split], encoding="utf-8").read().splitlines()]
        (d / f"{split}.tsv").write_text("".join(f"{t}\t{t[::-1]}\t{label}\n" for t, label in rows), encoding="utf-8")
    return {"train": str(d / "train.tsv"), "dev": str(d / "dev.tsv"), "labels": sentiment_files["labels"]}


def flags(files, out, *extra):
    return ["--train_data_file", files["train"], "--label_file", files["labels"], "--saved_dir", str(out),
            "--max_steps", "2", "--batch_size", "8", "--save_steps", "0", "--logging_steps", "0", *extra]


@pytest.fixture(scope="module")
def teachers(tiny_bert, sentiment_files, pair_files, tmp_path_factory):
    root = tmp_path_factory.mktemp("teachers")
    run_classifier.main(flags(pair_files, root / "pair", "--pretrained_model_name_or_path", tiny_bert,
                              "--is_text_pair"))
    run_classifier.main(flags(sentiment_files, root / "single", "--pretrained_model_name_or_path", tiny_bert))
    return {"pair": str(root / "pair"), "single": str(root / "single")}


def distil_error(teacher, files, out, *extra) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_distill.main(flags(files, out, "--teacher_model_dir", teacher, "--student_layers", "1", *extra))
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and "\n" not in message
    return message


def test_a_text_pair_teacher_on_single_texts_is_refused(teachers, sentiment_files, tmp_path):
    assert distil_error(teachers["pair"], sentiment_files, tmp_path / "out") == (
        f"error: --teacher_model_dir {teachers['pair']} was trained on text pairs (is_text_pair in its "
        f"bertorch.json), but this run distils single texts: add --is_text_pair and give text_a\\ttext_b\\tlabel data")
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_a_single_text_teacher_on_pairs_is_refused(teachers, pair_files, tmp_path):
    assert "was trained on single texts, but --is_text_pair distils text pairs" in distil_error(
        teachers["single"], pair_files, tmp_path / "out", "--is_text_pair")


def test_a_pair_teacher_on_pairs_distils(teachers, pair_files, tmp_path):
    results = run_distill.main(flags(pair_files, tmp_path / "out", "--teacher_model_dir", teachers["pair"],
                                     "--student_layers", "1", "--is_text_pair", "--dev_data_file", pair_files["dev"]))
    assert results["global_step"] == 2


def test_distilling_without_a_dev_file_reports_sizes_only(teachers, sentiment_files, tmp_path):
    """It used to end, after training, in a traceback from the report's timing of no dev batches."""
    results = run_distill.main(flags(sentiment_files, tmp_path / "out", "--teacher_model_dir", teachers["single"],
                                     "--student_layers", "1"))
    assert results["global_step"] == 2 and results["student_parameters"] < results["teacher_parameters"]
