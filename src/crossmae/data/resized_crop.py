"""RandomResizedCrop + horizontal flip for a whole batch at once, on the batch's device.

Pure tensor functions with static shapes and no host syncs, so an in-memory data set can
augment on the GPU. Crop boxes follow torchvision's sampling (10 tries of area and log
aspect ratio, then a centre-crop fallback); resampling is bicubic like the MAE recipe.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sample_resized_crops(
    n: int,
    height: int,
    width: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> torch.Tensor:
    """(n, 4) crop boxes `top, left, h, w` (integer-valued floats) on the generator's device."""
    device = generator.device
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    target = area * _uniform((n, attempts), scale[0], scale[1], generator)
    aspect = torch.exp(_uniform((n, attempts), log_lo, log_hi, generator))
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = valid.int().argmax(dim=1, keepdim=True)  # first valid attempt (0 when none)
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    found = valid.any(dim=1)
    fall_h, fall_w = _center_fallback(height, width, ratio)
    h = torch.where(found, h, torch.full_like(h, fall_h))
    w = torch.where(found, w, torch.full_like(w, fall_w))
    u = torch.rand((n, 2), generator=generator, device=device)
    top = torch.where(found, torch.floor(u[:, 0] * (height - h + 1)), (height - h) // 2)
    left = torch.where(found, torch.floor(u[:, 1] * (width - w + 1)), (width - w) // 2)
    return torch.stack([top, left, h, w], dim=1)


def _uniform(shape: tuple[int, int], low: float, high: float, generator: torch.Generator):
    return torch.rand(shape, generator=generator, device=generator.device) * (high - low) + low


def _center_fallback(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """torchvision's crop when no attempt fits: the whole image, aspect clamped to `ratio`."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        return round(width / min(ratio)), width
    if in_ratio > max(ratio):
        return height, round(height * max(ratio))
    return height, width


def resized_crop(
    images: torch.Tensor,
    boxes: torch.Tensor,
    size: tuple[int, int],
    flip: torch.Tensor | None = None,
) -> torch.Tensor:
    """Crop `boxes` (B, 4: top, left, h, w) of `images` (B, C, H, W), resize to `size`.

    Bicubic (a = -0.75, as F.interpolate) through one affine `grid_sample`, flipped
    horizontally where `flip`; returns float in the input's value range, clamped to 0-255
    for uint8 input. Samples near a crop edge read the real neighbouring pixels.
    """
    batch, chans, height, width = images.shape
    top, left, h, w = boxes.to(images.device, torch.float32).unbind(1)
    sx, sy = w / width, h / height
    if flip is not None:
        sx = torch.where(flip.to(images.device), -sx, sx)
    zero = torch.zeros_like(sx)
    theta = torch.stack([
        torch.stack([sx, zero, (2 * left + w) / width - 1], dim=1),
        torch.stack([zero, sy, (2 * top + h) / height - 1], dim=1),
    ], dim=1)  # fmt: skip
    grid = F.affine_grid(theta, [batch, chans, *size], align_corners=False)
    out = F.grid_sample(
        images.float(), grid, mode="bicubic", padding_mode="border", align_corners=False
    )
    return out.clamp_(0, 255) if images.dtype == torch.uint8 else out
