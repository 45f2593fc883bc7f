"""The random BERT builder behind the tests, benchmarks and QUICK mode: loadable, and never half-written."""
import pytest
from transformers import AutoModel, AutoTokenizer, BertTokenizer

from bertorch.models import random_init


def test_built_directory_loads_with_the_data_characters(tmp_path):
    vocab = random_init.build_char_vocab(["今天天气好", "Hello 世界"])
    out = random_init.make_random_bert(str(tmp_path / "model"), vocab)
    model, tokenizer = AutoModel.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    assert model.config.vocab_size == len(vocab) and vocab[:5] == random_init.SPECIAL_TOKENS
    assert tokenizer.tokenize("天气") == ["天", "气"] and tokenizer.tokenize("世h") == ["世", "h"]


def test_an_interrupted_build_leaves_no_directory(tmp_path, monkeypatch):
    def crash(self, *args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(BertTokenizer, "save_pretrained", crash)  # after the weights were written
    with pytest.raises(KeyboardInterrupt):
        random_init.make_random_bert(str(tmp_path / "model"), random_init.build_char_vocab(["天气"]))
    assert list(tmp_path.iterdir()) == []  # main() and scripts/common.sh would take a leftover for a model
