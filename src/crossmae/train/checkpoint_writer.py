"""Checkpoints written behind training: a save waits for a copy of the state, not the disk.

Pretraining writes its latest checkpoint after every epoch, and so do fine-tuning and the
linear probe (`eval.run.RunContext.save`). For a ViT-Tiny (96 MB of weights, AdamW moments
and RNG states) serializing, fsyncing and renaming takes 0.16 s on a 2-core CPU, against
epochs of a few seconds on a GPU, or less on a small data set. So a save copies what training would
change to host memory on the calling thread (a consistent snapshot: the next step changes
those tensors in place), and a thread of its own writes it. A save first waits for the
write before it, so host memory holds at most one copy of the state, and a write that
failed raises there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def storages(tensors: Iterable[torch.Tensor]) -> set[int]:
    """Where `tensors` keep their data, to tell a tensor that shares memory with them from
    a fresh copy."""
    local = (t.to_local() if hasattr(t, "to_local") else t for t in tensors)  # DTensor: shard
    return {t.untyped_storage().data_ptr() for t in local}


def live_storages(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> set[int]:
    """The storages a training step changes in place: weights, buffers, optimizer state."""
    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    return storages([*module.parameters(), *module.buffers(), *state])


def host_copy(obj: T, live: Collection[int] | None) -> T:
    """`obj` with every tensor that training could still change copied to host memory: those
    on a device, and host tensors on one of the `live` storages (None: every tensor, for a
    caller that cannot tell). Fresh host tensors (RNG states, a state gathered from shards)
    are kept as they are; the same data met twice (two state dicts of one module) is copied
    once; dicts, lists and tuples are rebuilt, other values shared."""
    return _host_copy(obj, live, {})


def _host_copy(obj: Any, live: Collection[int] | None, copies: dict[tuple, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        on_host = obj.device.type == "cpu"
        if on_host and live is not None and obj.untyped_storage().data_ptr() not in live:
            return obj
        if obj.layout != torch.strided:
            return obj.detach().to("cpu", copy=True)
        key = (obj.device, obj.untyped_storage().data_ptr(), obj.storage_offset(), obj.shape,
               obj.stride(), obj.dtype, obj.is_conj(), obj.is_neg())  # fmt: skip
        if key not in copies:
            copies[key] = obj.detach().to("cpu", copy=True)
        return copies[key]
    if isinstance(obj, dict):
        copy = obj.copy()  # the same kind of dict (a state dict's OrderedDict)
        for key, value in obj.items():
            copy[key] = _host_copy(value, live, copies)
        if hasattr(obj, "_metadata"):  # a state dict's module versions
            copy._metadata = obj._metadata  # type: ignore[attr-defined]
        return copy
    if isinstance(obj, list):
        return [_host_copy(value, live, copies) for value in obj]
    if type(obj) is tuple:
        return tuple(_host_copy(value, live, copies) for value in obj)
    return obj


class CheckpointWriter:
    """Runs writes one at a time, in the order given, each on a thread of its own.

    The threads are daemons: a second Ctrl-C stops the process at once, even mid-write
    (writes are atomic, so the file written before stays whole).
    """

    def __init__(self) -> None:
        self._done: threading.Event | None = None  # set when the write in flight has ended
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, write: Callable[[], Any]) -> None:
        """Start `write` once the previous write is done (whose error raises here)."""
        self.wait()
        done = threading.Event()

        def run() -> None:
            try:
                write()
            except BaseException as err:  # handed to the training thread by wait()
                self._error = err
            finally:
                done.set()

        thread = threading.Thread(target=run, name="checkpoint-writer", daemon=True)
        thread.start()
        self._thread, self._done = thread, done  # once started: never waited for otherwise

    def wait(self) -> None:
        """Return once the write in flight is done; its error raises here, once."""
        self.close()
        error, self._error = self._error, None
        if error is not None:
            raise error

    def close(self) -> None:
        """Let the write in flight finish, keeping its error to itself (for `finally`,
        where the error already on its way is the one to report). Waits on an event, not
        `Thread.join` alone: a join cut short by Ctrl-C leaves the thread counted as ended
        (Python 3.11), and the next join would return while the write goes on. The join
        after it, with the write done, leaves no thread behind for a fork."""
        if self._done is not None and self._thread is not None:
            self._done.wait()
            self._thread.join()
        self._done = self._thread = None

    def abandon(self) -> None:
        """Leave the write in flight to itself (the process is stopping at once)."""
        self._done = self._thread = None
        self._error = None
