"""argparse types shared by the entry scripts, training and inference alike: a bad value is refused at parse time
with one line naming the flag, not found later inside range() or a batch loop."""
from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An integer >= 1 (a batch size, a count of examples)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value
