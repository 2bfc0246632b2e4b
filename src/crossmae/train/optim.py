"""AdamW with MAE's parameter groups, and an update that skips non-finite gradients."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

# Parameters that are embeddings rather than weights: never decayed, whatever their shape.
NO_DECAY_NAMES = ("cls_token", "mask_token", "dist_token", "reg_token", "pos_embed")


def decays(name: str, param: torch.Tensor) -> bool:
    """Weight decay applies to matrices and kernels, not to norms, biases, tokens or positions."""
    leaf = name.rsplit(".", 1)[-1]
    return param.ndim > 1 and leaf != "bias" and leaf not in NO_DECAY_NAMES


def param_groups(
    model: nn.Module,
    weight_decay: float,
    lr_scale: Callable[[str], float] | None = None,
) -> list[dict[str, Any]]:
    """Optimizer groups of the trainable parameters, split by (decayed?, lr scale).

    `lr_scale(name)` (e.g. layer-wise decay) is stored as `lr_scale` in each group; the
    training loop sets `group["lr"] = lr * group["lr_scale"]`.
    """
    groups: dict[tuple[bool, float], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = decays(name, param)
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

    Fused optimizers read the flag on the device (as under a GradScaler), so the skip costs no
    host synchronisation; others fall back to reading it.
    """
    if getattr(optimizer, "_step_supports_amp_scaling", False) and all(
        g.get("fused") for g in optimizer.param_groups
    ):
        optimizer.found_inf = found_inf  # type: ignore[attr-defined]
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf  # type: ignore[attr-defined]
    elif not found_inf.item():
        optimizer.step()
