"""Training augmentation for fine-tuning and linear probing (MAE's recipes, and small images).

From 224 px the recipes are MAE's: timm's `create_transform` (RandomResizedCrop, flip,
RandAugment, random erasing) for fine-tuning, RandomResizedCrop + flip for probing. Below
224 px (CIFAR's 32 px) RandomResizedCrop at scale 0.08 would keep a few pixels of an
already tiny image, so a padded random crop takes its place, as usual for CIFAR.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from PIL import Image
from timm.data import create_transform
from timm.data.auto_augment import posterize, rand_augment_transform
from timm.data.random_erasing import RandomErasing
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from crossmae.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    channel_stats,
    recipe_transform,
    size_pair,
)
from crossmae.errors import CrossMAEError

RECIPE_MIN_SIZE = 224


def _posterize(img: Image.Image, bits_to_keep: int, **_: object) -> Image.Image:
    """timm's RandAugment asks for 0 bits at magnitude 10 (reachable with `mstd` noise),
    which Pillow 11+ refuses; keeping 0 bits leaves a black image, as older Pillow gave."""
    if bits_to_keep < 1:
        return Image.new(img.mode, img.size)
    return posterize(img, bits_to_keep)


def _pillow_safe(transform: T.Compose) -> T.Compose:
    for step in transform.transforms:
        for op in getattr(step, "ops", ()):  # a timm RandAugment
            if op.name.startswith("Posterize"):
                op.aug_fn = _posterize
    return transform


def _small_crop(size: tuple[int, int]) -> list:
    """Short side to the longer target side (a no-op for 32-px CIFAR at 32 px), a random crop
    after reflect-padding by 1/8 of the side (4 px at 32 px), and a flip."""
    pad = max(1, min(size) // 8)
    return [
        T.Resize(max(size), interpolation=InterpolationMode.BICUBIC),
        T.RandomCrop(size, padding=pad, padding_mode="reflect"),
        T.RandomHorizontalFlip(),
    ]


def finetune_transform(
    img_size: int | Sequence[int],
    in_chans: int = 3,
    *,
    auto_augment: str | None = "rand-m9-mstd0.5-inc1",
    re_prob: float = 0.25,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    uint8: bool = False,
) -> T.Compose:
    """MAE fine-tuning: RandAugment `auto_augment` (None: off) and per-pixel random erasing.

    `uint8`: the augmented crops as uint8 (see `crossmae.data.transforms.recipe_transform`),
    to be erased once normalised on the device: `device_erasing`, as timm's train.py erases
    on the GPU.
    """
    mean, std = channel_stats(mean, std, in_chans)
    size = size_pair(img_size)
    if min(size) >= RECIPE_MIN_SIZE:
        crop, augment, _ = create_transform(
            size, is_training=True, color_jitter=None, auto_augment=auto_augment or None,
            interpolation="bicubic", mean=mean, std=std, separate=True,
        )  # fmt: skip
        steps = [*crop.transforms, *augment.transforms]
    else:
        steps = _small_crop(size)
        if auto_augment:
            hparams = {
                "translate_const": int(min(size) * 0.45),
                "img_mean": tuple(round(255 * m) for m in mean),
            }
            steps.append(rand_augment_transform(auto_augment, hparams))
    transform = recipe_transform(steps, in_chans, mean, std, uint8=uint8)
    if re_prob > 0 and not uint8:
        transform.transforms.append(_erasing(re_prob, torch.device("cpu")))
    return _pillow_safe(transform)


def device_erasing(re_prob: float, device: torch.device) -> RandomErasing | None:
    """`finetune_transform`'s random erasing for normalised batches on `device` (each image
    erased with probability `re_prob`), for its `uint8` crops; None where `re_prob` is 0."""
    return _erasing(re_prob, device) if re_prob > 0 else None


def _erasing(re_prob: float, device: torch.device) -> RandomErasing:
    """MAE's: one box of per-pixel normal noise."""
    return RandomErasing(re_prob, mode="pixel", max_count=1, device=device)


def check_policy(policy: str) -> None:
    """Refuse, in one sentence, a RandAugment policy that timm cannot build."""
    try:
        if not policy.startswith("rand"):
            raise ValueError("it does not start with 'rand'")
        rand_augment_transform(policy, {"translate_const": 100})
    except (AssertionError, ValueError, KeyError, IndexError) as err:
        raise CrossMAEError(
            f"--auto-augment {policy!r} is not a timm RandAugment policy such as "
            f"rand-m9-mstd0.5-inc1 ({err or type(err).__name__}); none turns it off"
        ) from None


def probe_transform(
    img_size: int | Sequence[int],
    in_chans: int = 3,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    uint8: bool = False,
) -> T.Compose:
    """MAE linear probing: RandomResizedCrop (bicubic) + flip; small images: padded crop
    (`uint8`: see `crossmae.data.transforms.recipe_transform`)."""
    size = size_pair(img_size)
    if min(size) >= RECIPE_MIN_SIZE:
        crop = [
            OneDrawResizedCrop(size, interpolation=InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
        ]
    else:
        crop = _small_crop(size)
    return recipe_transform(crop, in_chans, mean, std, uint8=uint8)


class OneDrawResizedCrop(T.RandomResizedCrop):
    """The crop of MAE's linear probe (its `util/crop.py`, after BYOL's TF code): one draw of
    area and aspect ratio, the box clipped to the image, where torchvision's redraws up to
    ten times and then falls back to a centre crop. Boxes differ, so do the numbers."""

    @staticmethod
    def get_params(
        img: torch.Tensor | Image.Image, scale: Sequence[float], ratio: Sequence[float]
    ) -> tuple[int, int, int, int]:
        width, height = TF.get_image_size(img)
        area = height * width * torch.empty(1).uniform_(scale[0], scale[1]).item()
        log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
        aspect = math.exp(torch.empty(1).uniform_(log_low, log_high).item())
        w = max(1, min(round(math.sqrt(area * aspect)), width))
        h = max(1, min(round(math.sqrt(area / aspect)), height))
        top = int(torch.randint(0, height - h + 1, size=(1,)).item())
        left = int(torch.randint(0, width - w + 1, size=(1,)).item())
        return top, left, h, w
