"""Learning-rate rules shared by pretraining, fine-tuning and probing (MAE's conventions)."""

from __future__ import annotations

import math

from crossmae.errors import CrossMAEError


def lr_at(
    step: float,
    *,
    base_lr: float,
    warmup_steps: float,
    total_steps: float,
    min_lr: float = 0.0,
) -> float:
    """The learning rate at optimizer step `step` (fractional steps allowed; any unit will
    do, as long as the three agree: pretraining counts in fractional epochs, as MAE does).

    Linear warmup from 0 to `base_lr` over `warmup_steps`, then a half cosine down to
    `min_lr` at `total_steps`, held there afterwards. Set per iteration, not per epoch.
    """
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    decay_steps = total_steps - warmup_steps
    progress = 1.0 if decay_steps <= 0 else min((step - warmup_steps) / decay_steps, 1.0)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def scaled_lr(
    blr: float,
    effective_batch: int,
    mask_ratio: float | None = None,
    prediction_ratio: float | None = None,
) -> float:
    """`blr * effective_batch / 256`, times γ/p when both ratios are given.

    The γ/p factor is CrossMAE's: decoding only a fraction γ of the patches scales the
    gradient down, so the paper scales the learning rate by the same amount.
    """
    lr = blr * effective_batch / 256
    if mask_ratio is not None and prediction_ratio is not None:
        lr *= prediction_ratio / mask_ratio
    return lr


def check_schedule(
    epochs: float, warmup_epochs: float, lr: float | None, blr: float, min_lr: float
) -> None:
    """The schedule settings every training command shares; CrossMAEError names the bad one."""
    if not 0 <= warmup_epochs <= epochs:
        raise CrossMAEError(
            f"--warmup-epochs must be between 0 and --epochs {epochs}, got {warmup_epochs}"
        )
    if (lr if lr is not None else blr) <= 0 or min_lr < 0:
        raise CrossMAEError("learning rates must be positive")
    if lr is not None:
        check_min_lr(min_lr, lr)


def check_min_lr(min_lr: float, lr: float) -> None:
    """The cosine decays from `lr` to `min_lr`; the other way round it would rise."""
    if min_lr > lr:
        raise CrossMAEError(
            f"--min-lr {min_lr:g} is above the learning rate {lr:.3g}: the cosine would rise"
        )
