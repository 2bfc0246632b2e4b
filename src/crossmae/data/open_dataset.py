"""`open_image_dataset`: one entry point for the demo set, image folders and tar shards."""

from __future__ import annotations

import glob
import logging
from collections.abc import Callable
from pathlib import Path

from torch.utils.data import Dataset

from crossmae.data.builtin import DemoImages
from crossmae.data.decode import DEFAULT_MAX_PIXELS
from crossmae.data.folder import FolderImages
from crossmae.data.shards import ShardImages, expand_shards
from crossmae.errors import CrossMAEError

log = logging.getLogger("crossmae.data")

BUILTIN = "builtin"  # `--data builtin`, as no --data: the demo set shipped with the package
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
    if path is None or (str(path) == BUILTIN and not Path(BUILTIN).exists()):
        return DemoImages(split, **options)
    text = str(path)
    root = Path(text).expanduser()
    if not root.exists() and ("{" in text or glob.has_magic(text)):
        return ShardImages(expand_shards(text), description=text, **shard_options)
    if not root.exists():
        raise CrossMAEError(f"data path {root} does not exist")
    if root.is_file():
        if root.suffix.lower() != ".tar":
            raise CrossMAEError(f"{root} is a file; give an image folder or .tar shards")
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
