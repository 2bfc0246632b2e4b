"""Batches for the training loop, in an order fixed by (seed, epoch) alone.

Every source lays out a global batch the same way whatever the number of processes: with
W processes, rank r takes positions r, r + W, r + 2W, ... of each global batch. So one
process at batch 2B and two at batch B see the same images (and `masking_noise` hands each
image the same mask), and a run resumed at batch k of an epoch continues exactly.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Sized
from functools import partial
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from crossmae.data import InMemoryImages
from crossmae.data.transforms import model_input
from crossmae.errors import CrossMAEError
from crossmae.train.signals import ignore_stop_signals

T = TypeVar("T")


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from non-negative integers (seed, epoch, index, ...)."""
    state = np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


class BatchSource(Protocol):
    batches_per_epoch: int  # micro-batches per rank and epoch
    forks_each_epoch: bool  # starts worker processes at every epoch

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[torch.Tensor]:
        """Images (B, C, H, W) on the training device for batches start_batch, ... ."""
        ...


def masking_noise(
    generator: torch.Generator, batch_size: int, rank: int, world_size: int, num_patches: int
) -> torch.Tensor:
    """This rank's rows of one global draw of masking noise (B * W, L), matching the layout
    of the batch sources, so the masks do not depend on the number of processes."""
    noise = torch.rand(batch_size * world_size, num_patches, generator=generator,
                       device=generator.device)  # fmt: skip
    return noise[rank::world_size]


class InMemorySource:
    """Decoded images held on the device, augmented there (see `InMemoryImages`)."""

    def __init__(
        self, images: InMemoryImages, batch_size: int, rank: int, world_size: int, seed: int
    ) -> None:
        self.images = images
        self.batch_size, self.rank, self.world_size, self.seed = batch_size, rank, world_size, seed
        self.batches_per_epoch = images.num_batches(batch_size, True, world_size)
        self.forks_each_epoch = False

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[torch.Tensor]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
        batches = self.images.batches(
            self.batch_size, generator, drop_last=True, augment=True, rank=self.rank,
            world_size=self.world_size, start_batch=start_batch,
        )  # fmt: skip
        for images, _ in batches:
            yield images


class GlobalBatchSampler(Sampler[list[tuple[int, int]]]):
    """This rank's share of each global batch of a permutation seeded by (seed, epoch).

    Yields `(epoch, index)` pairs so that `SeededItems` can seed each image's augmentation,
    even in persistent workers that never see `set_epoch`.
    """

    def __init__(self, size: int, batch_size: int, rank: int, world_size: int, seed: int) -> None:
        self.size, self.batch_size = size, batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.global_batch = batch_size * world_size
        self.epoch, self.start_batch = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.size // self.global_batch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        order = torch.randperm(self.size, generator=generator)
        for step in range(self.start_batch, self.batches_per_epoch):
            batch = order[step * self.global_batch : (step + 1) * self.global_batch]
            yield [(self.epoch, i) for i in batch[self.rank :: self.world_size].tolist()]


class SeededItems(Dataset):
    """`(transform(image), label)` of `dataset[index]`, with torch's RNG seeded by (seed, epoch,
    index): an image gets the same random crop and flip whichever worker, process count or
    resume point loads it."""

    def __init__(self, dataset: Dataset, seed: int, transform: Callable) -> None:
        self.dataset, self.seed, self.transform = dataset, seed, transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> tuple[Any, int]:
        epoch, index = key
        image, label = self.dataset[index]
        with torch.random.fork_rng(devices=[]):
            # The CPU generator alone, which the transforms draw from: torch.manual_seed also
            # seeds (lazily, recording a stack trace) CUDA's and XPU's, 0.25-0.5 ms an image.
            torch.default_generator.manual_seed(derive_seed(self.seed, epoch, index))
            return self.transform(image), label


