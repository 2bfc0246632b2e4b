"""One training epoch and one evaluation pass, shared by fine-tuning and linear probing."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from crossmae.data.transforms import model_input
from crossmae.errors import CrossMAEError
from crossmae.eval.metrics import topk_correct
from crossmae.train.distributed import all_reduce_mean
from crossmae.train.logging import RunLogger
from crossmae.train.optim import set_lr
from crossmae.train.schedule import lr_at
from crossmae.train.step import OptimizerStep

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Schedule:
    """Per-step warmup + cosine (`train.schedule.lr_at`), in optimizer steps."""

    base_lr: float
    warmup_steps: float
    total_steps: float
    min_lr: float = 0.0

    def __call__(self, step: float) -> float:
        return lr_at(
            step, base_lr=self.base_lr, warmup_steps=self.warmup_steps,
            total_steps=self.total_steps, min_lr=self.min_lr,
        )  # fmt: skip


@dataclass
class StepTools:
    """What a training step needs besides the data: the update itself (accumulation,
    precision, clipping, skipping non-finite steps: `train.step.OptimizerStep`, the one
    pretraining uses), the loss, the schedule, and what fine-tuning adds around it."""

    stepper: OptimizerStep  # holds the model (DDP-wrapped, if so) and the optimizer
    criterion: nn.Module
    schedule: Schedule
    mixup: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    ema: nn.Module | None = None  # timm.utils.ModelEmaV3
    logger: RunLogger | None = None
    log_every: int = 20
    erase: Callable[[torch.Tensor], torch.Tensor] | None = None  # augment.device_erasing


def optimizer_steps(batches_per_epoch: int, accum_iter: int) -> int:
    """Optimizer steps in an epoch of `batches_per_epoch` (a last, partial group is left out)."""
    if batches_per_epoch < accum_iter:
        raise CrossMAEError(
            f"an epoch has {batches_per_epoch} batches, fewer than --accum-iter {accum_iter}; "
            "lower --accum-iter or --batch-size"
        )
    return batches_per_epoch // accum_iter


def train_one_epoch(batches: Batches, tools: StepTools, step: int) -> int:
    """Train over `batches` starting at optimizer step `step`; returns the next step.

    Every `accum_iter` batches make one optimizer step, as MAE's `--accum_iter`, so
    `batches` holds whole groups (`optimizer_steps` × `accum_iter`). Non-finite steps are
    skipped on the device; a non-finite loss at a logging step stops the run with an error
    (a diverged run should not keep writing checkpoints).
    """
    stepper = tools.stepper
    model = stepper.model.train()
    batches = iter(batches)
    for first in batches:
        lr = tools.schedule(step)
        set_lr(stepper.optimizer, lr)
        group = itertools.chain([first], itertools.islice(batches, stepper.accum_iter - 1))
        result = stepper(_on_device(group, tools), lambda batch: _loss(model, batch, tools))
        step += 1
        if tools.ema is not None:  # the updates so far, as timm's train.py counts: the
            tools.ema.update(model, step=step)  # first copies the weights, later ones average
        if step % tools.log_every == 0:
            value = all_reduce_mean(result.loss).item()
            if not math.isfinite(value):
                raise CrossMAEError(f"the loss is {value} at step {step}; lower the learning rate")
            if tools.logger is not None:
                line = f"loss {value:.4f} lr {lr:.3g}"
                tools.logger.log({"train_loss": value, "lr": lr}, step, line)
    return step


def _on_device(group: Batches, tools: StepTools) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The group's batches on the device, normalised, erased (fine-tuning's uint8 crops) and
    mixed (mixup / cutmix), outside autocast."""
    device = tools.stepper.device
    for imgs, targets in group:
        imgs = model_input(imgs, device)
        if tools.erase is not None:
            imgs = tools.erase(imgs)
        targets = targets.to(device, non_blocking=True)
        yield tools.mixup(imgs, targets) if tools.mixup is not None else (imgs, targets)


def _loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], tools: StepTools
          ) -> torch.Tensor:  # fmt: skip
    imgs, targets = batch
    return tools.criterion(model(imgs).float(), targets)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Batches,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager],
    over_ranks: bool = True,
    classes: list[str] | None = None,
) -> dict[str, Any]:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy, summed over every process (each
    holds its share of the split), or this process's alone when it holds all of it; with
    `classes`, also each class's top-1 (`per_class`, None for a class with no images)."""
    model.eval()
    count = len(classes) if classes else 0
    # loss sum, top1, top5, n; then per class: right, n (counted on the device: no syncs)
    totals = torch.zeros(4 + 2 * count, dtype=torch.float64, device=device)
    for imgs, labels in batches:
        imgs = model_input(imgs, device)
        labels = labels.to(device, non_blocking=True)
        with autocast():
            logits = model(imgs).float()
        loss = nn.functional.cross_entropy(logits, labels, reduction="sum")
        totals[0] += loss
        totals[1:3] += topk_correct(logits, labels)
        totals[3] += len(labels)
        if count:
            right = (logits.argmax(dim=1) == labels).double()
            totals[4 : 4 + count].index_add_(0, labels, right)
            totals[4 + count :].index_add_(0, labels, torch.ones_like(right))
    if over_ranks and torch.distributed.is_initialized():
        totals = all_reduce_mean(totals) * torch.distributed.get_world_size()
    loss_sum, top1, top5, n, *per_class = totals.tolist()
    if n == 0:
        raise CrossMAEError("the evaluation split has no images")
    out: dict[str, Any] = {
        "top1": 100 * top1 / n, "top5": 100 * top5 / n, "loss": loss_sum / n, "images": int(n)
    }  # fmt: skip
    if classes:
        pairs = zip(classes, per_class[:count], per_class[count:], strict=True)
        out["per_class"] = {name: 100 * hits / k if k else None for name, hits, k in pairs}
    return out
