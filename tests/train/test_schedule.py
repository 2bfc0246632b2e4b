"""The learning-rate schedule and the paper's lr scaling, against hand-computed values."""

import itertools
import math

import pytest

from crossmae.train.schedule import lr_at, scaled_lr


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 0.0),
        (5, 0.5e-3),  # halfway through the 10 warmup steps
        (10, 1e-3),  # peak
        (60, 1e-4 + 0.9e-3 * 0.5),  # halfway through the cosine: the mean of peak and floor
        (110, 1e-4),  # end: min_lr
        (500, 1e-4),  # held after the end
    ],
)
def test_warmup_then_half_cosine(step, expected):
    lr = lr_at(step, base_lr=1e-3, warmup_steps=10, total_steps=110, min_lr=1e-4)
    assert lr == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_cosine_quarter_point():
    # a quarter of the way: 0.5 * (1 + cos(pi / 4)) of the peak
    lr = lr_at(25, base_lr=2.0, warmup_steps=0, total_steps=100)
    assert lr == pytest.approx(1.0 + math.cos(math.pi / 4))


def test_fractional_steps_are_continuous():
    lrs = [lr_at(s / 10, base_lr=1.0, warmup_steps=3, total_steps=20) for s in range(200)]
    assert max(abs(a - b) for a, b in itertools.pairwise(lrs)) < 0.04


def test_linear_scaling_rule():
    assert scaled_lr(1.5e-4, 4096) == pytest.approx(2.4e-3)
    assert scaled_lr(1e-3, 256) == pytest.approx(1e-3)


def test_prediction_ratio_scaling():
    # CrossMAE ViT-B γ = 0.25, p = 0.75, batch 4096: 1.5e-4 * 16 / 3
    assert scaled_lr(1.5e-4, 4096, 0.75, 0.25) == pytest.approx(8e-4)
    assert scaled_lr(1.5e-4, 4096, 0.75, 0.75) == pytest.approx(2.4e-3)
    assert scaled_lr(1.5e-4, 4096, 0.75, None) == pytest.approx(2.4e-3)  # switched off


def test_warmup_over_the_whole_run_leaves_no_cosine_to_divide_by():
    assert lr_at(5, base_lr=1e-3, warmup_steps=10, total_steps=10) == 5e-4
    assert lr_at(10, base_lr=1e-3, warmup_steps=10, total_steps=10, min_lr=1e-5) == 1e-5


def test_schedule_checks_accept_edges_and_refuse_a_zero_rate():
    from crossmae.errors import CrossMAEError
    from crossmae.train.schedule import check_schedule

    check_schedule(10, 10, None, 1e-3, 0.0)  # warmup over every epoch
    check_schedule(10, 0, 1e-3, 1e-3, 1e-3)  # a constant rate: min_lr == lr
    for lr, blr in ((0.0, 1e-3), (None, 0.0)):
        with pytest.raises(CrossMAEError, match="learning rates must be positive"):
            check_schedule(10, 1, lr, blr, 0.0)