def usable_cores() -> int:
    """The cores this process may run on (a taskset, cpuset or SLURM allocation), counted
    as torch's DataLoader counts them when it warns about too many workers."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _loader_options(num_workers: int, pin_memory: bool, device: torch.device) -> dict[str, Any]:
    return {
        "num_workers": num_workers,
        "pin_memory": pin_memory and device.type == "cuda",
        "persistent_workers": num_workers > 0,
        "prefetch_factor": 4 if num_workers > 0 else None,
        "worker_init_fn": ignore_stop_signals if num_workers > 0 else None,
    }


class LoaderSource:
    """A map-style data set (image folder, built-in set) decoded by DataLoader workers."""

    def __init__(
        self,
        dataset: Dataset,
        transform: Callable,
        batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
        device: torch.device,
        num_workers: int = 8,
        pin_memory: bool = True,
    ) -> None:
        self.device = device
        self.sampler = GlobalBatchSampler(len(dataset), batch_size, rank, world_size, seed)  # type: ignore[arg-type]
        self.batches_per_epoch = self.sampler.batches_per_epoch
        self.forks_each_epoch = False  # its workers persist
        self.loader = DataLoader(
            SeededItems(dataset, seed, transform),
            batch_sampler=self.sampler,
            generator=torch.Generator().manual_seed(seed),  # leaves the global RNG alone
            **_loader_options(num_workers, pin_memory, device),
        )

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[torch.Tensor]:
        self.sampler.set_epoch(epoch, start_batch)
        for images, _ in self.loader:
            yield model_input(images, self.device)  # uint8 crops normalised there


class StreamSource:
    """Tar shards (an IterableDataset that splits itself over ranks and workers).

    Shards have no length, so an epoch is `samples_per_epoch` images; a reader that runs
    dry starts another pass, so every rank runs the same number of steps. Workers are
    re-seeded per epoch, so a resumed run replays an epoch's first batches to reach
    `start_batch` and then continues exactly.
    """

    def __init__(
        self,
        dataset: IterableDataset,
        samples_per_epoch: int,
        batch_size: int,
        world_size: int,
        seed: int,
        device: torch.device,
        num_workers: int = 8,
        pin_memory: bool = True,
    ) -> None:
        self.dataset, self.device, self.seed = dataset, device, seed
        self.main_process_decodes = num_workers == 0
        self.forks_each_epoch = not self.main_process_decodes
        self.readers = world_size * max(num_workers, 1)  # how the shards are dealt out
        self.batches_per_epoch = samples_per_epoch // (batch_size * world_size)
        self.generator = torch.Generator()
        options = _loader_options(num_workers, pin_memory, device)
        options["persistent_workers"] = False  # fresh, re-seeded workers every epoch
        self.loader = DataLoader(dataset, batch_size=batch_size, drop_last=True,
                                 generator=self.generator, **options)  # fmt: skip

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[torch.Tensor]:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        self.generator.manual_seed(derive_seed(self.seed, epoch))
        if self.main_process_decodes:  # the transforms then draw from the global RNG
            torch.manual_seed(derive_seed(self.seed, epoch, 1))
        empty = partial(no_full_batch, "the tar shards", self.loader.batch_size, self.dataset)
        batches = repeat_passes(self.loader, self.batches_per_epoch, empty)
        for images, _ in itertools.islice(batches, start_batch, None):
            yield model_input(images, self.device)  # uint8 crops normalised there


def no_full_batch(what: str, batch_size: int, dataset: object) -> str:
    """Why a pass over `dataset` gave no batch: too few images for one, or too many of them
    unreadable (as the data set's skip report says)."""
    report = getattr(dataset, "report", lambda: None)()
    said = f"{what} give no full batch of {batch_size} images to each process"
    if report:
        return f"{said} ({report}); replace the damaged files, or use a smaller --batch-size"
    return f"{said}; use a smaller --batch-size"


def repeat_passes(loader: Iterable[T], count: int, empty: Callable[[], str]) -> Iterator[T]:
    """`count` items of `loader`, starting another pass wherever one runs dry first (shards
    shorter than an epoch): every rank then runs the same steps, as a schedule counts on,
    and none is left waiting in a collective. A pass that yields nothing raises `empty()`."""
    produced = 0
    while produced < count:
        passed = produced
        for item in loader:
            yield item
            produced += 1
            if produced == count:
                return
        if produced == passed:
            raise CrossMAEError(empty())


def is_map_style(dataset: Dataset) -> bool:
    return isinstance(dataset, Sized) and not isinstance(dataset, IterableDataset)
