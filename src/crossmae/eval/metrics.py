"""Top-k accuracy counted so it can be summed across batches and processes."""

from __future__ import annotations

import torch


def topk_correct(
    logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5)
) -> torch.Tensor:
    """Number of samples whose target is among the k highest scores, for each k, as a tensor
    on the logits' device (summing it over batches needs no host synchronisation).

    k larger than the class count is clamped (top-5 of 3 classes counts every sample).
    """
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == targets.view(-1, 1)
    return torch.stack([hits[:, : min(k, hits.shape[1])].any(dim=1).sum() for k in ks])
