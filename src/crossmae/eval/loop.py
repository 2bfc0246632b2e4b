"""One training epoch and one evaluation pass, shared by fine-tuning and linear probing."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import nn

from crossmae.errors import CrossMAEError
from crossmae.eval.metrics import topk_correct
from crossmae.train.distributed import all_reduce_mean
from crossmae.train.logging import RunLogger
from crossmae.train.optim import set_lr, step_unless_nonfinite
from crossmae.train.schedule import lr_at
from crossmae.train.step import grad_norm

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
    """What a training step needs besides the model and the data."""

    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    schedule: Schedule
    device: torch.device
    autocast: Callable[[], AbstractContextManager]
    scaler: torch.amp.GradScaler | None = None
    clip_grad: float | None = None
    mixup: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    ema: nn.Module | None = None  # timm.utils.ModelEmaV3
    logger: RunLogger | None = None
    log_every: int = 20


def train_one_epoch(model: nn.Module, batches: Batches, tools: StepTools, step: int) -> int:
    """Train over `batches` starting at optimizer step `step`; returns the next step.

    Non-finite steps are skipped on the device; a non-finite loss at a logging step stops
    the run with an error (a diverged run should not keep writing checkpoints).
    """
    model.train()
    opt = tools.optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    for imgs, targets in batches:
        lr = tools.schedule(step)
        set_lr(opt, lr)
        imgs = imgs.to(tools.device, non_blocking=True)
        targets = targets.to(tools.device, non_blocking=True)
        if tools.mixup is not None:
            imgs, targets = tools.mixup(imgs, targets)
        with tools.autocast():
            loss = tools.criterion(model(imgs).float(), targets)
        opt.zero_grad(set_to_none=True)
        if tools.scaler is not None:  # it skips the update itself when the gradient overflowed
            tools.scaler.scale(loss).backward()
            tools.scaler.unscale_(opt)
            if tools.clip_grad is not None:
                grad_norm(params, tools.clip_grad)
            tools.scaler.step(opt)
            tools.scaler.update()
        else:
            loss.backward()
            norm = grad_norm(params, tools.clip_grad)
            nonfinite = ~torch.isfinite(loss.detach()) | ~torch.isfinite(norm)
            step_unless_nonfinite(opt, nonfinite.float())
        if tools.ema is not None:
            tools.ema.update(model, step=step)
        step += 1
        if step % tools.log_every == 0:
            value = all_reduce_mean(loss.detach()).item()
            if not math.isfinite(value):
                raise CrossMAEError(f"the loss is {value} at step {step}; lower the learning rate")
            if tools.logger is not None:
                line = f"loss {value:.4f} lr {lr:.3g}"
                tools.logger.log({"train_loss": value, "lr": lr}, step, line)
    return step


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Batches,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager],
    over_ranks: bool = True,
) -> dict[str, float]:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy, summed over every process (each
    holds its share of the split), or this process's alone when it holds all of it."""
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, top1, top5, n
    for imgs, labels in batches:
        imgs = imgs.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with autocast():
            logits = model(imgs).float()
        loss = nn.functional.cross_entropy(logits, labels, reduction="sum")
        totals[0] += loss
        totals[1:3] += topk_correct(logits, labels)
        totals[3] += len(labels)
    if over_ranks and torch.distributed.is_initialized():
        totals = all_reduce_mean(totals) * torch.distributed.get_world_size()
    loss_sum, top1, top5, n = totals.tolist()
    if n == 0:
        raise CrossMAEError("the evaluation split has no images")
    return {"top1": 100 * top1 / n, "top5": 100 * top5 / n, "loss": loss_sum / n, "images": int(n)}
