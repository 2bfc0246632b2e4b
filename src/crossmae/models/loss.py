"""Pixel reconstruction loss: MSE against (optionally per-patch normalised) target patches."""

from __future__ import annotations

import torch

from crossmae.models.patchify import normalize_patches


def reconstruction_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    norm_pix_loss: bool,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error, computed in at least float32 (bf16 predictions are upcast).

    pred, target: (B, n, D). Without `weight`, the mean over every element (CrossMAE: only
    decoded patches are predicted). With `weight` (B, n), the per-patch error averaged over
    the patches where it is 1 (MAE: every patch is predicted, masked ones are scored).
    """
    dtype = torch.promote_types(pred.dtype, torch.float32)
    target = target.to(dtype)
    if norm_pix_loss:
        target = normalize_patches(target)
    err = (pred.to(dtype) - target) ** 2
    if weight is None:
        return err.mean()
    err = err.mean(dim=-1)
    return (err * weight).sum() / weight.sum()
