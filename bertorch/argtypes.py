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


def open_unit_float(text: str) -> float:
    """argparse type: a float in (0, 1) (a decay)."""
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a float >= 0 (nan refused)."""
    value = float(text)
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0 (any free one) to 65535."""
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port from 0 to 65535, got {text}")
    return value
