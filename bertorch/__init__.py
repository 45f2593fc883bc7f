"""bertorch: fine-tune and distil BERT-family models for Chinese NLP with one training loop.

`bertorch.train(task, model=..., train=[...], ...)` trains from Python lists (bertorch/api.py). It is loaded on
first use, so `import bertorch` (which every `from bertorch import x` runs first) imports nothing else."""
import importlib

__version__ = "0.1.0"
__all__ = ["TrainResult", "train"]


def __getattr__(name: str):
    # By name, at first use: api.py sits above the CLI and the loop, whose modules all import from this package;
    # an import statement here would make the package look as if it depended on them at import time.
    if name in __all__:
        return getattr(importlib.import_module("bertorch.api"), name)
    raise AttributeError(f"module 'bertorch' has no attribute {name!r}")
