"""Position embeddings for a new image size: bicubic resampling of the patch grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resample_pos_embed(
    pos_embed: torch.Tensor,
    old_grid: tuple[int, int],
    new_grid: tuple[int, int],
    num_prefix_tokens: int = 1,
) -> torch.Tensor:
    """(1, prefix + old_h*old_w, D) -> (1, prefix + new_h*new_w, D).

    MAE's `util/pos_embed.interpolate_pos_embed` (which CrossMAE's fine-tuning imports):
    plain bicubic, `align_corners=False`, the [CLS] row kept as it is, so fine-tuning at
    448 px starts from the table the paper's did. timm's `resample_abs_pos_embed` is
    antialiased by default, a different cubic kernel even when upsampling (up to 0.05 off
    on a 14 -> 28 sin-cos table). Grids are passed explicitly because a non-square grid
    cannot be read off the length.
    """
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    expected = num_prefix_tokens + old_grid[0] * old_grid[1]
    if pos_embed.shape[1] != expected:
        raise ValueError(
            f"position embedding has {pos_embed.shape[1]} rows, expected {expected} for "
            f"a {old_grid[0]}x{old_grid[1]} grid and {num_prefix_tokens} prefix token(s)"
        )
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = grid.shape[-1]
    wide = pos_embed.dtype in (torch.float32, torch.float64)  # else bicubic in float32
    grid = grid.reshape(-1, *old_grid, dim).permute(0, 3, 1, 2)
    grid = grid if wide else grid.float()
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).flatten(1, 2).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)
