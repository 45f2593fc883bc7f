"""Model directories that cannot work end as one ModelError line naming the path, for a training run and a
Predictor alike (both open models through bertorch/models/loading.py): no tokenizer files, a truncated or
corrupt .safetensors, a saved label head of another size, a non-encoder (GPT-2) config, a --max_seq_length
past the position embeddings."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, GPT2Config, GPT2Model

import run_classifier
import run_ner
from bertorch.errors import ModelError
from bertorch.models.base import read_weights
from bertorch.models.loading import load_tokenizer
from bertorch.predict import Predictor
from test_ner import ner_args, ner_files  # noqa: F401  (fixture)

LABELS = ["negative", "positive"]


@pytest.fixture(scope="module")
def classifier_dir(tiny_bert, tmp_path_factory):
    """A saved two-label classifier as run_classifier writes it (random head: only loading is tested here)."""
    out = tmp_path_factory.mktemp("loading") / "classifier"
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert, num_labels=2, id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)})
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(out)
    (out / "bertorch.json").write_text(json.dumps({"task": "classification", "max_seq_length": 64}))
    return str(out)


def copy_model(src: str, dst, skip=()) -> str:
    os.makedirs(dst)
    for name in os.listdir(src):
        if name not in skip:
            shutil.copy(os.path.join(src, name), os.path.join(dst, name))
    return str(dst)


def truncate(path: str) -> None:
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 2])


def train(model: str, files, tmp_path, *extra):
    return run_classifier.main(["--pretrained_model_name_or_path", model, "--train_data_file", files["train"],
                                "--label_file", files["labels"], "--saved_dir", str(tmp_path / "out"),
                                "--max_steps", "1", "--batch_size", "8", "--no_cuda", *extra])


def assert_refused(model: str, files, tmp_path, message: str, *extra) -> None:
    """Refused by training (one `error:` line, before anything is saved) and by the Predictor."""
    with pytest.raises(SystemExit, match="^error: .*" + message):
        train(model, files, tmp_path, *extra)
    assert not os.path.exists(tmp_path / "out" / "config.json")
    with pytest.raises(ModelError, match=message):
        Predictor.from_pretrained(model)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def test_a_directory_without_tokenizer_files_is_refused_not_trained_with_an_all_unk_tokenizer(
        classifier_dir, sentiment_files, tmp_path):
    no_tokenizer = copy_model(classifier_dir, tmp_path / "no_tokenizer", skip=TOKENIZER_FILES)
    assert_refused(no_tokenizer, sentiment_files, tmp_path, "no_tokenizer'?: no tokenizer files here")
    # tokenizer_config.json alone: transformers builds a tokenizer of the 5 special tokens from it
    config_only = copy_model(classifier_dir, tmp_path / "config_only", skip=set(TOKENIZER_FILES) - {"tokenizer_config.json"})
    with pytest.raises(ModelError, match="only the 5 special tokens.*every character would be \\[UNK\\]"):
        load_tokenizer(config_only)


def test_a_truncated_model_safetensors_is_named(classifier_dir, sentiment_files, tmp_path):
    broken = copy_model(classifier_dir, tmp_path / "truncated")
    truncate(os.path.join(broken, "model.safetensors"))
    assert_refused(broken, sentiment_files, tmp_path,
                   r"truncated/model\.safetensors: cannot read these weights .*truncated or corrupt")


def test_a_corrupt_head_safetensors_is_named(classifier_dir, tmp_path):
    broken = copy_model(classifier_dir, tmp_path / "corrupt_head")
    with open(os.path.join(broken, "head.safetensors"), "wb") as f:
        f.write(b"\xff" * 64)  # not a safetensors header at all
    with pytest.raises(ModelError, match=r"corrupt_head/head\.safetensors: cannot read these weights"):
        Predictor.from_pretrained(broken)


def test_truncated_warm_start_weights_are_one_error_that_never_advises_unpickling(classifier_dir, tmp_path):
    state = {"w": torch.ones(64, 64)}
    torch.save(state, tmp_path / "weights.bin")
    truncate(str(tmp_path / "weights.bin"))
    with pytest.raises(ModelError, match=r"weights\.bin: not a readable weights file of tensors") as e:
        read_weights(str(tmp_path / "weights.bin"))
    assert "weights_only=False" not in str(e.value)
    broken = copy_model(classifier_dir, tmp_path / "ckpt")
    truncate(os.path.join(broken, "model.safetensors"))
    with pytest.raises(ModelError, match=r"ckpt/model\.safetensors: cannot read"):
        read_weights(broken)


def test_a_saved_head_of_another_label_count_says_what_it_holds_and_what_was_asked(
        classifier_dir, sentiment_files, tmp_path):
    three = tmp_path / "labels3.txt"
    three.write_text("negative\npositive\nneutral\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"^error: .*holds a BertForSequenceClassification with 2 labels "
                                         r"\(negative, positive\), but this run has 3 labels "
                                         r"\(negative, positive, neutral\)"):
        train(classifier_dir, {**sentiment_files, "labels": str(three)}, tmp_path)
    # the same label count trains (a warm start from the saved classifier)
    assert train(classifier_dir, sentiment_files, tmp_path, "--overwrite_output_dir")["global_step"] == 1


def test_a_saved_model_of_another_task_or_head_is_refused_even_when_the_label_count_fits(
        classifier_dir, tiny_bert, sentiment_files, ner_files, tmp_path):  # noqa: F811
    # a tagger's Linear head has the shape of this classifier's: it would load as one, meaning nothing
    with pytest.raises(SystemExit, match=r"^error: .*classifier' is a saved classification model, but this run "
                                         r"builds a NER model with a linear head: .*--init_from_ckpt"):
        run_ner.main(ner_args(classifier_dir, ner_files, tmp_path / "ner", "--max_steps", "1"))
    assert not os.path.exists(tmp_path / "ner" / "config.json")
    crf = copy_model(classifier_dir, tmp_path / "crf")
    with open(os.path.join(crf, "bertorch.json"), "w") as f:
        json.dump({"task": "ner", "head": "crf", "use_crf": True, "max_seq_length": 64}, f)
    with pytest.raises(SystemExit, match=r"is a saved NER model with a crf head, but this run builds a "
                                         r"classification model"):
        train(crf, sentiment_files, tmp_path)
    # what the message offers works: its encoder under a new tagger head
    results = run_ner.main(ner_args(tiny_bert, ner_files, tmp_path / "ner", "--max_steps", "1",
                                    "--init_from_ckpt", classifier_dir))
    assert results["global_step"] == 1


def test_a_predictor_refuses_weights_that_do_not_fit_the_config_beside_them(classifier_dir, tmp_path):
    mixed = copy_model(classifier_dir, tmp_path / "mixed")
    config = json.load(open(os.path.join(mixed, "config.json")))
    config["id2label"] = {"0": "a", "1": "b", "2": "c"}
    config["label2id"] = {"a": 0, "b": 1, "c": 2}
    json.dump(config, open(os.path.join(mixed, "config.json"), "w"))
    with pytest.raises(ModelError, match="mixed: its weights do not fit its config.json"):
        Predictor.from_pretrained(mixed)


def test_a_gpt2_directory_is_not_a_bert_family_encoder(classifier_dir, sentiment_files, tmp_path):
    gpt2 = str(tmp_path / "gpt2")
    GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=200)).save_pretrained(gpt2)
    AutoTokenizer.from_pretrained(classifier_dir).save_pretrained(gpt2)
    assert_refused(gpt2, sentiment_files, tmp_path, r"not a BERT-family encoder \(model_type gpt2\)")


def test_max_seq_length_past_the_position_embeddings_is_refused_naming_both_numbers(
        classifier_dir, sentiment_files, tmp_path):
    short = copy_model(classifier_dir, tmp_path / "short")
    config = json.load(open(os.path.join(short, "config.json")))
    config["max_position_embeddings"] = 32
    json.dump(config, open(os.path.join(short, "config.json"), "w"))
    weights = os.path.join(short, "model.safetensors")
    from safetensors.torch import load_file, save_file
    state = load_file(weights)
    state["bert.embeddings.position_embeddings.weight"] = state["bert.embeddings.position_embeddings.weight"][:32]
    save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(SystemExit, match=r"^error: --max_seq_length 64 is more than .*short takes: its position "
                                         r"embeddings fit 32 tokens"):
        train(short, sentiment_files, tmp_path, "--max_seq_length", "64")
    with pytest.raises(ModelError, match=r"bertorch.json's max_seq_length 64 is more than .*fit 32 tokens"):
        Predictor.from_pretrained(short)  # its bertorch.json says 64
    os.remove(os.path.join(short, "bertorch.json"))  # a plain transformers directory: the most it takes
    assert Predictor.from_pretrained(short).max_length == 32
    assert train(short, sentiment_files, tmp_path, "--max_seq_length", "32")["global_step"] == 1


@pytest.mark.parametrize("content", ['{"task": "classification"', "[1, 2]", "\xff\xfe garbage"])
def test_a_damaged_task_file_is_one_model_error_naming_it(tmp_path, content):
    from bertorch.model_dir import TASK_FILE, read_task_info

    (tmp_path / TASK_FILE).write_bytes(content.encode("latin-1"))
    with pytest.raises(ModelError, match=rf"{TASK_FILE}"):
        read_task_info(str(tmp_path))


def test_a_flipped_byte_inside_saved_weights_is_refused_by_its_recorded_digest(tiny_bert, sentiment_files, tmp_path):
    """safetensors checks its header only: a byte changed inside the tensor data loads as other weights. A model
    bertorch saved records the sha256 of each weight file, and loading compares them."""
    train(tiny_bert, sentiment_files, tmp_path)
    saved = str(tmp_path / "out")
    digests = json.load(open(os.path.join(saved, "bertorch.json"), encoding="utf-8"))["weights_sha256"]
    assert set(digests) == {"model.safetensors"} and all(len(d) == 64 for d in digests.values())
    Predictor.from_pretrained(saved).predict(["很好"])  # intact: loads
    broken = copy_model(saved, tmp_path / "flipped", skip=("best", "checkpoints"))
    path = os.path.join(broken, "model.safetensors")
    data = bytearray(open(path, "rb").read())
    data[-5] ^= 0x40  # inside the last tensor's data: the header still reads
    open(path, "wb").write(bytes(data))
    with pytest.raises(ModelError, match=r"flipped/model\.safetensors: its bytes differ from the sha256"):
        Predictor.from_pretrained(broken)
    with pytest.raises(SystemExit, match=r"^error: .*flipped/model\.safetensors: its bytes differ"):
        train(broken, sentiment_files, tmp_path / "again")
