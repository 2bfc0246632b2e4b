"""MAE's linear probe: a BatchNorm + linear head on a frozen encoder, trained with LARS.

The full protocol augments every epoch (RandomResizedCrop + flip) and runs the frozen
encoder each step; `cached` extracts features once, without augmentation, and trains the
head on them: the same head and optimiser at a fraction of the cost, for small data sets
and quick comparisons.

The run ends with classifier.pth: the encoder and the head, its BatchNorm folded into the
linear layer, as one timm ViT that `crossmae evaluate`, `crossmae export` and
`load_model` read like a fine-tuned one (not for `fused` features, which a ViT lacks).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from crossmae.data import eval_transform
from crossmae.data.encoded import decoded_images
from crossmae.errors import CrossMAEError
from crossmae.eval.augment import probe_transform
from crossmae.eval.backbone import Backbone, load_backbone
from crossmae.eval.cache import cache_features
from crossmae.eval.data import (
    EpochBatches,
    LabeledSplits,
    open_labeled_splits,
    protocol_batches,
)
from crossmae.eval.features import feature_extractor
from crossmae.eval.lars import LARS
from crossmae.eval.loop import (
    Batches,
    Schedule,
    StepTools,
    evaluate,
    optimizer_steps,
    train_one_epoch,
)
from crossmae.eval.probe_head import FrozenEncoderProbe, LinearProbe
from crossmae.eval.results import result_table
from crossmae.eval.run import RunContext, check_same_checkpoint, resume_path, spent_seconds
from crossmae.eval.settings import LinprobeSettings
from crossmae.models.classifier import classifier_checkpoint, fold_probe_head
from crossmae.serialization import load_state_dict_strict, safe_torch_load
from crossmae.train.checkpointing import capture_rng
from crossmae.train.optim import param_groups
from crossmae.train.schedule import check_min_lr, scaled_lr
from crossmae.train.step import OptimizerStep

PROBE_FORMAT = "crossmae-linprobe"
LAST, RESULTS, CLASSIFIER = "checkpoint-last.pth", "results.json", "classifier.pth"


@dataclass
class FeatureBatches:
    """Cached features served as shuffled training batches (or in order, for evaluation)."""

    features: torch.Tensor
    labels: torch.Tensor
    batch_size: int
    seed: int = 0

    @property
    def steps_per_epoch(self) -> int:
        steps = len(self.labels) // self.batch_size
        if steps < 1:
            raise CrossMAEError(
                f"an epoch has fewer images ({len(self.labels)}) than one batch of "
                f"{self.batch_size}; lower --batch-size"
            )
        return steps

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(
            len(self.labels), generator=torch.Generator().manual_seed(self.seed + epoch)
        ).to(self.features.device)  # CPU indices into GPU features: a blocking copy a step
        for i in range(self.steps_per_epoch):
            take = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield self.features[take], self.labels[take]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        yield from zip(
            self.features.split(self.batch_size), self.labels.split(self.batch_size), strict=True
        )


@dataclass
class Probe:
    """What the protocol trains and on which batches, whichever mode built it."""

    head: LinearProbe
    model: nn.Module  # the head (cached) or frozen encoder + head
    train: FeatureBatches | EpochBatches
    test: Batches
    num_classes: int
    classes: list[str] | None  # the class folders' names (None: tar shards name none)
    notes: list[str]
    splits: LabeledSplits | None = None  # read during training (cached: read up front)

    @property
    def train_images(self) -> int | None:
        """The images the head learned from (bad files left out; None for tar shards)."""
        if isinstance(self.train, FeatureBatches):
            return len(self.train.labels)
        return decoded_images(self.splits.train) if self.splits else None


def linprobe(s: LinprobeSettings) -> dict[str, Any]:
    """Train the probe for `s.epochs`, evaluating every epoch; returns the result table."""
    found = resume_path(s.resume, s.run_dir("linprobe") / LAST)  # before any work
    with RunContext.start(s, s.run_dir("linprobe")) as ctx, ctx.resumable(LAST):
        return _linprobe(s, ctx, found)


def _linprobe(s: LinprobeSettings, ctx: RunContext, found: Path | None) -> dict[str, Any]:
    # Every process trains the cached head on all the features: no gradients are shared.
    processes = 1 if s.cached else ctx.dist.world_size
    effective_batch = s.batch_size * processes * s.accum_iter
    lr = s.lr if s.lr is not None else scaled_lr(s.blr, effective_batch)
    check_min_lr(s.min_lr, lr)  # before the features are extracted
    backbone = load_backbone(s.checkpoint)
    probe = _cached_probe(s, backbone, ctx) if s.cached else _full_probe(s, backbone, ctx)
    ctx.say(f"linear probe ({s.features} features) on {backbone.description}")
    for line in probe.notes:
        ctx.say(f"  {line}")
    optimizer = LARS(param_groups(probe.head, s.weight_decay), lr=lr)
    precision = "fp32" if s.cached else ctx.precision  # the head alone runs in fp32
    stepper = OptimizerStep(probe.model, optimizer, device=ctx.device, precision=precision,
                            accum_iter=s.accum_iter)  # fmt: skip
    done, best, history = 0, 0.0, []
    if found is not None:
        done, best, history = _restore(found, probe.head, stepper, s, ctx)
        ctx.say(f"resumed from {found} after epoch {done}")

    steps = optimizer_steps(probe.train.steps_per_epoch, s.accum_iter)
    autocast = nullcontext if s.cached else ctx.autocast
    tools = StepTools(
        stepper, nn.CrossEntropyLoss(), Schedule(lr, s.warmup_epochs * steps,
        s.epochs * steps, s.min_lr), logger=ctx.logger(s.epochs * steps, done * steps),
        log_every=s.log_every,
    )  # fmt: skip
    began = time.time() - spent_seconds(history)
    step = done * steps
    metrics: dict[str, Any] = {}
    for epoch in range(done, s.epochs):
        batches = itertools.islice(probe.train.epoch(epoch), steps * s.accum_iter)
        step = train_one_epoch(batches, tools, step)
        metrics = evaluate(probe.model, probe.test, ctx.device, autocast, over_ranks=not s.cached)
        best = max(best, metrics["top1"])
        history.append({"epoch": epoch + 1, **metrics, "seconds": round(time.time() - began, 1)})
        ctx.save({LAST: _checkpoint(probe, s, stepper, epoch + 1, best, history)})
        line = f"epoch {epoch + 1}/{s.epochs}: top-1 {metrics['top1']:.2f} (best {best:.2f})"
        ctx.log_epoch({"epoch": epoch + 1, **{f"test_{k}": v for k, v in metrics.items()}},
                      step, line)  # fmt: skip
    if not metrics:  # resumed a finished run
        metrics = evaluate(probe.model, probe.test, ctx.device, autocast, over_ranks=not s.cached)
    for line in probe.splits.skip_reports() if probe.splits else []:
        ctx.say(line)
    classifier = _save_classifier(probe, backbone, s, ctx)

    results = {
        "command": "linprobe",
        "checkpoint": str(s.checkpoint),
        "encoder": backbone.description,
        "features": s.features,
        "mode": "cached features" if s.cached else "frozen encoder, augmented",
        "classes": probe.num_classes,
        "train_images": probe.train_images,
        "eval_images": metrics["images"],
        "epochs": s.epochs,
        "effective_batch": effective_batch,
        "lr": lr,
        "top1": metrics["top1"],
        "top5": metrics["top5"],
        "best_top1": best,
        "train_seconds": round(time.time() - began, 1),
        "classifier": classifier,
        "history": history,
    }
    ctx.finish(result_table(f"linear probe {Path(s.checkpoint).name}", results), results, RESULTS)
    return results


def _cached_probe(s: LinprobeSettings, backbone: Backbone, ctx: RunContext) -> Probe:
    cached = cache_features(s, backbone, s.features, ctx)
    head = LinearProbe(cached.num_features, cached.num_classes).to(ctx.device)
    train_x, train_y = (t.to(ctx.device) for t in cached.train)
    test_x, test_y = (t.to(ctx.device) for t in cached.eval)
    notes = [f"cached {len(train_y):,} train and {len(test_y):,} evaluation features"]
    notes += cached.report.lines() if cached.report else []
    return Probe(
        head, head, FeatureBatches(train_x, train_y, s.batch_size, s.seed),
        FeatureBatches(test_x, test_y, s.batch_size), cached.num_classes, cached.classes,
        notes,
    )  # fmt: skip


def _full_probe(s: LinprobeSettings, backbone: Backbone, ctx: RunContext) -> Probe:
    extractor, report = feature_extractor(backbone, s.features, s.image_size())
    size, chans = s.image_size() or backbone.arch.img_size, backbone.arch.in_chans
    splits = open_labeled_splits(
        s.data, probe_transform(size, chans, uint8=True), eval_transform(size, chans, uint8=True),
        chans, eval_data=s.eval_data, num_classes=s.num_classes, train_images=s.train_images,
        eval_images=s.eval_images, seed=s.seed,
    )  # fmt: skip
    head = LinearProbe(extractor.num_features, splits.num_classes)
    probe = FrozenEncoderProbe(extractor, head).to(ctx.device)
    model = DistributedDataParallel(probe, ctx.device_ids) if ctx.dist.distributed else probe
    train, test = protocol_batches(splits, s, ctx.dist)
    notes = report.lines() if report else []
    return Probe(head, model, train, test, splits.num_classes, splits.class_names, notes, splits)


def _save_classifier(probe: Probe, backbone: Backbone, s: LinprobeSettings,
                     ctx: RunContext) -> str | None:  # fmt: skip
    """Write the probe as one timm classifier (CLASSIFIER beside LAST); its path, or None
    for `fused` features, which come from the decoder's fusion and fit no ViT."""
    if s.features == "fused":
        ctx.say("no classifier file: 'fused' features come from the decoder, not a ViT")
        return None
    vit, _ = feature_extractor(backbone, s.features, s.image_size())  # a ViT like the one probed
    head = {f"head.{k}": v.cpu() for k, v in probe.head.state_dict().items()}
    vit.reset_classifier(probe.num_classes)  # its head, then the probe's folded over it
    load_state_dict_strict(vit, fold_probe_head(vit.state_dict() | head), "the probe")
    probe_of = {"checkpoint": str(s.checkpoint), "features": s.features, "epochs": s.epochs}
    classifier = classifier_checkpoint(vit, probe.classes, linear_probe=probe_of)
    ctx.save({CLASSIFIER: classifier}, behind=False)  # said next; nothing left to overlap
    path = ctx.output_dir / CLASSIFIER
    ctx.say(f"classifier: {path} (crossmae evaluate, crossmae export, load_model)")
    return str(path)


