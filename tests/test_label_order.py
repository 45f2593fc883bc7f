"""--no-do_train with a labels.txt in another order than the saved model's id2label scores against the model's
labels (it predicts their ids), and says so; a label the model does not have is one error line naming the file."""
import pytest

import run_classifier
import run_ner
from test_ner import LABELS, ner_args, ner_files  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def classifier(tiny_bert, sentiment_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("label_order") / "model"
    results = run_classifier.main(["--pretrained_model_name_or_path", tiny_bert, "--train_data_file",
                                   sentiment_files["train"], "--dev_data_file", sentiment_files["dev"], "--label_file",
                                   sentiment_files["labels"], "--saved_dir", str(out), "--max_steps", "40",
                                   "--batch_size", "8", "--learning_rate", "3e-3", "--warmup_proportion", "0.1",
                                   "--save_steps", "0", "--seed", "3"])
    return out, results


def evaluate(main, model, dev, labels, out):
    return main(["--pretrained_model_name_or_path", str(model), "--no-do_train", "--dev_data_file", dev,
                 "--label_file", str(labels), "--saved_dir", str(out)])


def test_a_label_file_in_another_order_is_scored_in_the_models_order(classifier, sentiment_files, tmp_path,
                                                                      capsys):
    model, trained = classifier
    reversed_labels = tmp_path / "labels.txt"
    reversed_labels.write_text("positive\nnegative\n", encoding="utf-8")  # the model's id2label: negative, positive
    results = evaluate(run_classifier.main, model, sentiment_files["dev"], reversed_labels, tmp_path / "eval")
    assert results["final_accuracy"] == pytest.approx(trained["final_accuracy"])
    assert trained["final_accuracy"] != 0.5  # scored in the reversed order, it would have been 1 - accuracy
    warning = [line for line in capsys.readouterr().err.splitlines() if "scored in the model's order" in line]
    assert len(warning) == 1 and "the evaluated model" in warning[0] and "['negative', 'positive']" in warning[0]


def test_a_label_the_model_lacks_is_an_error(classifier, sentiment_files, tmp_path):
    model, _ = classifier
    labels = tmp_path / "labels.txt"
    labels.write_text("negative\nneutral\npositive\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        evaluate(run_classifier.main, model, sentiment_files["dev"], labels, tmp_path / "eval")
    assert str(exit_info.value.code) == (
        f"error: {labels}: label not among the 2 labels of the evaluated model {model} (its id2label: "
        f"['negative', 'positive']): 'neutral'")


def test_ner_eval_only_uses_the_models_tag_order(tiny_bert, ner_files, tmp_path):  # noqa: F811
    trained = run_ner.main(ner_args(tiny_bert, ner_files, tmp_path / "model"))
    shuffled = tmp_path / "labels.txt"
    shuffled.write_text("\n".join(LABELS[::-1]) + "\n", encoding="utf-8")
    results = run_ner.main(["--pretrained_model_name_or_path", str(tmp_path / "model"), "--no-do_train",
                            "--dev_data_file", ner_files["dev"], "--label_file", str(shuffled), "--max_seq_length",
                            "24", "--doc_stride", "6", "--saved_dir", str(tmp_path / "eval")])
    assert results["final_f1"] == pytest.approx(trained["final_f1"]) and trained["final_f1"] > 0
