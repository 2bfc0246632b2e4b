"""WebDataset-style tar shards, streamed member by member in memory; nothing is extracted.

A sample is the run of consecutive members sharing a key (the path up to the first dot of
the file name): `0001.jpg` + `0001.cls` is one labeled sample. Links, device files and
paths that are absolute or contain `..` are skipped and counted, never followed.
"""

from __future__ import annotations

import glob
import random
import re
import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info

from crossmae.data.decode import (
    DEFAULT_MAX_PIXELS,
    MAX_ENCODED_BYTES,
    ImageSkipped,
    decode_image,
    image_mode,
)
from crossmae.data.skips import SlotCounts, WarnOnce, format_report
from crossmae.errors import CrossMAEError

SHARD_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
_WANTED = (*SHARD_IMAGE_EXTENSIONS, "cls")
# Count slots for readers that share shards (fewer shards than workers), one per worker.
_WORKER_SLOTS = 256
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")  # gz bz2 xz zstd

Group = tuple[str, dict[str, Any]]


def expand_shards(spec: str) -> list[Path]:
    """`a-{000..009}.tar`, `{x,y}.tar` and glob patterns to existing .tar files, in order."""
    paths: list[Path] = []
    for name in _expand_braces(str(Path(spec).expanduser())):
        if glob.has_magic(name):
            matches = sorted(glob.glob(name))
            if not matches:
                raise CrossMAEError(f"no shard matches {name}")
            paths += map(Path, matches)
        elif Path(name).is_file():
            paths.append(Path(name))
        else:
            raise CrossMAEError(f"shard {name} does not exist")
    if not paths:
        raise CrossMAEError(f"{spec} names no shard (is a range reversed?)")
    for path in paths:
        if path.suffix.lower() != ".tar" or not path.is_file():
            raise CrossMAEError(f"{spec} matches {path}, which is not a .tar file")
    return paths


def _expand_braces(spec: str) -> list[str]:
    found = re.search(r"\{([^{}]*)\}", spec)
    if not found:
        return [spec]
    head, tail, body = spec[: found.start()], spec[found.end() :], found.group(1)
    numbers = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if numbers:
        first, last = numbers.groups()
        options = [str(i).zfill(len(first)) for i in range(int(first), int(last) + 1)]
    else:
        options = body.split(",")
    return [out for option in options for out in _expand_braces(head + option + tail)]


def unsafe_reason(member: tarfile.TarInfo) -> str | None:
    """Why a member must not be read (links, special files, escaping paths), or None."""
    if member.issym() or member.islnk():
        return "link"
    if not member.isreg():
        return "device or special file"
    name = member.name.replace("\\", "/")
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return "absolute path"
    if ".." in PurePosixPath(name).parts:
        return "'..' in path"
    return None


def read_groups(tar: tarfile.TarFile) -> Iterator[Group | ImageSkipped]:
    """Samples `(key, {extension: bytes})` of a streamed tar, and a skip per unsafe member."""
    key, files = None, {}
    for member in tar:
        if member.isdir():
            continue
        problem = unsafe_reason(member)
        if problem:
            yield ImageSkipped("unsafe member", f"{member.name} ({problem})")
            continue
        folder, _, base = member.name.rpartition("/")
        stem, _, ext = base.partition(".")
        ext = ext.lower()
        if ext not in _WANTED or not stem:
            continue  # other fields (.json, .txt, ...) are not read at all
        if (name := f"{folder}/{stem}" if folder else stem) != key:
            if files:
                yield key, files
            key, files = name, {}
        if member.size > MAX_ENCODED_BYTES:
            files[ext] = ImageSkipped("too large", f"{member.name} has {member.size:,} bytes")
        else:
            files[ext] = tar.extractfile(member).read()
    if files:
        yield key, files


