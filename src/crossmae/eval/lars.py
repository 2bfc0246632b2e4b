"""LARS (You et al., 2017) as MAE uses it for linear probing with very large batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose step for each weight matrix is rescaled by a trust ratio.

    For parameters with more than one dimension the update `g + wd * p` is multiplied by
    `trust_coefficient * ||p|| / ||g + wd * p||`, so each layer moves by a fixed fraction of
    its own norm whatever the gradient scale. Biases and norm parameters (1-D) get plain
    momentum SGD without weight decay. Same update as MAE's `util/lars.py`.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.0,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        trust_coefficient: float = 0.001,
    ) -> None:
        if lr < 0 or weight_decay < 0 or not 0 <= momentum < 1 or trust_coefficient <= 0:
            raise ValueError("LARS needs lr >= 0, weight_decay >= 0, 0 <= momentum < 1, trust > 0")
        defaults = {
            "lr": lr, "weight_decay": weight_decay, "momentum": momentum,
            "trust_coefficient": trust_coefficient,
        }  # fmt: skip
        super().__init__(params, defaults)

    # Skips a step and unscales gradients on the device, like the fused AdamW: a GradScaler
    # (or `step_unless_nonfinite`) sets `found_inf` / `grad_scale` before calling `step`.
    _step_supports_amp_scaling = True

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        found_inf = getattr(self, "found_inf", None)
        grad_scale = getattr(self, "grad_scale", None)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad if grad_scale is None else p.grad / grad_scale
                if p.ndim > 1:
                    update = update.add(p, alpha=group["weight_decay"])
                    p_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                    ratio = group["trust_coefficient"] * p_norm / u_norm
                    trusted = (p_norm > 0) & (u_norm > 0)
                    update = update * torch.where(trusted, ratio, torch.ones_like(ratio))
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                if found_inf is None:
                    mu.mul_(group["momentum"]).add_(update)
                    p.add_(mu, alpha=-group["lr"])
                else:  # where, not a product: a skipped update may hold inf or NaN
                    skip = found_inf.to(torch.bool)
                    mu.copy_(torch.where(skip, mu, mu * group["momentum"] + update))
                    p.add_(torch.where(skip, torch.zeros_like(mu), mu), alpha=-group["lr"])
        return loss
