"""`open_image_dataset`: one entry point for the demo set, image folders and tar shards."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from torch.utils.data import Dataset

from crossmae.data.builtin import DemoImages
from crossmae.data.decode import DEFAULT_MAX_PIXELS
from crossmae.data.folder import FolderImages
from crossmae.data.paths import check_data_path, is_builtin, is_shard_pattern
from crossmae.data.shards import ShardImages, expand_shards
from crossmae.errors import CrossMAEError

log = logging.getLogger("crossmae.data")

# Folder names tried for each split, in order; "val" and "test" stand in for each other.
SPLIT_FOLDERS = {
    "train": ("train",),
    "val": ("val", "validation", "test"),
    "test": ("test", "val", "validation"),
}


def open_image_dataset(
    path: str | Path | None,
    split: str = "train",
    transform: Callable | None = None,
    in_chans: int = 3,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    shuffle: bool = False,
    seed: int = 0,
) -> Dataset:
    """Items `(transform(image), label)` from `path`; None (or "builtin", where no such
    folder is) is the built-in demo set.

    `path` may be a folder `PATH/<split>/<class>/*`, `PATH/<class>/*` or `PATH/*`
    (unlabeled, label -1), or tar shards: a `.tar` file, a folder of them, or a pattern
    such as `shards-{000..009}.tar`. `shuffle` and `seed` apply to shards only (map-style
    sets are shuffled by the DataLoader's sampler). Images over `max_pixels` are skipped.
    """
    options = {"transform": transform, "in_chans": in_chans, "max_pixels": max_pixels}
    shard_options = {**options, "shuffle": shuffle, "seed": seed}
    if is_builtin(path):
        return DemoImages(split, **options)
    if is_shard_pattern(path):
        return ShardImages(expand_shards(str(path)), description=str(path), **shard_options)
    check_data_path(path)
    root = Path(str(path)).expanduser()
    if root.is_file():
        return ShardImages([root], **shard_options)
    folder = _split_folder(root, split)
    shards = sorted(p for p in folder.glob("*.tar") if p.is_file())
    if shards:
        dataset: Dataset = ShardImages(shards, description=str(folder), **shard_options)
    else:
        dataset = FolderImages(folder, **options)
    if folder == root and split != "train":  # said once it holds images: no note before an error
        log.warning("%s has no %r folder; using all of it as the %s split", root, split, split)
    return dataset


def _split_folder(root: Path, split: str) -> Path:
    """`root/<split>` (or its stand-in) if there is one; `root` itself if it has no splits."""
    names = SPLIT_FOLDERS.get(split, (split,))
    for name in names:
        if (root / name).is_dir():
            return root / name
    present = [s for s in ("train", "val", "validation", "test") if (root / s).is_dir()]
    if present:
        raise CrossMAEError(f"split {split!r} not found in {root} (it has {', '.join(present)})")
    return root
