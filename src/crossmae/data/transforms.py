"""The MAE recipe's image transforms (PIL in, normalised tensor out)."""

from __future__ import annotations

from collections.abc import Sequence

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
) -> T.Compose:
    """RandomResizedCrop(scale 0.2-1, bicubic) + horizontal flip, as in MAE pretraining."""
    mean, std = channel_stats(mean, std, in_chans)
    steps = [T.Grayscale(1)] if in_chans == 1 else []
    bicubic = InterpolationMode.BICUBIC
    return T.Compose([
        *steps,
        T.RandomResizedCrop(size_pair(img_size), scale=(0.2, 1.0), interpolation=bicubic),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])  # fmt: skip


def eval_transform(
    img_size: int | Sequence[int],
    in_chans: int = 3,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> T.Compose:
    """Resize the short side (bicubic) and center-crop: to 224 / 0.875 = 256 then 224 at
    224 px, with no margin above it, as MAE evaluates (its `crop_pct` is 1 above 224 px),
    and none below it either (small images such as CIFAR's would lose an eighth).

    Resizing the short side to the longer target side means the crop always fits,
    whatever the image's and the target's aspect ratios.
    """
    mean, std = channel_stats(mean, std, in_chans)
    height, width = size_pair(img_size)
    fraction = EVAL_CROP_FRACTION if min(height, width) >= 224 >= max(height, width) else 1.0
    steps = [T.Grayscale(1)] if in_chans == 1 else []
    return T.Compose([
        *steps,
        T.Resize(int(max(height, width) / fraction), interpolation=InterpolationMode.BICUBIC),
        T.CenterCrop((height, width)),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])  # fmt: skip
