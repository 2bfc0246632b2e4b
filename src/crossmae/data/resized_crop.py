"""RandomResizedCrop + horizontal flip for a whole batch at once, on the batch's device.

Pure tensor functions with static shapes and no host syncs, so an in-memory data set can
augment on the GPU. Crop boxes follow torchvision's sampling (10 tries of area and log
aspect ratio, then a centre-crop fallback); resampling is PIL's bicubic, as the MAE recipe
applies it to PIL images.
"""

from __future__ import annotations

import math

import torch


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

    What torchvision's RandomResizedCrop does to a PIL image, the MAE recipe's input: crop,
    then PIL's separable bicubic (a = -0.5, widened when shrinking) over the crop's own
    pixels, flipped horizontally where `flip`. Two batched matrix products per batch;
    returns float in the input's value range, clamped to 0-255 for uint8 input.
    """
    top, left, h, w = boxes.to(images.device, torch.float32).unbind(1)
    rows = _bicubic_weights(top, h, images.shape[-2], size[0])  # (B, out_h, H)
    cols = _bicubic_weights(left, w, images.shape[-1], size[1])  # (B, out_w, W)
    if flip is not None:
        cols = torch.where(flip.to(images.device)[:, None, None], cols.flip(1), cols)
    out = rows[:, None] @ images.float() @ cols.transpose(1, 2)[:, None]
    return out.clamp_(0, 255) if images.dtype == torch.uint8 else out


def _bicubic_weights(
    start: torch.Tensor, length: torch.Tensor, full: int, out: int
) -> torch.Tensor:
    """(B, out, full): output pixel i of each crop [start, start + length) as a weighted sum
    of the input pixels, PIL's resampling weights (they sum to one over the crop)."""
    scale = length / out  # input pixels per output pixel
    widen = scale.clamp(min=1.0)[:, None, None]  # antialiasing: a wider kernel when shrinking
    centres = (torch.arange(out, device=start.device) + 0.5) * scale[:, None]  # crop coords
    inside = torch.arange(full, device=start.device)[None, None] - start[:, None, None]
    weights = _cubic((inside + 0.5 - centres[..., None]) / widen)
    weights = weights * ((inside >= 0) & (inside < length[:, None, None]))
    return weights / weights.sum(-1, keepdim=True)


def _cubic(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic convolution kernel with PIL's a = -0.5 (PyTorch's bicubic uses -0.75)."""
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((x - 5) * x + 8) * x * a - 4 * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))
