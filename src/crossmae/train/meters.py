"""What the steps between two log lines add up to, summed on the device: reading a tensor
waits for the GPU, so the step never does; `read` does, once per log line."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from crossmae.train.distributed import all_reduce_max, all_reduce_mean
from crossmae.train.step import StepResult


@dataclass(frozen=True)
class MeterReading:
    """One logging interval, agreed across processes (loss mean over them, counts max)."""

    steps: int
    seconds: float
    loss: float | None  # mean over the steps whose loss and gradient were finite (None: none)
    grad_norm: float | None  # this process's, over the same steps
    nonfinite: int  # steps skipped in this interval
    worst_streak: int  # the longest run of diverged steps, counted across intervals


class StepMeters:
    """Loss and gradient-norm sums, skipped steps, and the current run of diverged steps
    (which carries over from one interval to the next, so a divergence that spans a log
    line still stops the run)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.streak = torch.zeros((), device=device)
        self.reset()

    def reset(self) -> None:
        """Start a new interval (now: images/s counts from here)."""
        zero = torch.zeros((), device=self.device)
        self.loss_sum, self.norm_sum, self.nonfinite = zero.clone(), zero.clone(), zero.clone()
        self.worst_streak = self.streak.clone()
        self.steps = 0
        self.started = time.perf_counter()

    def restart_clock(self) -> None:
        """Leave out of images/s the time since the last step (an epoch's end: its
        evaluation, figures and checkpoint)."""
        self.started = time.perf_counter()

    def count(self, result: StepResult) -> None:
        finite = 1.0 - result.nonfinite
        self.loss_sum += torch.nan_to_num(result.loss) * finite
        self.norm_sum += torch.nan_to_num(result.grad_norm) * finite
        self.steps += 1
        self.streak = self.streak * result.diverged + result.diverged
        self.worst_streak = torch.maximum(self.worst_streak, self.streak)
        self.nonfinite += result.nonfinite

    def read(self) -> MeterReading:
        """The interval so far (a host sync, and a collective under torchrun: every
        process must call it at the same step)."""
        nonfinite, worst = all_reduce_max(torch.stack([self.nonfinite, self.worst_streak])).tolist()
        loss_sum = all_reduce_mean(self.loss_sum).item()
        good = self.steps - int(nonfinite)
        return MeterReading(
            steps=self.steps,
            seconds=time.perf_counter() - self.started,
            loss=loss_sum / good if good > 0 else None,
            grad_norm=self.norm_sum.item() / good if good > 0 else None,
            nonfinite=int(nonfinite),
            worst_streak=int(worst),
        )
