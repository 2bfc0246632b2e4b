"""Position embeddings for a new image size: bicubic resampling of the patch grid."""

from __future__ import annotations

import torch
from timm.layers import resample_abs_pos_embed


def resample_pos_embed(
    pos_embed: torch.Tensor,
    old_grid: tuple[int, int],
    new_grid: tuple[int, int],
    num_prefix_tokens: int = 1,
) -> torch.Tensor:
    """(1, prefix + old_h*old_w, D) -> (1, prefix + new_h*new_w, D).

    Delegates to timm so fine-tuning at 448 px (or on a non-square grid) places positions
    exactly as timm does when it loads a checkpoint; the [CLS] row is kept as it is.
    Grids are passed explicitly because a non-square grid cannot be read off the length.
    """
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    expected = num_prefix_tokens + old_grid[0] * old_grid[1]
    if pos_embed.shape[1] != expected:
        raise ValueError(
            f"position embedding has {pos_embed.shape[1]} rows, expected {expected} for "
            f"a {old_grid[0]}x{old_grid[1]} grid and {num_prefix_tokens} prefix token(s)"
        )
    return resample_abs_pos_embed(
        pos_embed, new_size=list(new_grid), old_size=list(old_grid),
        num_prefix_tokens=num_prefix_tokens,
    )  # fmt: skip
