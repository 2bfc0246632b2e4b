"""Labeled train / evaluation sets for the protocols, and their loaders (one shard per rank)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, Subset

from crossmae.data import open_image_dataset
from crossmae.data.encoded import collate_good, without_stand_ins
from crossmae.data.subset import random_subset
from crossmae.errors import CrossMAEError
from crossmae.train.batches import no_full_batch, repeat_passes, usable_cores
from crossmae.train.distributed import DistInfo
from crossmae.train.signals import interrupt_on_terminate

if TYPE_CHECKING:
    from crossmae.eval.settings import TrainedSettings


@dataclass
class LabeledSplits:
    train: Dataset
    eval: Dataset
    num_classes: int
    classes: list[str]  # the class folders' names; "0", "1", ... for tar shards
    named: bool = True  # False for tar shards, whose labels name no class

    @property
    def class_names(self) -> list[str] | None:
        """The names a classifier trained on these labels keeps (None: only their count)."""
        return self.classes if self.named else None

    def skip_reports(self) -> list[str]:
        """'evaluation images: skipped 2 of 1,000 files: 2 corrupt' for each split that had
        bad images (as far as this process read them)."""
        lines = []
        for what, dataset in (("training", self.train), ("evaluation", self.eval)):
            report = getattr(dataset, "report", None)
            found = report() if report is not None else None
            if found:
                lines.append(f"{what} images: {found}")
        return lines


def open_labeled_splits(
    data: str | None,
    train_transform: Callable,
    eval_transform: Callable,
    in_chans: int = 3,
    *,
    eval_data: str | None = None,
    num_classes: int | None = None,
    train_images: int | None = None,
    eval_images: int | None = None,
    seed: int = 0,
) -> LabeledSplits:
    """DATA's train split and its val/ or test/ split (or `eval_data`), with their classes.

    Folder trees name their classes; tar shards do not, so they need `num_classes`.
    `train_images` / `eval_images` keep a fixed random subset, for quick comparisons.
    """
    train = open_image_dataset(data, "train", train_transform, in_chans, shuffle=True, seed=seed)
    evals = open_image_dataset(
        eval_data if eval_data is not None else data, "val", eval_transform, in_chans
    )
    if eval_data is None and getattr(train, "description", 0) == getattr(evals, "description", 1):
        raise CrossMAEError(f"{data} has no val/ or test/ split to evaluate on; give --eval-data")
    classes = _classes(train, evals, num_classes)
    return LabeledSplits(
        random_subset(train, train_images, seed, "train", "--train-images"),
        random_subset(evals, eval_images, seed, "evaluation", "--eval-images"),
        len(classes),
        classes,
        named=getattr(train, "classes", None) is not None,
    )


def _classes(train: Dataset, evals: Dataset, num_classes: int | None) -> list[str]:
    named = getattr(train, "classes", None)
    if named is None:
        if isinstance(train, IterableDataset):
            if num_classes is None:
                raise CrossMAEError(
                    "tar shards do not say how many classes there are; give --num-classes"
                )
            return [str(i) for i in range(num_classes)]
        raise CrossMAEError("the training images have no labels: put them in one folder per class")
    eval_named = getattr(evals, "classes", None)
    if eval_named is not None and eval_named != named:
        raise CrossMAEError(
            f"the evaluation split's classes ({len(eval_named)}) are not the training "
            f"split's ({len(named)}): both need the same class folders"
        )
    if num_classes is not None and num_classes != len(named):
        raise CrossMAEError(
            f"--num-classes is {num_classes} but the data set has {len(named)} classes"
        )
    if len(named) < 2:
        raise CrossMAEError(f"a classifier needs at least 2 classes, the data set has {len(named)}")
    return list(named)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    dist: DistInfo,
    *,
    train: bool,
    num_workers: int = 0,
    seed: int = 0,
) -> DataLoader:
    """Shuffled and dropping the last partial batch for training; every image that decodes
    once, in order, for evaluation (a bad one is left out, not replaced by the next, which
    would count twice; a batch of only bad ones is None). Under torchrun map-style sets are
    split over ranks (evaluation without the padding a DistributedSampler adds, so summed
    counts are exact); shards split themselves."""
    num_workers = min(num_workers, usable_cores())  # more only queue up for the cores
    sampler = None
    if dist.distributed and not isinstance(dataset, IterableDataset):
        if train:
            sampler = DistributedSampler(
                dataset, dist.world_size, dist.rank, shuffle=True, seed=seed, drop_last=True
            )
        else:
            dataset = Subset(dataset, range(dist.rank, len(dataset), dist.world_size))
    shuffle = train and sampler is None and not isinstance(dataset, IterableDataset)
    return DataLoader(
        dataset if train else without_stand_ins(dataset), batch_size=batch_size,
        shuffle=shuffle, sampler=sampler, num_workers=num_workers, drop_last=train,
        pin_memory=dist.device.type == "cuda", persistent_workers=num_workers > 0,
        collate_fn=None if train else collate_good,
        worker_init_fn=interrupt_on_terminate if num_workers > 0 else None,
    )  # fmt: skip


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Reshuffle for `epoch`, the same way on every rank."""
    for owner in (loader.sampler, loader.dataset):
        if hasattr(owner, "set_epoch"):
            owner.set_epoch(epoch)


