"""The MAE recipe's image transforms: PIL in, a normalised float tensor out, or a uint8 one
that `model_input` normalises on the device (what the training and evaluation loaders do)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from crossmae.errors import CrossMAEError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Eval crops 87.5% of the resized image (Resize(256) + CenterCrop(224)) from 224 px up.
EVAL_CROP_FRACTION = 0.875


def size_pair(img_size: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) from an int or a pair."""
    if isinstance(img_size, int):
        return img_size, img_size
    height, width = img_size
    return int(height), int(width)


def channel_stats(
    mean: Sequence[float], std: Sequence[float], in_chans: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std for `in_chans`; grey images use the average of the RGB values."""
    if len(mean) != len(std):
        raise CrossMAEError(f"mean has {len(mean)} values but std has {len(std)}")
    if len(mean) == in_chans:
        return tuple(mean), tuple(std)
    if in_chans == 1:
        return (sum(mean) / len(mean),), (sum(std) / len(std),)
    raise CrossMAEError(f"give {in_chans} mean and std values for in_chans={in_chans}")


def pretrain_transform(
    img_size: int | Sequence[int],
    in_chans: int = 3,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    uint8: bool = False,
) -> T.Compose:
    """RandomResizedCrop(scale 0.2-1, bicubic) + horizontal flip, as in MAE pretraining
    (`uint8`: see `recipe_transform`)."""
    bicubic = InterpolationMode.BICUBIC
    return recipe_transform([
        T.RandomResizedCrop(size_pair(img_size), scale=(0.2, 1.0), interpolation=bicubic),
        T.RandomHorizontalFlip(),
    ], in_chans, mean, std, uint8=uint8)  # fmt: skip


def recipe_transform(
    steps: list[Callable],
    in_chans: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    uint8: bool,
) -> T.Compose:
    """A recipe's PIL `steps` as one transform for `in_chans` channels: the image made grey
    first for one, then a float tensor normalised by `mean` and `std`, or with `uint8` the
    uint8 tensor: loaders then collate, pin and copy a quarter of the bytes, and
    `model_input` normalises the batch on the device to the same values."""
    mean, std = channel_stats(mean, std, in_chans)
    grey = [T.Grayscale(1)] if in_chans == 1 else []
    if not uint8:
        return T.Compose([*grey, *steps, T.ToTensor(), T.Normalize(mean, std)])
    if (mean, std) != channel_stats(IMAGENET_MEAN, IMAGENET_STD, in_chans):
        raise CrossMAEError("uint8 images are normalised on the device by ImageNet's mean and std")
    return T.Compose([*grey, *steps, T.PILToTensor()])


def model_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch on `device` as a model reads it: uint8 images (as the `uint8` transforms make
    them: 1 or 3 channels, for ImageNet's mean and std) normalised there by the operations
    of `ToTensor` + `Normalize`, in their order, so to the same values bit for bit; float
    images as they come. (Eager kernels: compiled, the division might be rewritten.)"""
    images = images.to(device, non_blocking=True)
    if images.dtype != torch.uint8:
        return images
    full, mean, std = _normalisation_constants(images.shape[1], images.device)
    return images.float().div_(full).sub_(mean).div_(std)


@functools.cache
def _normalisation_constants(in_chans: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """255, the means and the stds as tensors on `device`, made once (a small tensor copied
    to a GPU for each batch would wait for it). 255 too: CUDA multiplies by the reciprocal
    of a Python number instead of dividing by it, off by one bit for half the byte values."""
    mean, std = channel_stats(IMAGENET_MEAN, IMAGENET_STD, in_chans)
    values = (torch.tensor(255.0), torch.tensor(mean), torch.tensor(std))
    return tuple(v.view(1, -1, 1, 1).to(device) for v in values)


def eval_transform(
    img_size: int | Sequence[int],
    in_chans: int = 3,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    uint8: bool = False,
) -> T.Compose:
    """Resize the short side (bicubic) and center-crop: to 224 / 0.875 = 256 then 224 at
    224 px, with no margin above it, as MAE evaluates (its `crop_pct` is 1 above 224 px),
    and none below it either (small images such as CIFAR's would lose an eighth).
    `uint8`: see `recipe_transform`.

    Resizing the short side to the longer target side means the crop always fits,
    whatever the image's and the target's aspect ratios.
    """
    height, width = size_pair(img_size)
    fraction = EVAL_CROP_FRACTION if min(height, width) >= 224 >= max(height, width) else 1.0
    return recipe_transform([
        T.Resize(int(max(height, width) / fraction), interpolation=InterpolationMode.BICUBIC),
        T.CenterCrop((height, width)),
    ], in_chans, mean, std, uint8=uint8)  # fmt: skip
