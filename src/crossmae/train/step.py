"""One optimizer update: accumulate micro-batches, clip, skip non-finite updates, no sync.

Generic over the loss (the caller gives the micro-batch inputs and a function from an
input to a scalar loss): pretraining, fine-tuning and the linear probe (`eval/loop.py`,
which adds mixup and an EMA around it) all update through it, and
`profiling.measure_step` times the same work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

from crossmae.train.optim import step_unless_nonfinite
from crossmae.train.precision import Precision, autocast_context, grad_scaler

T = TypeVar("T")


@dataclass
class StepResult:
    """Device tensors (read them only at logging intervals: reading one waits for the GPU)."""

    loss: torch.Tensor  # mean loss over the micro-batches
    grad_norm: torch.Tensor  # total gradient norm before clipping
    nonfinite: torch.Tensor  # 1.0 when the loss or the gradient was not finite: no update
    # 1.0 when the step counts towards stopping the run: the same, except in fp16, where an
    # overflowing gradient is the loss scaler's to handle (it lowers its scale and skips)
    diverged: torch.Tensor


class OptimizerStep:
    """Forward/backward `accum_iter` micro-batches under autocast, then one update.

    Gradients are synchronised across processes only on the last micro-batch (DDP
    `no_sync`, FSDP2 `set_requires_gradient_sync`). A non-finite gradient skips the update
    on the device (fused AdamW reads the flag, as under a GradScaler); in fp16 the scaler
    does the skipping and lowers its scale.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        device: torch.device,
        precision: Precision,
        accum_iter: int = 1,
        clip_grad: float | None = None,
    ) -> None:
        self.model, self.optimizer = model, optimizer
        self.device, self.precision = device, precision
        self.accum_iter, self.clip_grad = accum_iter, clip_grad
        self.scaler = grad_scaler(device, precision)
        self.params = [p for p in model.parameters() if p.requires_grad]

    def __call__(self, inputs: Iterable[T], loss_fn: Callable[[T], torch.Tensor]) -> StepResult:
        total = torch.zeros((), device=self.device)
        count = 0
        for i, batch in enumerate(inputs):
            with self._gradient_sync(i == self.accum_iter - 1):
                with autocast_context(self.device, self.precision):
                    loss = loss_fn(batch)
                scaled = loss / self.accum_iter
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            total += loss.detach().float()
            count += 1
        if count != self.accum_iter:  # a short group: the wrong scale, and under DDP no sync
            self.optimizer.zero_grad(set_to_none=True)
            raise ValueError(f"a step got {count} micro-batches, not accum_iter={self.accum_iter}")
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        norm = grad_norm(self.params, self.clip_grad)
        nonfinite = (~torch.isfinite(norm) | ~torch.isfinite(total)).float()
        if self.scaler is not None:  # it skips the update itself when the gradient overflowed
            self.scaler.step(self.optimizer)
            self.scaler.update()
            diverged = (~torch.isfinite(total)).float()
        else:
            step_unless_nonfinite(self.optimizer, nonfinite)
            diverged = nonfinite
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(total / self.accum_iter, norm, nonfinite, diverged)

    def _gradient_sync(self, sync: bool) -> AbstractContextManager:
        if sync:
            if hasattr(self.model, "set_requires_gradient_sync"):
                self.model.set_requires_gradient_sync(True)
            return nullcontext()
        if hasattr(self.model, "no_sync"):  # DDP
            return self.model.no_sync()
        if hasattr(self.model, "set_requires_gradient_sync"):  # FSDP2
            self.model.set_requires_gradient_sync(False)
        return nullcontext()


def grad_norm(params: list[nn.Parameter], clip_grad: float | None = None) -> torch.Tensor:
    """The total gradient norm, on the device (clipping to `clip_grad` on the way, if set)."""
    if clip_grad is not None:
        norm = nn.utils.clip_grad_norm_(params, clip_grad, foreach=True)
    else:
        norm = nn.utils.get_total_norm([p.grad for p in params if p.grad is not None],
                                       foreach=True)  # fmt: skip
    full_tensor = getattr(norm, "full_tensor", None)  # a DTensor under FSDP2
    return (full_tensor() if full_tensor else norm).float()