def checked_labels(
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    counted_by: str = "check --num-classes",
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Pass batches through, raising a clear error on unlabeled (-1) or out-of-range labels
    (`counted_by` says where the class count came from); None (an evaluation batch whose
    every image was bad) is dropped."""
    for batch in batches:
        if batch is None:
            continue
        imgs, labels = batch
        if labels.min() < 0:
            raise CrossMAEError("the data set has unlabeled images (no class folder or .cls)")
        if labels.max() >= num_classes:
            raise CrossMAEError(
                f"a label is {int(labels.max())} but there are only {num_classes} classes; "
                f"{counted_by}"
            )
        yield imgs, labels


@dataclass
class CheckedLabels:
    """A loader whose every pass goes through `checked_labels` (for repeated evaluation)."""

    loader: Iterable[tuple[torch.Tensor, torch.Tensor]]
    num_classes: int
    counted_by: str = "check --num-classes"

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return checked_labels(iter(self.loader), self.num_classes, self.counted_by)


@dataclass
class EpochBatches:
    """A training loader cut into epochs of a known number of steps (shards have no length)."""

    loader: DataLoader
    num_classes: int
    samples_per_epoch: int | None
    global_batch: int

    @property
    def steps_per_epoch(self) -> int:
        if self.samples_per_epoch is not None:
            steps = self.samples_per_epoch // self.global_batch
        elif isinstance(self.loader.dataset, IterableDataset):
            raise CrossMAEError("tar shards have no length; give --samples-per-epoch")
        else:
            steps = len(self.loader)
        if steps < 1:
            raise CrossMAEError(
                f"an epoch has fewer images than one batch of {self.global_batch}; "
                "lower --batch-size"
            )
        return steps

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        set_epoch(self.loader, epoch)
        batch, data = self.loader.batch_size, self.loader.dataset
        empty = partial(no_full_batch, "the training images", batch, data)
        # shards, or a --samples-per-epoch above the set's size, run dry before the epoch ends
        batches = repeat_passes(self.loader, self.steps_per_epoch, empty)
        return checked_labels(batches, self.num_classes)


def protocol_batches(
    splits: LabeledSplits, s: TrainedSettings, dist: DistInfo
) -> tuple[EpochBatches, CheckedLabels]:
    """The training batches, cut into epochs, and the evaluation pass of a protocol that
    trains (fine-tuning, the probe on a frozen encoder)."""
    train = EpochBatches(
        make_loader(splits.train, s.batch_size, dist, train=True,
                    num_workers=s.num_workers, seed=s.seed),
        splits.num_classes, s.samples_per_epoch, s.batch_size * dist.world_size,
    )  # fmt: skip
    test = make_loader(splits.eval, s.batch_size, dist, train=False, num_workers=s.num_workers)
    return train, CheckedLabels(test, splits.num_classes)
