"""Counting the examples --max_seq_length truncates tokenises them whole on purpose: transformers' "Token indices
sequence length is longer than the specified maximum" warning must not appear (the texts are cut; the count
is logged instead)."""
import logging

from transformers import AutoTokenizer

from bertorch.data.readers import TextExample
from bertorch.tasks.classification import tokenize_examples
from conftest import POSITIVE


def test_counting_truncated_examples_shows_no_length_warning(tiny_bert):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    tokenizer.model_max_length = 64  # as a real model's 512; the tiny fixture has none
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    tok_logger = logging.getLogger("transformers.tokenization_utils_base")
    tok_logger.addHandler(handler)
    try:
        long_text = "".join(POSITIVE) * 3  # > 64 tokens
        features, truncated = tokenize_examples(tokenizer, [TextExample(long_text), TextExample(POSITIVE[0])], 16)
        assert truncated == 1 and len(features[0]["input_ids"]) == 16
        pairs, cut = tokenize_examples(tokenizer, [TextExample(long_text, long_text)], 16)
        assert cut == 1 and len(pairs[0]["input_ids"]) == 16
        assert not [r for r in records if "Token indices sequence length" in r.getMessage()]
        tokenizer([long_text])  # the warning itself still works: this test would see it
        assert [r for r in records if "Token indices sequence length" in r.getMessage()]
    finally:
        tok_logger.removeHandler(handler)
