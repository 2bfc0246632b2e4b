"""The plumbing every evaluation run shares: processes, device, precision, output files."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from crossmae.errors import CrossMAEError
from crossmae.eval.results import write_results
from crossmae.eval.settings import EvalSettings, TrainedSettings
from crossmae.serialization import atomic_torch_save, unwritten
from crossmae.train.batches import derive_seed
from crossmae.train.checkpoint_writer import CheckpointWriter, host_copy
from crossmae.train.checkpointing import restore_rng, seed_everything
from crossmae.train.distributed import DistInfo, cleanup_distributed, init_distributed
from crossmae.train.logging import RunLogger
from crossmae.train.precision import Precision, autocast_context, resolve_precision
from crossmae.train.signals import terminated_raises


@dataclass
class RunContext:
    """One run's process group, device, precision and output folder; rank 0 writes files."""

    dist: DistInfo
    precision: Precision
    output_dir: Path
    seed: int = 0
    tensorboard: bool = False
    _logger: RunLogger | None = field(default=None, repr=False)
    _writes: CheckpointWriter = field(default_factory=CheckpointWriter, repr=False)

    @classmethod
    def start(cls, settings: EvalSettings, output_dir: Path) -> RunContext:
        dist = init_distributed(settings.device)
        seed_everything(settings.seed + dist.rank)
        precision = resolve_precision(settings.precision, dist.device)
        tensorboard = isinstance(settings, TrainedSettings) and settings.tensorboard
        return cls(dist, precision, output_dir, settings.seed, tensorboard)

    def resume_rng(self, state: dict[str, Any], epoch: int) -> None:
        """Rank 0 continues the random streams its checkpoint saved. The other ranks' were
        not saved, so they start fresh ones of their own: given rank 0's, every rank would
        draw the same mixup boxes and augmentations from then on."""
        if self.dist.rank == 0:
            restore_rng(state, {})
        else:
            seed_everything(derive_seed(self.seed, self.dist.rank, epoch))

    @property
    def device(self) -> torch.device:
        return self.dist.device

    @property
    def device_ids(self) -> list[int] | None:
        """For DistributedDataParallel: the local GPU, or None on CPUs."""
        return [self.device.index] if self.device.type == "cuda" else None

    def autocast(self) -> AbstractContextManager:
        return autocast_context(self.device, self.precision)

    def logger(self, total_steps: int, initial_step: int = 0) -> RunLogger:
        """log.jsonl, TensorBoard and the progress bar (created on first use, rank 0 only)."""
        if self._logger is None:
            self._logger = RunLogger(
                self.output_dir, enabled=self.dist.is_main, total_steps=total_steps,
                initial_step=initial_step, tensorboard=self.tensorboard,
            )  # fmt: skip
        return self._logger

    def say(self, text: str) -> None:
        if self._logger is not None:
            self._logger.message(text)
        elif self.dist.is_main:
            print(text, flush=True)

    def log_epoch(self, record: dict[str, Any], step: int, line: str) -> None:
        if self._logger is not None:
            self._logger.log(record, step)
        self.say(line)

    def save(self, files: dict[str, Any], *, behind: bool = True) -> None:
        """Write each object to its file name in the output folder, in this order, rank 0
        alone. Behind the run: this waits for the write before it (a failed one raises
        here; the last is waited for by `finish`) and for a host copy of `files`, not for
        the disk (`train.checkpoint_writer`). `behind=False`: written before returning (a
        file named right after, with nothing to overlap)."""
        if not self.dist.is_main:
            return
        self._writes.wait()  # first: host memory holds one copy at a time
        if behind:
            self._writes.submit(partial(self._write, host_copy(files, None)))
        else:
            self._write(files)

    def _write(self, files: dict[str, Any]) -> None:
        for name, obj in files.items():
            try:
                atomic_torch_save(obj, self.output_dir / name)
            except OSError as err:
                raise unwritten(self.output_dir / name, err) from None

    @contextmanager
    def resumable(self, last: str) -> Iterator[None]:
        """On Ctrl-C or SIGTERM, say that the last finished epoch is saved and how to go on
        from it (the epoch under way is lost: the protocols checkpoint once an epoch)."""
        with terminated_raises():
            try:
                yield
            except KeyboardInterrupt:
                self._wait_for_the_last_epoch()
                if (self.output_dir / last).is_file():
                    self.say(
                        f"stopped; {self.output_dir / last} holds the last finished epoch: "
                        "run the same command with --resume auto to go on from it"
                    )
                raise

    def _wait_for_the_last_epoch(self) -> None:
        """The write under way finishes before a stop says where the last epoch is (one that
        failed is what to report, not the stop); a second Ctrl-C stops at once."""
        try:
            self._writes.wait()
        except KeyboardInterrupt:
            self._writes.abandon()  # atomic writes: the file before it stays whole
            raise

    def finish(self, table: str, results: dict[str, Any], name: str) -> None:
        """Print the result table and write it as JSON into the output folder."""
        if self.dist.is_main:
            self._writes.wait()  # the checkpoints first: results name them
            path = write_results(self.output_dir / name, results)
            self.say(f"{table}\nwrote {path}")

    def close(self) -> None:
        self._writes.close()  # on the way out with an error: the write under way finishes
        if self._logger is not None:
            self._logger.close()
        cleanup_distributed()

    def __enter__(self) -> RunContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_same_checkpoint(path: Path, saved: str | None, checkpoint: str) -> None:
    """A resumed run goes on with the model it started from: an output folder is named by
    the checkpoint's name, which two models can share."""
    if saved is not None and Path(saved).resolve() != Path(checkpoint).resolve():
        raise CrossMAEError(
            f"{path} continues a run on {saved}, not on {checkpoint}; resume it with that "
            "--checkpoint, or choose another --output-dir"
        )


def resume_path(resume: str | None, last: Path) -> Path | None:
    """None: start fresh, where no run is yet; 'auto': `last` if it exists; otherwise the
    path given, which must."""
    if resume is None:
        if last.is_file():
            raise CrossMAEError(
                f"{last.parent} already holds a run; pass --resume auto to continue it, or "
                "choose another --output-dir"
            )
        return None
    if resume == "auto":
        return last if last.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise CrossMAEError(f"--resume {path} does not exist")
    return path


def spent_seconds(history: list[dict[str, Any]]) -> float:
    """Wall seconds the epochs in `history` took, so a resumed run reports its whole time
    (0 for a fresh run, or for a checkpoint written before epochs recorded their time)."""
    return float(history[-1].get("seconds", 0.0)) if history else 0.0