class ShardImages(IterableDataset):
    """Samples `(transform(image), label)` from tar shards, split over ranks and workers.

    With at least as many shards as readers (ranks x workers) each reader takes whole
    shards; with fewer, every reader streams all shards and keeps every n-th sample.
    `set_epoch` reshuffles the shard order (same on every rank) when `shuffle`.
    """

    def __init__(
        self,
        shards: list[Path],
        *,
        transform: Callable | None = None,
        in_chans: int = 3,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        shuffle: bool = False,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        description: str = "",
    ) -> None:
        self.shards = shards
        self.transform = transform
        self.mode = image_mode(in_chans)
        self.max_pixels = max_pixels
        self.shuffle = shuffle
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.description = description or str(shards[0].parent)
        self.classes: list[str] | None = None
        self.num_classes: int | None = None
        self.counts = SlotCounts(len(shards) + _WORKER_SLOTS)
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()  # seen by live workers
        self._warn = WarnOnce()

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def report(self) -> str | None:
        """What this rank's readers skipped in the newest epoch (see `set_epoch`), or None.

        Without `set_epoch` calls, counts add up over all passes.
        """
        total, counts = self.counts.totals()
        return format_report(counts, total, unit="samples")

    def __iter__(self) -> Iterator[tuple[Any, int]]:
        reader, readers, worker = _reader_position()
        epoch = int(self._epoch)
        order = list(range(len(self.shards)))
        if self.shuffle:
            random.Random(self.seed + epoch).shuffle(order)
        if len(order) >= readers:
            samples = self._whole_shards(order[reader::readers], epoch)
        else:
            slot = len(self.shards) + worker % _WORKER_SLOTS
            samples = self._every_nth(order, reader, readers, slot, epoch)
        if self.shuffle and self.shuffle_buffer > 1:
            rng = random.Random(f"{self.seed}-{epoch}-{reader}")
            samples = _buffer_shuffle(samples, self.shuffle_buffer, rng)
        for img, label in samples:
            yield (self.transform(img) if self.transform else img), label

    def _whole_shards(self, shards: list[int], epoch: int) -> Iterator[tuple[Any, int]]:
        """Every sample of these shards; counts kept per shard."""
        for shard in shards:
            self.counts.open(shard, epoch)
            for item in self._items(self.shards[shard]):
                if (sample := self._take(item, shard, shard)) is not None:
                    yield sample

    def _every_nth(
        self, shards: list[int], keep: int, every: int, slot: int, epoch: int
    ) -> Iterator[tuple[Any, int]]:
        """Items number keep, keep + every, ... of the stream over all shards."""
        self.counts.open(slot, epoch)
        items = ((shard, item) for shard in shards for item in self._items(self.shards[shard]))
        for n, (shard, item) in enumerate(items):
            if n % every == keep and (sample := self._take(item, shard, slot)) is not None:
                yield sample

    def _take(self, item: Group | ImageSkipped, shard: int, slot: int) -> tuple[Any, int] | None:
        """The decoded sample of `item`, or None with the skip counted in `slot`."""
        self.counts.seen(slot)
        try:
            return self._decode(item)
        except ImageSkipped as skip:
            self.counts.skip(slot, skip.reason)
            self._warn(self.description, str(self.shards[shard]), skip)
            return None

    def _items(self, path: Path) -> Iterator[Group | ImageSkipped]:
        try:
            with open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
                yield from read_groups(tar)
            if _cut_short(path):
                yield ImageSkipped("truncated", f"shard {path} ends before its end-of-archive "
                                   "marker, so the samples after the cut are lost")  # fmt: skip
        except (PermissionError, FileNotFoundError) as err:
            yield ImageSkipped("unreadable", f"shard {path}: {err.strerror}")
        except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
            yield ImageSkipped("corrupt", f"shard {path}, rest of it skipped: {err}")

    def _decode(self, item: Group | ImageSkipped) -> tuple[Any, int]:
        if isinstance(item, ImageSkipped):
            raise item
        key, files = item
        image = next((files[e] for e in SHARD_IMAGE_EXTENSIONS if e in files), None)
        if image is None:
            raise ImageSkipped("no image", f"sample {key!r}")
        if isinstance(image, ImageSkipped):
            raise image
        label = -1
        if "cls" in files:
            try:
                label = int(files["cls"].decode().strip())
            except (ValueError, UnicodeDecodeError, AttributeError):
                label = -1
            if not 0 <= label < 2**31:  # also what an int64 label tensor cannot hold
                raise ImageSkipped("bad label", f"sample {key!r}")
        return decode_image(image, self.mode, self.max_pixels), label

    def __repr__(self) -> str:
        return f"ShardImages({self.description}: {len(self.shards)} shards)"


def _cut_short(path: Path) -> bool:
    """True for an uncompressed tar without the two zero blocks every tar writer ends with.
    Cut at a member's header, it reads as a clean end in tarfile's stream mode, so the lost
    samples would go unreported (cut compressed streams raise by themselves)."""
    with open(path, "rb") as f:
        if f.read(6).startswith(_COMPRESSED_MAGIC):
            return False
        size = f.seek(0, 2)
        if size % tarfile.BLOCKSIZE or size < 2 * tarfile.BLOCKSIZE:
            return True
        f.seek(size - 2 * tarfile.BLOCKSIZE)
        return any(f.read(2 * tarfile.BLOCKSIZE))


def _reader_position() -> tuple[int, int, int]:
    """(this reader's index, number of readers, local worker id) over ranks and workers."""
    rank, world = 0, 1
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    info = get_worker_info()
    worker, workers = (info.id, info.num_workers) if info else (0, 1)
    return rank * workers + worker, world * workers, worker


def _buffer_shuffle(items: Iterator, size: int, rng: random.Random) -> Iterator:
    """Shuffle a stream through a buffer of `size` items, as WebDataset does."""
    buffer: list = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = rng.randrange(size)
        yield buffer[i]
        buffer[i] = item
    rng.shuffle(buffer)
    yield from buffer
