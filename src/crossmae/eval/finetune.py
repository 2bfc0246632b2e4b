"""End-to-end fine-tuning as in MAE: the encoder as a timm ViT, layer decay, mixup/cutmix,
RandAugment, AdamW, warmup + cosine, optional EMA, top-1/top-5 every epoch."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from timm.data import Mixup
from timm.layers import trunc_normal_
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.models.vision_transformer import VisionTransformer
from timm.utils import ModelEmaV3
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from crossmae.data import eval_transform
from crossmae.data.encoded import decoded_images
from crossmae.errors import CrossMAEError
from crossmae.eval.augment import device_erasing, finetune_transform
from crossmae.eval.backbone import load_backbone, load_encoder
from crossmae.eval.data import (
    CheckedLabels,
    LabeledSplits,
    open_labeled_splits,
    protocol_batches,
)
from crossmae.eval.layer_decay import layer_decay_scales
from crossmae.eval.loop import Schedule, StepTools, evaluate, optimizer_steps, train_one_epoch
from crossmae.eval.results import result_table
from crossmae.eval.run import RunContext, check_same_checkpoint, resume_path, spent_seconds
from crossmae.eval.settings import FinetuneSettings
from crossmae.models.classifier import build_vit, classifier_checkpoint
from crossmae.serialization import safe_torch_load
from crossmae.train.checkpointing import capture_rng
from crossmae.train.optim import build_adamw, param_groups
from crossmae.train.schedule import check_min_lr, scaled_lr
from crossmae.train.step import OptimizerStep

LAST, BEST, RESULTS = "checkpoint-last.pth", "checkpoint-best.pth", "results.json"


@dataclass
class Progress:
    """What a resumed run must know about the epochs before it."""

    epoch: int = 0  # epochs done
    best: dict[str, Any] = field(default_factory=lambda: {"top1": -1.0, "top5": -1.0, "epoch": 0})
    history: list[dict[str, Any]] = field(default_factory=list)


def finetune(s: FinetuneSettings) -> dict[str, Any]:
    """Run the recipe in `s`; returns (and writes as results.json) the final numbers."""
    found = resume_path(s.resume, s.run_dir("finetune") / LAST)  # before any work
    with RunContext.start(s, s.run_dir("finetune")) as ctx, ctx.resumable(LAST):
        return _finetune(s, ctx, found)


def _finetune(s: FinetuneSettings, ctx: RunContext, found: Path | None) -> dict[str, Any]:
    global_batch = s.batch_size * s.accum_iter * ctx.dist.world_size
    lr = s.lr if s.lr is not None else scaled_lr(s.blr, global_batch)
    check_min_lr(s.min_lr, lr)
    backbone = load_backbone(s.checkpoint)
    size = s.image_size() or backbone.arch.img_size
    chans = backbone.arch.in_chans
    splits = open_labeled_splits(
        s.data, finetune_transform(size, chans, auto_augment=s.auto_augment, re_prob=s.reprob,
                                   uint8=True),
        eval_transform(size, chans, uint8=True), chans, eval_data=s.eval_data,
        num_classes=s.num_classes, train_images=s.train_images, eval_images=s.eval_images,
        seed=s.seed,
    )  # fmt: skip
    vit = build_vit(backbone.arch, splits.num_classes, s.global_pool, size, s.drop_path)
    vit.set_grad_checkpointing(s.grad_checkpointing)
    report = load_encoder(vit, backbone)
    trunc_normal_(vit.head.weight, std=2e-5)  # MAE: a near-zero head keeps early steps gentle
    nn.init.zeros_(vit.head.bias)
    vit.to(ctx.device)
    ctx.say(f"fine-tuning {backbone.description} on {splits.num_classes} classes")
    for line in report.lines() if found is None else []:  # resumed: all from the checkpoint
        ctx.say(f"  {line}")

    train, test = protocol_batches(splits, s, ctx.dist)
    scales = layer_decay_scales(backbone.arch.depth, s.layer_decay)
    groups = param_groups(vit, s.weight_decay, scales, no_decay=vit.no_weight_decay())
    optimizer = build_adamw(groups, lr, (0.9, 0.999), ctx.device)
    mixup = None
    if s.mixup > 0 or s.cutmix > 0:
        mixup = Mixup(mixup_alpha=s.mixup, cutmix_alpha=s.cutmix, label_smoothing=s.smoothing,
                      num_classes=splits.num_classes)  # fmt: skip
    ema = ModelEmaV3(vit, decay=s.ema_decay) if s.ema else None
    model = DistributedDataParallel(vit, ctx.device_ids) if ctx.dist.distributed else vit
    stepper = OptimizerStep(model, optimizer, device=ctx.device, precision=ctx.precision,
                            accum_iter=s.accum_iter, clip_grad=s.clip_grad)  # fmt: skip
    progress = Progress()
    if found is not None:
        progress = _restore(found, vit, stepper, ema, ctx, s.checkpoint)
        ctx.say(f"resumed from {found} after epoch {progress.epoch}")

    steps = optimizer_steps(train.steps_per_epoch, s.accum_iter)
    tools = StepTools(
        stepper, _criterion(s, mixup).to(ctx.device),
        Schedule(lr, s.warmup_epochs * steps, s.epochs * steps, s.min_lr), mixup, ema,
        ctx.logger(s.epochs * steps, progress.epoch * steps), s.log_every,
        erase=device_erasing(s.reprob, ctx.device),
    )  # fmt: skip
    began = time.time() - spent_seconds(progress.history)
    step = progress.epoch * steps
    for epoch in range(progress.epoch, s.epochs):
        batches = itertools.islice(train.epoch(epoch), steps * s.accum_iter)
        step = train_one_epoch(batches, tools, step)
        metrics = _evaluate(vit, ema, test, ctx)
        record = {"epoch": epoch + 1, **metrics, "seconds": round(time.time() - began, 1)}
        progress.epoch = epoch + 1
        progress.history.append(record)
        files = {}  # the best first: the last one's `best` is that file's epoch
        if record["top1"] > progress.best["top1"]:
            progress.best = {"top1": record["top1"], "top5": record["top5"], "epoch": epoch + 1}
            files[BEST] = _checkpoint(vit, splits, ema, s, progress)
        files[LAST] = _checkpoint(vit, splits, ema, s, progress, stepper)
        ctx.save(files)
        line = f"epoch {epoch + 1}/{s.epochs}: {_accuracy(metrics)}"
        ctx.log_epoch({"epoch": epoch + 1, **{f"test_{k}": v for k, v in metrics.items()}},
                      step, line)  # fmt: skip
    final = progress.history[-1] if progress.history else _evaluate(vit, ema, test, ctx)
    for line in splits.skip_reports():
        ctx.say(line)

    results: dict[str, Any] = {
        "command": "finetune",
        "checkpoint": str(s.checkpoint),
        "encoder": backbone.description,
        "classes": splits.num_classes,
        "train_images": decoded_images(splits.train),
        "eval_images": final["images"],
        "global_pool": s.global_pool,
        "image_size": f"{size[0]}x{size[1]}",
        "epochs": s.epochs,
        "effective_batch": global_batch,
        "lr": lr,
        "top1": final["top1"],
        "top5": final["top5"],
        **({"ema_top1": final["ema_top1"]} if "ema_top1" in final else {}),
        "best_top1": progress.best["top1"],
        "best_epoch": progress.best["epoch"],
        "train_seconds": round(time.time() - began, 1),
        "best_checkpoint": str(ctx.output_dir / BEST),
        "history": progress.history,
    }
    ctx.finish(result_table(f"fine-tuned {Path(s.checkpoint).name}", results), results, RESULTS)
    return results


def _accuracy(metrics: dict[str, Any]) -> str:
    return f"top-1 {metrics['top1']:.2f} top-5 {metrics['top5']:.2f}"


def _criterion(s: FinetuneSettings, mixup: Mixup | None) -> nn.Module:
    if mixup is not None:
        return SoftTargetCrossEntropy()  # mixup builds smoothed soft targets itself
    if s.smoothing > 0:
        return LabelSmoothingCrossEntropy(s.smoothing)
    return nn.CrossEntropyLoss()


def _evaluate(
    vit: nn.Module, ema: ModelEmaV3 | None, test: CheckedLabels, ctx: RunContext
) -> dict[str, Any]:
    record: dict[str, Any] = evaluate(vit, test, ctx.device, ctx.autocast)
    if ema is not None:
        averaged = evaluate(ema.module, test, ctx.device, ctx.autocast)
        record |= {"ema_top1": averaged["top1"], "ema_top5": averaged["top5"]}
    return record


def _checkpoint(
    vit: VisionTransformer,
    splits: LabeledSplits,
    ema: ModelEmaV3 | None,
    s: FinetuneSettings,
    progress: Progress,
    stepper: OptimizerStep | None = None,
) -> dict[str, Any]:
    """A classifier checkpoint; with the optimizer's state (the last one) it can also be
    resumed."""
    extra: dict[str, Any] = {
        "epoch": progress.epoch,
        "ema": None if ema is None else ema.module.state_dict(),
        "settings": s.to_dict(),
    }
    if stepper is not None:
        extra |= {
            "optimizer": stepper.optimizer.state_dict(),
            "scaler": stepper.scaler.state_dict() if stepper.scaler else None,
            "best": progress.best,
            "history": progress.history,
            "rng": capture_rng(),
        }
    return classifier_checkpoint(vit, splits.class_names, **extra)


def _restore(
    path: Path,
    vit: nn.Module,
    stepper: OptimizerStep,
    ema: ModelEmaV3 | None,
    ctx: RunContext,
    checkpoint: str,
) -> Progress:
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or "optimizer" not in ckpt or "best" not in ckpt:
        raise CrossMAEError(f"{path} is not a fine-tuning checkpoint to resume (no optimizer)")
    check_same_checkpoint(path, (ckpt.get("settings") or {}).get("checkpoint"), checkpoint)
    try:
        vit.load_state_dict(ckpt["model"])
    except RuntimeError:
        raise CrossMAEError(f"{path} was fine-tuned with another model or class count") from None
    try:
        stepper.optimizer.load_state_dict(ckpt["optimizer"])
    except ValueError:  # another number of parameter groups
        raise CrossMAEError(
            f"{path} was fine-tuned with other optimizer groups (another --layer-decay or "
            "encoder depth); resume with its settings or start a new --output-dir"
        ) from None
    if stepper.scaler is not None and ckpt.get("scaler"):
        stepper.scaler.load_state_dict(ckpt["scaler"])
    if ema is not None:  # a run resumed with --ema for the first time averages from here
        ema.module.load_state_dict(ckpt["ema"] if ckpt.get("ema") is not None else vit.state_dict())
    ctx.resume_rng(ckpt["rng"], int(ckpt["epoch"]))
    return Progress(int(ckpt["epoch"]), dict(ckpt["best"]), list(ckpt["history"]))
