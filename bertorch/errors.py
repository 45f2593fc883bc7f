"""The project's own error types: user mistakes whose message says what is wrong and what to do.

The CLI prints these as one line (no traceback) and exits; anything else is a bug and keeps its traceback.
They are ValueErrors, so library callers that catch ValueError keep working. `DataError` (a bad data file, named
with its line and value) and `OnnxError` (an export or graph that cannot be used) are kinds of `UsageError`.
"""
import contextlib


class UsageError(ValueError):
    """A flag, a flag combination, a file or a model that cannot work; the message names it."""


class ModelError(UsageError):
    """A model path or checkpoint that cannot be used; the message says which and why."""


@contextlib.contextmanager
def reported_errors(*also: type[BaseException]):
    """A user's mistake (a UsageError, or one of the `also` kinds, e.g. a diverged run) becomes one log line and
    `SystemExit("error: ...")`; any other exception is a bug and keeps its traceback. Every entry script, training
    or inference, ends its errors here, so they read the same."""
    try:
        yield
    except (UsageError, *also) as e:
        from loguru import logger

        logger.error(str(e))
        raise SystemExit(f"error: {e}") from None