def _checkpoint(
    probe: Probe,
    s: LinprobeSettings,
    stepper: OptimizerStep,
    epoch: int,
    best: float,
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "format": PROBE_FORMAT,
        "checkpoint": str(s.checkpoint),
        "features": s.features,
        "classes": probe.classes,
        "head": probe.head.state_dict(),
        "optimizer": stepper.optimizer.state_dict(),
        "scaler": stepper.scaler.state_dict() if stepper.scaler else None,
        "epoch": epoch,
        "best_top1": best,
        "history": history,
        "rng": capture_rng(),
        "settings": s.to_dict(),
    }


def _restore(
    path: Path,
    head: LinearProbe,
    stepper: OptimizerStep,
    s: LinprobeSettings,
    ctx: RunContext,
) -> tuple[int, float, list[dict[str, Any]]]:
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != PROBE_FORMAT:
        raise CrossMAEError(f"{path} is not a linear-probe checkpoint to resume")
    check_same_checkpoint(path, ckpt.get("checkpoint"), s.checkpoint)
    if ckpt["features"] != s.features:
        raise CrossMAEError(f"{path} probed {ckpt['features']!r} features, not {s.features!r}")
    try:
        head.load_state_dict(ckpt["head"])
    except RuntimeError:
        raise CrossMAEError(f"{path} probed another encoder or class count") from None
    stepper.optimizer.load_state_dict(ckpt["optimizer"])
    if stepper.scaler is not None and ckpt.get("scaler"):
        stepper.scaler.load_state_dict(ckpt["scaler"])
    ctx.resume_rng(ckpt["rng"], int(ckpt["epoch"]))
    return int(ckpt["epoch"]), float(ckpt["best_top1"]), list(ckpt["history"])
