"""predict.py and export_onnx.py: a user's mistake is one `error:` line, never a traceback; counts below 1 are
refused at parse time; a relative --dev_file is looked up like the training scripts' data paths (--data_dir);
predictions keep one output line per input line; an embedding array is written to exactly the path given."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

import export_onnx
from bertorch import predict
from bertorch.predict import Predictor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def save(model, tokenizer_dir: str, out, info: dict) -> str:
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
    (out / "bertorch.json").write_text(json.dumps(info), encoding="utf-8")
    return str(out)


@pytest.fixture(scope="module")
def dirs(tiny_bert, tmp_path_factory):
    """A single-text and a text-pair classifier, a tagger (random heads: only the file handling is tested), and
    tiny_bert itself as a plain sentence encoder."""
    root = tmp_path_factory.mktemp("predict_errors")
    labels = {"id2label": {0: "negative", 1: "positive"}, "label2id": {"negative": 0, "positive": 1}}
    classifier = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2, **labels)
    tagger = AutoModelForTokenClassification.from_pretrained(tiny_bert, num_labels=len(TAGS),
                                                             id2label=dict(enumerate(TAGS)))
    return {"classifier": save(classifier, tiny_bert, root / "cls", {"task": "classification", "max_seq_length": 32}),
            "pair": save(classifier, tiny_bert, root / "pair", {"task": "classification", "is_text_pair": True,
                                                                "max_seq_length": 32}),
            "tagger": save(tagger, tiny_bert, root / "ner", {"task": "ner", "tag": "bio", "max_seq_length": 32}),
            "encoder": tiny_bert}


def run_predict(model_dir: str, tmp_path, text: str, output: str = "out.txt", *extra) -> str:
    src = tmp_path / "in.txt"
    src.write_text(text, encoding="utf-8")
    predict.main(["--model_dir", model_dir, "--input_file", str(src), "--output_file", str(tmp_path / output), *extra])
    return str(tmp_path / output)


def test_predict_errors_are_one_line_naming_the_path_given(dirs, tmp_path):
    with pytest.raises(SystemExit, match=r"^error: .*nope/model: no such model directory$"):
        run_predict(str(tmp_path / "nope" / "model"), tmp_path, "好\n")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match=r"^error: .*empty: not a model directory \(no config.json\)"):
        run_predict(str(tmp_path / "empty"), tmp_path, "好\n")
    with pytest.raises(SystemExit, match=r"^error: .*in\.txt:2: expected text_a\\ttext_b for this text-pair model"):
        run_predict(dirs["pair"], tmp_path, "好\t很好\n只有一句\n")
    with pytest.raises(SystemExit, match=r"^error: --return_probs: not an option of a ner model"):
        run_predict(dirs["tagger"], tmp_path, "张三\n", "out.txt", "--return_probs")


def test_the_script_prints_one_error_line_and_no_traceback(dirs, tmp_path):
    (tmp_path / "in.txt").write_text("好\n", encoding="utf-8")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "predict.py"), "--model_dir", str(tmp_path / "nope"),
                           "--input_file", str(tmp_path / "in.txt"), "--output_file", str(tmp_path / "o.txt")],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'nope'}: no such model directory"


@pytest.mark.parametrize("main, argv", [
    (predict.main, ["--model_dir", "m", "--input_file", "i", "--output_file", "o", "--batch_size"]),
    (export_onnx.main, ["--model_dir", "m", "--output", "o", "--limit"]),
])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_counts_below_one_are_refused_at_parse_time(main, argv, value, capsys):
    with pytest.raises(SystemExit) as e:
        main([*argv, value])
    assert e.value.code == 2
    assert f"{argv[-1]}: must be at least 1, got {value}" in capsys.readouterr().err


def test_export_errors_are_one_line(dirs, tmp_path):
    with pytest.raises(SystemExit, match=r"^error: .*nope: no such"):
        export_onnx.main(["--model_dir", str(tmp_path / "nope"), "--output", str(tmp_path / "o")])
    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(SystemExit, match=r"^error: .*not a BERT-family encoder \(model_type gpt2\)"):
        export_onnx.main(["--model_dir", str(tmp_path / "gpt"), "--output", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


def test_a_relative_dev_file_is_looked_up_in_data_dir(dirs, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    data = tmp_path / "data_root"
    (data / "senti").mkdir(parents=True)
    (data / "senti" / "dev.tsv").write_text("很好\tpositive\n太差\tnegative\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path / "data_root" / "senti")  # not found from here as given
    with pytest.raises(SystemExit, match=r"^error: senti/dev\.tsv: file not found \(looked in: senti/dev.tsv, "
                                         + str(tmp_path / "elsewhere")):
        export_onnx.main(["--model_dir", dirs["classifier"], "--output", str(tmp_path / "o"),
                          "--dev_file", "senti/dev.tsv", "--data_dir", str(tmp_path / "elsewhere")])
    assert export_onnx.main(["--model_dir", dirs["classifier"], "--output", str(tmp_path / "o"),
                             "--dev_file", "senti/dev.tsv", "--data_dir", str(data)]) == 0


def test_blank_input_lines_keep_the_output_lined_up(dirs, tmp_path):
    lines = open(run_predict(dirs["classifier"], tmp_path, "很好\n\n太差\n   \n"), encoding="utf-8").read()
    out = lines.split("\n")
    assert len(out) == 5 and out[1] == out[3] == out[4] == "" and out[0] in ("negative", "positive")
    rows = open(run_predict(dirs["classifier"], tmp_path, "\n很好\n", "probs.txt", "--return_probs"),
                encoding="utf-8").read().splitlines()
    assert rows[0] == "" and set(json.loads(rows[1].split("\t")[1])) == {"negative", "positive"}
    tagged = [json.loads(x) for x in open(run_predict(dirs["tagger"], tmp_path, "张三\n\n李四去北京\n"),
                                          encoding="utf-8").read().splitlines()]
    assert [len(r["tags"]) for r in tagged] == [2, 0, 5]
    assert tagged[1] == {"text": "", "tags": [], "entities": []}


def test_an_embedding_array_is_written_to_exactly_the_path_given(dirs, tmp_path):
    path = run_predict(dirs["encoder"], tmp_path, "很好\n太差\n", "vectors.npy")
    assert np.load(path).shape == (2, 32) and sorted(os.listdir(tmp_path)) == ["in.txt", "vectors.npy"]
    other = run_predict(dirs["encoder"], tmp_path, "很好\n", "vectors")  # no .npy: still exactly that file
    assert np.load(other).shape == (1, 32) and not (tmp_path / "vectors.npy.npy").exists()
    assert Predictor.from_pretrained(dirs["encoder"]).predict_file(str(tmp_path / "in.txt"), str(tmp_path / "lib")) == 1
    assert np.load(tmp_path / "lib").shape == (1, 32)  # the library call writes where it is told, too
    with pytest.raises(SystemExit, match=r"^error: .*in\.txt:2: blank line: an embedding model writes one \.npy row"):
        run_predict(dirs["encoder"], tmp_path, "很好\n\n太差\n", "v2.npy")


def test_an_unknown_backend_is_refused_naming_the_ones_there_are(dirs):
    from bertorch.predictors.encoder import SentenceEncoder

    with pytest.raises(ValueError, match=r"^unknown backend 'tensorrt'; use one of torch, onnx$"):
        Predictor.from_pretrained(dirs["classifier"], backend="tensorrt")
    with pytest.raises(ValueError, match=r"^unknown backend 'tensorrt'; use one of torch, onnx$"):
        SentenceEncoder.from_pretrained(dirs["encoder"], backend="tensorrt")
