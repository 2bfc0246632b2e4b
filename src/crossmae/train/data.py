"""Which batch source a pretraining run reads from, chosen from its settings and its data."""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset

from crossmae.data import InMemoryImages, eval_transform, open_image_dataset, pretrain_transform
from crossmae.data.skips import ItemStatus
from crossmae.data.subset import random_subset, underlying
from crossmae.data.transforms import size_pair
from crossmae.errors import CrossMAEError
from crossmae.models.config import AutoencoderConfig
from crossmae.train.batches import (
    BatchSource,
    InMemorySource,
    LoaderSource,
    StreamSource,
    is_map_style,
    usable_cores,
)
from crossmae.train.config import PretrainConfig
from crossmae.train.distributed import DistInfo, all_reduce_max
from crossmae.train.online_knn import OnlineKNN

# `in_memory: auto` keeps a folder in memory when its decoded images take at most this much.
IN_MEMORY_BUDGET = 2 * 2**30


@dataclass
class TrainingData:
    source: BatchSource
    description: str
    dataset: Dataset
    knn: OnlineKNN | None = None

    def report(self) -> str | None:
        """What decoding skipped (corrupt, truncated, non-image files...), or None.

        Under torchrun every rank must call it: the items found bad by any rank of a folder
        set are merged first (each rank decodes only its share). Tar shards report this
        rank's share.
        """
        status = getattr(underlying(self.dataset), "status", None)
        if isinstance(status, ItemStatus):
            status.merge(all_reduce_max)
        report = getattr(self.dataset, "report", None)
        return report() if report else None


def open_training_data(
    cfg: PretrainConfig, model: AutoencoderConfig, dist: DistInfo
) -> TrainingData:
    """Open `cfg.data` (None: the built-in set) as augmented batches for this rank."""
    height, width = size_pair(model.img_size)
    chans = model.in_chans
    common = {"batch_size": cfg.batch_size, "world_size": dist.world_size, "seed": cfg.seed}
    workers = min(cfg.num_workers, usable_cores())  # more only queue up for the cores
    loader = {"device": dist.device, "num_workers": workers, "pin_memory": cfg.pin_memory}
    dataset = open_image_dataset(cfg.data, "train", in_chans=chans, shuffle=True, seed=cfg.seed)
    name = getattr(dataset, "description", str(cfg.data))
    if cfg.train_images is not None:
        dataset = random_subset(dataset, cfg.train_images, cfg.seed, "training", "--train-images")
        name = f"{name} (a random {len(dataset):,} of its images)"  # type: ignore[arg-type]
    if not is_map_style(dataset):
        if cfg.samples_per_epoch is None:
            raise CrossMAEError(
                "tar shards have no length: give --samples-per-epoch (e.g. 1281167 for ImageNet-1k)"
            )
        crops = pretrain_transform((height, width), chans, uint8=True)
        dataset = open_image_dataset(cfg.data, "train", transform=crops, in_chans=chans,
                                     shuffle=True, seed=cfg.seed)  # fmt: skip
        source: BatchSource = StreamSource(dataset, cfg.samples_per_epoch, **common, **loader)
        description = f"{name}: tar shards, {cfg.samples_per_epoch:,} images per epoch"
    else:
        if cfg.samples_per_epoch is not None:
            raise CrossMAEError(
                "--samples-per-epoch is for tar shards; an epoch of an image folder is all of "
                "it (--train-images keeps fewer)"
            )
        size = len(dataset)  # type: ignore[arg-type]
        at_size = _at_size(dataset, height, width)
        in_memory = cfg.in_memory
        if in_memory is None:
            in_memory = at_size and size * chans * height * width <= IN_MEMORY_BUDGET
        if in_memory:
            fitted = "" if at_size else ", resized to cover and cropped"
            images = InMemoryImages.from_dataset(dataset, (height, width), chans, dist.device,
                                                 num_workers=workers)  # fmt: skip
            source = InMemorySource(images, rank=dist.rank, **common)
            size = _bytes(images.images.numel())
            description = (
                f"{name}: {len(images):,} images kept in memory at {height}x{width}{fitted} "
                f"({size} on {images.device}), augmented there"
            )
        else:
            source = LoaderSource(dataset, rank=dist.rank, transform=pretrain_transform(
                (height, width), chans, uint8=True), **common, **loader)  # fmt: skip
            description = f"{name}: {size:,} images, {workers} loader workers per process"
    knn = _online_knn(cfg, model, min(workers, 4)) if cfg.knn_every_epochs else None
    return TrainingData(source, description, dataset, knn)


def _at_size(dataset: Dataset, height: int, width: int, samples: int = 8) -> bool:
    """Whether the images (a few, spread over the set) are already the model's size. Only
    then does `in_memory: auto` keep them: stored smaller, RandomResizedCrop would never see
    their borders and would upsample its crops from the reduced copy."""
    count = len(dataset)  # type: ignore[arg-type]
    for i in range(0, count, max(1, count // samples)):
        image, _ = dataset[i]
        if image.size != (width, height):
            return False
    return True


def _bytes(count: int) -> str:
    size = float(count)
    for unit in ("bytes", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _online_knn(cfg: PretrainConfig, model: AutoencoderConfig, workers: int) -> OnlineKNN:
    path = cfg.knn_data if cfg.knn_data is not None else cfg.data
    transform = eval_transform(model.img_size, model.in_chans, uint8=True)
    splits = [
        open_image_dataset(path, split, transform=transform, in_chans=model.in_chans)
        for split in (cfg.knn_train_split, cfg.knn_eval_split)
    ]
    if not all(is_map_style(ds) for ds in splits):
        raise CrossMAEError("kNN monitoring reads image folders (or the built-in set), not shards")
    return OnlineKNN(*splits, k=cfg.knn_k, max_images=cfg.knn_max_images,
                     num_workers=workers, seed=cfg.seed)  # fmt: skip
