"""MAE's linear-probe head: a BatchNorm without affine parameters, then a linear layer."""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import trunc_normal_
from torch import nn


class CumulativeBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d(momentum=None): running statistics that average every batch seen, with
    the count kept on the host. torch's own reads `float(num_batches_tracked)` each training
    step, a device-to-host sync that stalls the GPU's queue; momentum 1/n is the same sum."""

    def __init__(self, num_features: int, eps: float) -> None:
        super().__init__(num_features, eps=eps, affine=False, momentum=1.0)
        self._seen: int | None = None  # batches averaged; read from the buffer once

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            if self._seen is None:
                self._seen = int(self.num_batches_tracked)
            self._seen += 1
            self.momentum = 1.0 / self._seen
        return super().forward(x)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._seen = None  # a resumed probe goes on counting from its checkpoint's buffer
        super()._load_from_state_dict(*args, **kwargs)


class LinearProbe(nn.Sequential):
    """BatchNorm1d(affine=False, eps=1e-6) + Linear, weight ~ N(0, 0.01) truncated, bias 0.

    The BatchNorm only standardises each feature, so the probe stays linear in the frozen
    features (it folds into the linear layer at test time) while features of very
    different scales, such as un-normalised CrossMAE tokens, train at one learning rate.
    Its test-time statistics are a cumulative average (as `momentum=None`) rather than MAE's
    exponential one: the encoder is frozen, so the feature distribution never moves and
    the average is exact after one epoch, where momentum 0.1 needs far more steps than a
    small data set has (and leaves the probe guessing from the initial statistics).
    """

    def __init__(self, num_features: int, num_classes: int) -> None:
        linear = nn.Linear(num_features, num_classes)
        trunc_normal_(linear.weight, std=0.01)
        nn.init.zeros_(linear.bias)
        norm = CumulativeBatchNorm(num_features, eps=1e-6)
        super().__init__(norm, linear)


class FrozenEncoderProbe(nn.Module):
    """A frozen feature extractor (kept in eval mode, run without gradients) + a probe head."""

    def __init__(self, extractor: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor.eval().requires_grad_(False)
        self.head = head

    def train(self, mode: bool = True) -> FrozenEncoderProbe:
        super().train(mode)
        self.extractor.eval()  # drop path / dropout stay off, as in a frozen encoder
        return self

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.extractor(imgs)
        return self.head(features.float())
