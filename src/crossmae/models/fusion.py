"""Inter-block attention: each decoder block reads its own learned mix of encoder layers."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from crossmae.models.layers import layer_norm


class FeatureFusion(nn.Module):
    """Decoder block i reads `LN_i(sum_j W[i, j] * P_j(F_j))`.

    `W` is (decoder_depth, k) without bias; `weights="softmax"` normalises each row (paper
    Table 8); `project=True` adds a linear map `P_j` per encoder layer (Table 9), identity
    otherwise. The reference initialises W with xavier_uniform (it overwrites the paper's
    N(0, 1/k)), and so do we.
    """

    def __init__(
        self,
        num_features: int,
        decoder_depth: int,
        dim: int,
        weights: Literal["linear", "softmax"] = "linear",
        project: bool = False,
    ) -> None:
        super().__init__()
        self.normalisation = weights
        self.weight = nn.Parameter(torch.empty(decoder_depth, num_features))
        nn.init.xavier_uniform_(self.weight)
        self.norms = nn.ModuleList(layer_norm(dim) for _ in range(decoder_depth))
        self.projections = (
            nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_features)) if project else None
        )

    def mixing_matrix(self) -> torch.Tensor:
        """(decoder_depth, k) weights actually applied to the encoder layers."""
        return self.weight.softmax(dim=1) if self.normalisation == "softmax" else self.weight

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != self.weight.shape[1]:
            raise ValueError(f"fusion expects {self.weight.shape[1]} layers, got {len(features)}")
        if self.projections is not None:
            features = [proj(f) for proj, f in zip(self.projections, features, strict=True)]
        stacked = torch.stack(features, dim=0)  # (k, B, N, C)
        mixed = (self.mixing_matrix() @ stacked.flatten(1)).view(-1, *stacked.shape[1:])
        # unbind, not mixed[i]: indexing's backward would zero-fill a full copy per block
        return [norm(m) for norm, m in zip(self.norms, mixed.unbind(0), strict=True)]
