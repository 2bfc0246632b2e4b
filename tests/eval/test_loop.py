"""The fine-tune / probe training step (a non-finite gradient never reaches the weights) and the
evaluation pass."""

import contextlib
from contextlib import nullcontext

import pytest
import torch
from timm.utils import ModelEmaV3
from torch import nn

from crossmae.errors import CrossMAEError
from crossmae.eval.loop import Schedule, StepTools, evaluate, optimizer_steps, train_one_epoch
from crossmae.train.optim import build_adamw, param_groups
from crossmae.train.step import OptimizerStep

CPU = torch.device("cpu")


def _tools(model, optimizer, schedule, log_every=100, accum_iter=1) -> StepTools:
    stepper = OptimizerStep(model, optimizer, device=CPU, precision="fp32", accum_iter=accum_iter)
    return StepTools(stepper, nn.CrossEntropyLoss(), schedule, log_every=log_every)


class FiniteLossNanGradient(nn.Module):
    """sqrt(0) is 0 going forward and its derivative infinite: a finite loss, a NaN grad."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.nan_gradient = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(x)
        return out + (self.fc.weight[0, 0] * 0).sqrt() if self.nan_gradient else out


def test_a_step_with_a_finite_loss_and_a_nan_gradient_is_skipped():
    torch.manual_seed(0)
    model = FiniteLossNanGradient()
    optimizer = build_adamw(param_groups(model, 0.05), 1e-2, (0.9, 0.999), "cpu")
    tools = _tools(model, optimizer, Schedule(1e-2, 0, 10))
    before = [p.detach().clone() for p in model.parameters()]
    batch = (torch.randn(8, 4), torch.randint(3, (8,)))
    assert train_one_epoch([batch], tools, 0) == 1
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    model.nan_gradient = False  # the same step with a finite gradient updates
    train_one_epoch([batch], tools, 1)
    assert not torch.equal(before[0], model.fc.weight)


class SyncCounting(nn.Linear):
    """A linear layer that counts the batches it was told to keep out of DDP's all-reduce."""

    def __init__(self) -> None:
        super().__init__(4, 3, dtype=torch.float64)
        self.unsynced = 0

    @contextlib.contextmanager
    def no_sync(self):
        self.unsynced += 1
        yield


def _trained(accum: int, batches) -> SyncCounting:
    torch.manual_seed(0)
    model = SyncCounting()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    tools = _tools(model, optimizer, Schedule(0.1, 0, 10), log_every=1, accum_iter=accum)
    assert train_one_epoch(batches, tools, 0) == len(batches) // accum
    return model


def test_accumulated_batches_make_the_step_of_their_union():
    """Three batches of 8 accumulated: the gradient of one batch of 24 (float64), one
    optimizer step, and only the last batch synchronised."""
    x, y = torch.randn(48, 4, dtype=torch.float64), torch.randint(3, (48,))
    small = list(zip(x.split(8), y.split(8), strict=True))
    whole = list(zip(x.split(24), y.split(24), strict=True))
    accumulated, plain = _trained(3, small), _trained(1, whole)
    torch.testing.assert_close(accumulated.weight, plain.weight, rtol=1e-12, atol=1e-12)
    assert accumulated.unsynced == 4 and plain.unsynced == 0  # 2 steps x 2 unsynced batches


def test_an_epoch_shorter_than_one_accumulation_is_one_sentence():
    assert optimizer_steps(7, 3) == 2  # the last, partial group is left out
    with pytest.raises(CrossMAEError, match="an epoch has 2 batches, fewer than --accum-iter 3"):
        optimizer_steps(2, 3)


def test_the_moving_average_follows_every_optimizer_step():
    """EMA after each update, replayed by hand in float64: the first copies the weights,
    then e <- d e + (1 - d) w (timm's ModelEmaV3 given the update count, as timm's train.py)."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3, dtype=torch.float64)
    ema = ModelEmaV3(model, decay=0.5)
    expected = [p.detach().clone() for p in model.parameters()]
    tools = _tools(model, torch.optim.SGD(model.parameters(), lr=0.5), Schedule(0.5, 0, 10))
    tools.ema = ema
    x, y = torch.randn(12, 4, dtype=torch.float64), torch.randint(3, (12,))
    for i, batch in enumerate(zip(x.split(4), y.split(4), strict=True)):
        train_one_epoch([batch], tools, i)
        d = 0.0 if i == 0 else 0.5
        expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, model.parameters(),
                                                                 strict=True)]  # fmt: skip
    for got, want in zip(ema.module.parameters(), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert not torch.equal(expected[0], model.weight)  # the average lags the weights


class FixedLogits(nn.Module):
    """Returns the logits it was given for the batch's first index, whatever the images."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.logits[index[:, 0]]


def test_evaluate_matches_a_float64_count_over_uneven_batches(monkeypatch):
    logits = torch.randn(23, 7, dtype=torch.float64)
    labels = torch.randint(7, (23,))
    index = torch.arange(23).view(-1, 1)
    batches = list(zip(index.split(5), labels.split(5), strict=True))  # 5, 5, 5, 5, 3

    def host_sync(*_):
        raise AssertionError("evaluate read a tensor on the host inside its loop")

    monkeypatch.setattr(torch.Tensor, "item", host_sync)
    model = FixedLogits(logits.float())
    metrics = evaluate(model, batches, CPU, nullcontext, over_ranks=False)
    monkeypatch.undo()
    ranks = (logits > logits.gather(1, labels.view(-1, 1))).sum(1)  # classes scored above
    assert metrics["images"] == 23
    assert metrics["top1"] == pytest.approx(100 * (ranks == 0).double().mean().item())
    assert metrics["top5"] == pytest.approx(100 * (ranks < 5).double().mean().item())
    expected_loss = nn.functional.cross_entropy(logits, labels).item()
    assert metrics["loss"] == pytest.approx(expected_loss, rel=1e-6)


def test_each_step_runs_at_the_schedules_rate_for_its_own_index():
    """MAE sets the rate before step i from step i itself: 0 at the first warmup step."""
    model = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    schedule = Schedule(0.4, 4, 10)
    seen = []
    original = optimizer.step
    optimizer.step = lambda *a, **k: (seen.append(optimizer.param_groups[0]["lr"]), original())
    tools = _tools(model, optimizer, schedule)
    batches = [(torch.randn(2, 4), torch.randint(3, (2,))) for _ in range(6)]
    train_one_epoch(batches, tools, 0)
    assert seen == pytest.approx([schedule(i) for i in range(6)]) and seen[0] == 0.0


def test_uint8_batches_reach_the_model_normalised_then_erased_then_mixed():
    """Fine-tuning's uint8 crops: normalised, then random erasing (it works on the
    normalised image, as the recipe's per-image transform did), then mixup."""
    from crossmae.data import model_input

    seen = []

    class Recorder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3 * 4 * 4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.detach().clone())
            return self.fc(x.flatten(1))

    model = Recorder()
    tools = _tools(model, torch.optim.SGD(model.parameters(), lr=0.1), Schedule(0.1, 0, 10))
    tools.erase = lambda x: x.add_(1.0)
    tools.mixup = lambda x, y: (x * 2, y)
    images, labels = (
        torch.randint(0, 256, (4, 3, 4, 4), dtype=torch.uint8),
        torch.tensor([0, 1, 0, 1]),
    )
    train_one_epoch([(images, labels)], tools, 0)
    assert torch.equal(seen[0], (model_input(images, CPU) + 1) * 2)
