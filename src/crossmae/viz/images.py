"""Images for the figures: loaded as evaluation sees them, shown back in [0, 1] pixels."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence, Sized
from dataclasses import dataclass
from pathlib import Path

import torch

from crossmae.data.decode import ImageSkipped, decode_image, image_mode
from crossmae.data.encoded import without_stand_ins
from crossmae.data.open_dataset import open_image_dataset
from crossmae.data.transforms import IMAGENET_MEAN, IMAGENET_STD, channel_stats, eval_transform
from crossmae.errors import CrossMAEError


@dataclass
class ImageBatch:
    imgs: torch.Tensor  # (B, C, H, W), normalised with the ImageNet statistics
    names: list[str]  # what to call each image in reports


def pixel_stats(in_chans: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, 1, 1) mean and std the images were normalised with."""
    mean, std = channel_stats(IMAGENET_MEAN, IMAGENET_STD, in_chans)
    return torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Model input space (B, C, H, W) -> [0, 1] pixels, clamped for display and PSNR."""
    mean, std = pixel_stats(x.shape[1])
    return (x * std.to(x) + mean.to(x)).clamp(0, 1)


def load_files(paths: Sequence[str | Path], size: tuple[int, int], in_chans: int) -> ImageBatch:
    """Image files through the evaluation transform (resize, centre crop, normalise)."""
    transform = eval_transform(size, in_chans)
    imgs = []
    for path in map(Path, paths):
        if not path.is_file():
            raise CrossMAEError(f"image {path} does not exist")
        try:
            img = decode_image(path.read_bytes(), image_mode(in_chans))
        except ImageSkipped as skip:
            raise CrossMAEError(f"cannot use image {path}: {skip}") from None
        imgs.append(transform(img))
    return ImageBatch(torch.stack(imgs), [str(p) for p in paths])


def sample_dataset(
    data: str, split: str, num: int, seed: int, size: tuple[int, int], in_chans: int
) -> ImageBatch:
    """`num` images drawn at random (reproducibly for `seed`) from a data set."""
    if num < 1:
        raise CrossMAEError(f"--num must be at least 1, got {num}")
    dataset = open_image_dataset(data, split, eval_transform(size, in_chans), in_chans)
    if not isinstance(dataset, Sized):  # tar shards stream: take the first `num` images
        items = list(itertools.islice(iter(dataset), num))
        names = [f"{data} item {i}" for i in range(len(items))]
    else:  # in a random order until `num` decode: a bad image is passed over, not renamed
        without_stand_ins(dataset)
        order = random.Random(seed).sample(range(len(dataset)), len(dataset))
        found = sorted(itertools.islice(
            ((i, item) for i in order if (item := dataset[i]) is not None), num
        ))  # fmt: skip
        items = [item for _, item in found]
        names = [dataset.name(i) for i, _ in found]
    if len(items) < num:
        raise CrossMAEError(f"asked for {num} images but {data} has only {len(items)} that decode")
    return ImageBatch(torch.stack([img for img, _ in items]), names)
