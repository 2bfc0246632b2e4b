"""Image folders: `ROOT/<class>/**/*` (labeled) or `ROOT/*` (unlabeled), scanned safely.

The scan follows directory links but enters each real directory once (link loops end),
keeps only regular files (a FIFO named x.jpg would block a worker forever) and skips
hidden entries. It never opens a file: decoding problems are found and counted later.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crossmae.data.decode import IMAGE_EXTENSIONS, MAX_ENCODED_BYTES, ImageSkipped
from crossmae.data.encoded import EncodedImages
from crossmae.data.packed import Packed
from crossmae.errors import CrossMAEError


@dataclass
class FolderScan:
    """Image files (relative to the root) with labels, and what the scan left out."""

    files: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    classes: list[str] | None = None
    skipped: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)


def scan_folder(root: Path) -> FolderScan:
    """Class folders under `root` if it has any sub-folders, else its files, unlabeled."""
    scan = FolderScan()
    files, folders = _list(root, scan.skipped)
    if not folders:
        scan.files = _images(files, root, scan.skipped)
        scan.labels = [-1] * len(scan.files)
        return scan
    scan.classes = [folder.name for folder in folders]
    # A link from one class folder to another (or up to the root) must not relabel a class.
    seen = {key for key in map(_inode, [root, *folders]) if key is not None}
    empty = []
    for label, folder in enumerate(folders):
        found = _images(_walk(folder, seen, scan.skipped), root, scan.skipped)
        if not found:
            empty.append(folder.name)
        scan.files += found
        scan.labels += [label] * len(found)
    if files:
        scan.notes.append(f"ignored {len(files):,} files outside the class folders")
    if empty:
        scan.notes.append(f"{len(empty)} empty class folder(s): {', '.join(empty[:5])}")
    return scan


def _list(folder: Path, skipped: Counter[str]) -> tuple[list[Path], list[Path]]:
    """Sorted regular files and sub-folders of `folder`, hidden entries left out."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError:
        skipped["unreadable"] += 1
        return [], []
    files, folders = [], []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir():
                folders.append(Path(entry.path))
            elif entry.is_file():
                files.append(Path(entry.path))
            elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
                skipped["unreadable"] += 1  # a broken link, FIFO or device named like an image
        except OSError:
            skipped["unreadable"] += 1
    return files, folders


def _walk(top: Path, seen: set[tuple[int, int]], skipped: Counter[str]) -> list[Path]:
    """All regular files below `top`, depth first in name order, each directory once and
    none already in `seen` (except `top`)."""
    found: list[Path] = []
    stack = [top]
    while stack:
        folder = stack.pop()
        key = _inode(folder)
        if key is None:
            skipped["unreadable"] += 1
            continue
        if key in seen and folder is not top:
            continue
        seen.add(key)
        files, folders = _list(folder, skipped)
        found += files
        stack += reversed(folders)
    return found


def _inode(folder: Path) -> tuple[int, int] | None:
    try:
        info = folder.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _images(files: list[Path], root: Path, skipped: Counter[str]) -> list[str]:
    images = [str(f.relative_to(root)) for f in files if f.name.lower().endswith(IMAGE_EXTENSIONS)]
    skipped["not an image"] += len(files) - len(images)
    return images


class FolderImages(EncodedImages):
    """Images read from files under `root`, paths held compactly for forked workers."""

    def __init__(self, root: str | Path, **options) -> None:
        self.root = Path(root)
        scan = scan_folder(self.root)
        if not scan.files:
            raise CrossMAEError(
                f"found no images in {self.root} (looked for {', '.join(IMAGE_EXTENSIONS)})"
            )
        self.paths = Packed.from_list([os.fsencode(f) for f in scan.files])
        super().__init__(
            np.asarray(scan.labels, dtype=np.int64),
            scan.classes,
            description=str(self.root),
            scan_skips=+scan.skipped,
            notes=scan.notes,
            **options,
        )

    def name(self, index: int) -> str:
        return str(self.root / os.fsdecode(self.paths[index]))

    def read(self, index: int) -> bytes:
        try:
            with open(self.name(index), "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size > MAX_ENCODED_BYTES:
                    raise ImageSkipped("too large", f"file of {size:,} bytes")
                return f.read()
        except OSError as err:
            raise ImageSkipped("unreadable", err.strerror or type(err).__name__) from None
