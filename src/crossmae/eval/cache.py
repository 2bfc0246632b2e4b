"""Features of the train and evaluation splits, extracted once (kNN and the cached probe)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from tqdm import tqdm

from crossmae.data import eval_transform
from crossmae.eval.backbone import Backbone, LoadReport
from crossmae.eval.data import checked_labels, make_loader, open_labeled_splits
from crossmae.eval.features import extract_features, feature_extractor
from crossmae.eval.run import RunContext
from crossmae.eval.settings import TrainSplitSettings


@dataclass
class CachedFeatures:
    """(N, D) float32 features and (N,) labels of both splits, on the CPU."""

    train: tuple[torch.Tensor, torch.Tensor]
    eval: tuple[torch.Tensor, torch.Tensor]
    num_classes: int
    classes: list[str] | None  # the class folders' names (None: tar shards name none)
    report: LoadReport | None

    @property
    def num_features(self) -> int:
        return self.train[0].shape[1]


def cache_features(
    s: TrainSplitSettings, backbone: Backbone, kind: str, ctx: RunContext
) -> CachedFeatures:
    """Extract `kind` features of every image (evaluation transform, no augmentation).

    Under torchrun each process extracts its share and every process gets all of them.
    """
    extractor, report = feature_extractor(backbone, kind, s.image_size())
    extractor.to(ctx.device)
    size, chans = s.image_size() or backbone.arch.img_size, backbone.arch.in_chans
    transform = eval_transform(size, chans, uint8=True)
    splits = open_labeled_splits(
        s.data, transform, transform, chans, eval_data=s.eval_data, num_classes=s.num_classes,
        train_images=s.train_images, eval_images=s.eval_images, seed=s.seed,
    )  # fmt: skip
    out = []
    for name, dataset in (("train", splits.train), ("eval", splits.eval)):
        loader = make_loader(dataset, s.batch_size, ctx.dist, train=False,
                             num_workers=s.num_workers)  # fmt: skip
        batches = checked_labels(_progress(loader, f"{name} features", ctx), splits.num_classes)
        out.append(_gather(*extract_features(extractor, batches, ctx.device, ctx.autocast)))
    for line in splits.skip_reports():
        ctx.say(line)
    return CachedFeatures(out[0], out[1], splits.num_classes, splits.class_names, report)


def _progress(loader: torch.utils.data.DataLoader, what: str, ctx: RunContext) -> Iterator:
    show = ctx.dist.is_main and sys.stderr.isatty()
    return iter(tqdm(loader, desc=what, unit="batch", disable=not show, leave=False))


def _gather(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every process's features, concatenated (the order does not matter to the protocols)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return features, labels
    parts: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (features, labels))
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
