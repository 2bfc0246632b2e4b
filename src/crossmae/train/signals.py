"""Stop cleanly on SIGINT / SIGTERM: finish the step, save a checkpoint, then exit.

Cluster schedulers send SIGTERM before killing a job; Ctrl-C sends SIGINT. The first
signal only sets a flag that the training loop checks between steps; a second one stops
the process at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any

from crossmae.errors import Terminated

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class GracefulStop:
    """Context manager; `requested` is the signal number received, or None."""

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in EXIT_CODES:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:  # a second signal: stop now
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            raise KeyboardInterrupt
        self.requested = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.requested).name if self.requested else ""

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.requested, 0) if self.requested else 0


@contextmanager
def terminated_raises() -> Iterator[None]:
    """SIGTERM raises `Terminated` (a KeyboardInterrupt) inside, as Ctrl-C does: for loops
    that checkpoint once an epoch and have nothing to finish first."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupt_on_terminate(worker_id: int) -> None:
    """A DataLoader worker's init where the main process stops at once (`terminated_raises`):
    SIGTERM ends the worker quietly, as Ctrl-C does. Killed by the signal instead, it would
    make torch raise "worker killed by signal" in the main process, over its own message."""
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # torch's worker loop ends on it without a word


def ignore_stop_signals(worker_id: int) -> None:
    """A DataLoader worker's init: schedulers (SLURM, Kubernetes, docker stop) signal every
    process of a job, and a worker killed by that SIGTERM would crash the main process's
    save; the main process stops its workers itself once it has saved."""
    for sig in EXIT_CODES:
        signal.signal(sig, signal.SIG_IGN)
