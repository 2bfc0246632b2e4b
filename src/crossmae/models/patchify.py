"""Images <-> sequences of flattened patches, in MAE's (row, col, channel) order per patch."""

from __future__ import annotations

import torch


def patchify(imgs: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/p * W/p, p*p*C); patches in raster order."""
    b, c, h, w = imgs.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not divisible by the patch size {p}")
    x = imgs.reshape(b, c, h // p, p, w // p, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(x: torch.Tensor, patch_size: int, grid_size: tuple[int, int]) -> torch.Tensor:
    """(B, gh*gw, p*p*C) -> (B, C, gh*p, gw*p); inverse of `patchify`."""
    b, length, dim = x.shape
    gh, gw = grid_size
    p = patch_size
    c = dim // (p * p)
    if gh * gw != length or c * p * p != dim:
        raise ValueError(
            f"cannot unpatchify {tuple(x.shape)} into a {gh}x{gw} grid of {p}-px patches"
        )
    x = x.reshape(b, gh, gw, p, p, c)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(b, c, gh * p, gw * p)


def normalize_patches(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-patch standardisation used by `norm_pix_loss` (unbiased variance, as MAE)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps) ** 0.5
