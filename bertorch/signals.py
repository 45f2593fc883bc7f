"""A clean stop on SIGTERM and SIGINT: what SLURM, Kubernetes, spot preemption and Ctrl-C send.

Inside `StopSignals()` the first of these signals is only recorded; the trainer reads the record at the next
optimisation step (agreed across ranks), finishes that step, writes a resumable checkpoint and exits with
128 + the signal number, as a killed process would. A second signal acts as it would have without us (SIGINT
raises KeyboardInterrupt, SIGTERM kills), so an impatient user can still stop a run that hangs. Handlers can
only be installed from the main thread; elsewhere (e.g. the Python API called from a worker thread) the
signals keep their usual meaning.
"""
from __future__ import annotations

import signal
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._record) for s in STOP_SIGNALS}
        return self

    def _record(self, signum: int, frame) -> None:
        self.received = signum
        self._restore()  # a second signal: the usual behaviour

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def __exit__(self, *exc) -> None:
        self._restore()

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else ""


class TrainingStopped(SystemExit):
    """A run stopped by a signal after writing its checkpoint: exits with 128 + the signal number."""

    def __init__(self, signum: int, message: str):
        super().__init__(128 + signum)
        self.message = message
