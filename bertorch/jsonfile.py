"""JSON files a user hands us (--task_spec, --matches, a student config): read the same way everywhere.

UTF-8 with or without a byte-order mark (what Windows editors save), and anything unreadable is one error line
naming the flag, the file and what is wrong, never a traceback.
"""
from __future__ import annotations

import json
from typing import Any

from bertorch.errors import UsageError


def read_json_file(path: str, flag: str, error: type[UsageError] = UsageError) -> Any:
    """The parsed JSON of `path`, given as `flag`; `error` (a UsageError kind) when it cannot be read or parsed."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except OSError as e:
        raise error(f"{flag} {path}: cannot read the file ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise error(f"{flag} {path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except json.JSONDecodeError as e:
        raise error(f"{flag} {path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
