"""The map-style base: encoded images decoded on access, bad ones replaced and counted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, Subset, default_collate

from crossmae.data.decode import DEFAULT_MAX_PIXELS, ImageSkipped, decode_image, image_mode
from crossmae.data.skips import ItemStatus, WarnOnce, format_report
from crossmae.data.subset import underlying
from crossmae.errors import CrossMAEError


class EncodedImages(Dataset):
    """Items `(transform(image), label)`; subclasses say how to get item i's bytes.

    A bad item never stops an epoch: it is marked (shared with DataLoader workers), and the
    next good item is returned in its place, so that training batches keep their size.
    With `replace_bad = False` (evaluation, where a stand-in would be counted twice) a bad
    item is None instead; `collate_good` leaves it out. `report()` sums up what was skipped.
    """

    replace_bad = True

    def __init__(
        self,
        labels: np.ndarray,
        classes: list[str] | None,
        *,
        description: str,
        transform: Callable | None = None,
        in_chans: int = 3,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        scan_skips: Counter[str] | None = None,
        notes: list[str] | None = None,
    ) -> None:
        self.labels = labels
        self.classes = classes
        self.description = description
        self.transform = transform
        self.mode = image_mode(in_chans)
        self.max_pixels = max_pixels
        self.scan_skips = scan_skips or Counter()
        self.total = len(labels) + sum(self.scan_skips.values())  # files seen by the scan
        self.notes = notes or []
        self.status = ItemStatus(len(labels))
        self._warn = WarnOnce()

    @property
    def num_classes(self) -> int | None:
        return None if self.classes is None else len(self.classes)

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, index: int) -> bytes:
        """The encoded bytes of item `index`; raise ImageSkipped if they cannot be read."""
        raise NotImplementedError

    def name(self, index: int) -> str:
        """How to point a user at item `index` (a path, or set and position)."""
        return f"{self.description}[{index}]"

    def __getitem__(self, index: int) -> tuple[Any, int] | None:
        size = len(self)
        if not -size <= index < size:
            raise IndexError(f"index {index} is out of range for {size} images")
        if not self.replace_bad:
            return self._decoded(index % size)
        for i in (j % size for j in range(index, index + size)):
            item = self._decoded(i)
            if item is not None:
                return item
        raise CrossMAEError(f"no image in {self.description} could be decoded: {self.report()}")

    def _decoded(self, i: int) -> tuple[Any, int] | None:
        """Item i, or None (marked, and warned about once) if it cannot be decoded."""
        if self.status.is_bad(i):
            return None
        try:
            img = decode_image(self.read(i), self.mode, self.max_pixels)
        except ImageSkipped as skip:
            self.status.mark(i, skip.reason)
            self._warn(self.description, self.name(i), skip)
            return None
        return (self.transform(img) if self.transform else img), int(self.labels[i])

    def report(self) -> str | None:
        """What was skipped so far (scan time, and decode time in any process), or None."""
        counts = self.scan_skips + self.status.counts()
        return format_report(counts, self.total, notes=self.notes)

    def __repr__(self) -> str:
        classes = "unlabeled" if self.classes is None else f"{len(self.classes)} classes"
        return f"{type(self).__name__}({self.description}: {len(self):,} images, {classes})"


def without_stand_ins(dataset: Dataset) -> Dataset:
    """`dataset` (or the set under its Subset wrappers) with bad items as None, not replaced."""
    base = underlying(dataset)
    if isinstance(base, EncodedImages):
        base.replace_bad = False
    return dataset


def decoded_images(dataset: Dataset) -> int | None:
    """How many of `dataset`'s items are good images, as far as this process has read them
    (a bad one stood in for by the next good image is not counted); None for tar shards."""
    if isinstance(dataset, IterableDataset):
        return None
    indices = None
    while isinstance(dataset, Subset):
        mapped = torch.as_tensor(dataset.indices)
        indices = mapped if indices is None else mapped[indices]
        dataset = dataset.dataset
    if not isinstance(dataset, EncodedImages):
        return len(dataset) if indices is None else len(indices)  # type: ignore[arg-type]
    codes = dataset.status.codes if indices is None else dataset.status.codes[indices]
    return int((codes == 0).sum())


def collate_good(items: list[tuple[Any, int] | None]) -> Any:
    """Collate the items that decoded; None when none of the batch did."""
    good = [item for item in items if item is not None]
    return default_collate(good) if good else None
