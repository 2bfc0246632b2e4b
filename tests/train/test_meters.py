"""The logging interval's sums: finite steps only, and a divergence streak across intervals."""

import torch

from crossmae.train.meters import StepMeters
from crossmae.train.step import StepResult

CPU = torch.device("cpu")


def _step(loss: float, norm: float, nonfinite: float = 0.0, diverged: float | None = None):
    t = torch.tensor
    flag = nonfinite if diverged is None else diverged
    return StepResult(t(loss), t(norm), t(nonfinite), t(flag))


def test_skipped_steps_leave_the_mean_loss_and_norm_alone():
    """A skipped step's finite half (a loss, or a gradient norm) is left out too."""
    meters = StepMeters(CPU)
    skipped = (_step(10.0, float("inf"), 1.0), _step(float("nan"), 5.0, 1.0))
    for result in (_step(2.0, 1.0), *skipped, _step(4.0, 3.0)):
        meters.count(result)
    reading = meters.read()
    assert (reading.steps, reading.nonfinite) == (4, 2)
    assert reading.loss == 3.0 and reading.grad_norm == 2.0  # (2 + 4) / 2, (1 + 3) / 2
    assert reading.worst_streak == 2 and reading.seconds >= 0


def test_an_interval_of_skipped_steps_has_no_loss_rather_than_zero():
    meters = StepMeters(CPU)
    meters.count(_step(float("inf"), 1.0, 1.0))
    reading = meters.read()
    assert reading.loss is None and reading.grad_norm is None and reading.nonfinite == 1


def test_the_divergence_streak_spans_log_lines_and_a_finite_step_ends_it():
    meters = StepMeters(CPU)
    meters.count(_step(1.0, 1.0))
    meters.count(_step(float("nan"), 1.0, 1.0))
    meters.count(_step(float("nan"), 1.0, 1.0))
    assert meters.read().worst_streak == 2
    meters.reset()
    meters.count(_step(float("nan"), 1.0, 1.0))  # the same run of diverged steps: 3
    assert meters.read().worst_streak == 3
    meters.reset()
    meters.count(_step(1.0, 1.0))
    meters.count(_step(float("nan"), 1.0, 1.0))
    reading = meters.read()
    assert reading.worst_streak == 3  # the interval began three diverged steps in
    assert (reading.steps, reading.nonfinite, reading.loss) == (2, 1, 1.0)
    meters.reset()
    meters.count(_step(float("nan"), 1.0, 1.0))
    assert meters.read().worst_streak == 2  # the finite step began a new streak


def test_an_fp16_overflow_is_skipped_but_does_not_count_towards_stopping():
    meters = StepMeters(CPU)
    meters.count(_step(1.0, float("inf"), nonfinite=1.0, diverged=0.0))  # the scaler's to handle
    reading = meters.read()
    assert reading.nonfinite == 1 and reading.worst_streak == 0 and reading.loss is None
