"""AdamW with MAE's parameter groups, and an update that skips non-finite gradients."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Any

import torch
from torch import nn


def decays(name: str, param: torch.Tensor, no_decay: Collection[str] = ()) -> bool:
    """timm's rule, which the authors' code uses: matrices and kernels are decayed; 1-D
    parameters (norms), biases and the names in `no_decay` are not."""
    return param.ndim > 1 and not name.endswith(".bias") and name not in no_decay


def param_groups(
    model: nn.Module,
    weight_decay: float,
    lr_scale: Callable[[str], float] | None = None,
    no_decay: Collection[str] = (),
) -> list[dict[str, Any]]:
    """Optimizer groups of the trainable parameters, split by (decayed?, lr scale).

    Pretraining exempts nothing beyond `decays`' rule, so its cls and mask tokens are decayed
    (the authors' `param_groups_weight_decay(model, wd)`); fine-tuning passes timm's
    `vit.no_weight_decay()` (position embedding, [CLS]), as MAE's `param_groups_lrd`.
    `lr_scale(name)` (e.g. layer-wise decay) is stored as `lr_scale` in each group; the
    training loop sets `group["lr"] = lr * group["lr_scale"]`.
    """
    groups: dict[tuple[bool, float], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = decays(name, param, no_decay)
        scale = 1.0 if lr_scale is None else float(lr_scale(name))
        group = groups.setdefault(
            (decay, scale),
            {"params": [], "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale},
        )
        group["params"].append(param)
    return list(groups.values())


def build_adamw(
    groups: Iterable[dict[str, Any]],
    lr: float,
    betas: tuple[float, float],
    device: torch.device | str,
) -> torch.optim.AdamW:
    """AdamW, fused into one kernel per step on CUDA and CPU (faster, and it can skip a step
    on the device; see `step_unless_nonfinite`)."""
    fused = torch.device(device).type in ("cuda", "cpu")
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def step_unless_nonfinite(optimizer: torch.optim.Optimizer, found_inf: torch.Tensor) -> None:
    """`optimizer.step()` unless `found_inf` (a 0-d float tensor, 1 = skip).

    Optimizers that take a GradScaler's flag themselves (the fused AdamW, our LARS) read it on
    the device, so the skip costs no host synchronisation; others fall back to reading it.
    """
    if getattr(optimizer, "_step_supports_amp_scaling", False):
        optimizer.found_inf = found_inf  # type: ignore[attr-defined]
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf  # type: ignore[attr-defined]
    elif not found_inf.item():
        optimizer.step()
