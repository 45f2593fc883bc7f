"""bertorch: fine-tune and distil BERT-family models for Chinese NLP with one training loop."""

__version__ = "0.1.0"
