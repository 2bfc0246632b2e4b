"""A fixed random subset of an image set, for quick comparisons on fewer images."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.utils.data import Dataset, IterableDataset, Subset

from crossmae.errors import CrossMAEError

log = logging.getLogger("crossmae.data")


class ImageSubset(Subset):
    """`Subset` that keeps what the data set says about itself (classes, description,
    skipped-image report), which the training and evaluation code print."""

    def __getattr__(self, name: str) -> Any:
        if name in ("classes", "description", "report"):
            return getattr(self.dataset, name)
        raise AttributeError(name)


def random_subset(
    dataset: Dataset, count: int | None, seed: int, what: str, flag: str | None = None
) -> Dataset:
    """`count` images of `dataset` drawn by `seed` (kept in file order); all of it if None
    or if it has no more than `count` (said, when the count came from the user's `flag`)."""
    if count is None:
        return dataset
    if isinstance(dataset, IterableDataset):
        raise CrossMAEError(f"a subset of the {what} images needs a folder data set, not shards")
    if count < 1:
        raise CrossMAEError(f"the {what} subset needs at least one image, got {count}")
    size = len(dataset)  # type: ignore[arg-type]
    if count >= size:
        if flag is not None and count > size:
            log.warning("%s %s is more than the %s %s images there: all of them are used",
                        flag, f"{count:,}", f"{size:,}", what)  # fmt: skip
        return dataset
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed))
    return ImageSubset(dataset, sorted(order[:count].tolist()))


def underlying(dataset: Dataset) -> Dataset:
    """The data set under any Subset wrappers (which hold the items' decoding state)."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset
