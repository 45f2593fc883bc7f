"""The `bertorch-*` console commands (pyproject.toml's [project.scripts]): each runs what `python run_x.py`
runs and exits 0 when it finishes.

The scripts' `main()` return what tests and Python callers use (the results dict, a prediction count), and a
console script hands its function's return value to sys.exit, which prints a dict and exits 1, or exits with
the count as its status. These wrappers drop it, as `if __name__ == "__main__": main()` does. Failures still
exit non-zero: they raise SystemExit("error: ...") or keep their traceback.
"""
from __future__ import annotations

import importlib
from typing import Callable


def _command(module: str) -> Callable[[], int]:
    def command() -> int:
        importlib.import_module(module).main()
        return 0

    command.__doc__ = f"`{module}.main()` as a console command (exit status 0 when it returns)"
    return command


classifier = _command("run_classifier")
ner = _command("run_ner")
sentencebert = _command("run_sentencebert")
simcse = _command("run_simcse")
batchneg = _command("run_batchneg")
distill = _command("run_distill")
predict = _command("bertorch.predict")
