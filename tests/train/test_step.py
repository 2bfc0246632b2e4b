"""One optimizer step: accumulation equals the big batch, clipping, non-finite skips."""

import contextlib

import pytest
import torch

import crossmae
from crossmae.train.optim import build_adamw, param_groups
from crossmae.train.step import OptimizerStep


def _setup(accum, clip=None, sgd=False):
    torch.manual_seed(0)
    model = crossmae.create_model("crossmae_vit_tiny_patch4_32", depth=2, decoder_depth=2)
    if sgd:  # an update proportional to the gradient (Adam's first step is sign-like)
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    else:
        optimizer = build_adamw(param_groups(model, 0.05), 1e-3, (0.9, 0.95), "cpu")
    step = OptimizerStep(model, optimizer, device=torch.device("cpu"), precision="fp32",
                         accum_iter=accum, clip_grad=clip)  # fmt: skip
    return model, step


def test_accumulated_micro_batches_equal_one_big_batch():
    images, noise = torch.randn(8, 3, 32, 32), torch.rand(8, 64)
    big, step = _setup(accum=1, sgd=True)
    out_big = step([(images, noise)], lambda b: big(b[0], noise=b[1]).loss)
    small, step = _setup(accum=2, sgd=True)
    halves = [(images[:4], noise[:4]), (images[4:], noise[4:])]
    out_small = step(halves, lambda b: small(b[0], noise=b[1]).loss)
    assert out_small.loss.item() == pytest.approx(out_big.loss.item(), rel=1e-5)
    assert out_small.grad_norm.item() == pytest.approx(out_big.grad_norm.item(), rel=1e-4)
    for a, b in zip(big.parameters(), small.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)  # same gradient
    assert all(p.grad is None for p in small.parameters())  # ready for the next step


def test_clipping_bounds_the_update_and_reports_the_raw_norm():
    """With SGD at lr 1 the update is the clipped gradient: its norm is the clip."""
    model, step = _setup(accum=1, clip=1e-3, sgd=True)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    out = step([torch.randn(4, 3, 32, 32)], lambda x: model(x).loss * 1e3)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert out.grad_norm.item() > 1.0 and out.nonfinite.item() == 0.0  # the raw norm
    assert (after - before).norm().item() == pytest.approx(1e-3, rel=1e-3)


def test_nonfinite_loss_skips_the_update_without_touching_weights():
    model, step = _setup(accum=2)
    before = [p.detach().clone() for p in model.parameters()]
    images = torch.randn(2, 3, 32, 32)
    losses = iter([torch.tensor(1.0), torch.tensor(float("nan"))])
    out = step([images, images], lambda x: model(x).loss * next(losses))
    assert out.nonfinite.item() == 1.0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    out = step([images, images], lambda x: model(x).loss)
    assert out.nonfinite.item() == 0.0
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_a_short_group_of_micro_batches_is_refused_before_the_update():
    """One micro-batch of two: scaled by 1/2 and, under DDP, never all-reduced."""
    model, step = _setup(accum=2, sgd=True)
    before = [p.detach().clone() for p in model.parameters()]
    images, noise = torch.randn(4, 3, 32, 32), torch.rand(4, 64)
    with pytest.raises(ValueError, match="got 1 micro-batches, not accum_iter=2"):
        step([(images, noise)], lambda b: model(b[0], noise=b[1]).loss)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert all(p.grad is None for p in model.parameters())  # nothing left for the next step


def test_fp16_overflow_is_a_skipped_step_but_leaves_stopping_to_the_scaler():
    """A finite loss whose scaled gradient overflows: the scaler skips the update and lowers
    its scale; the step is counted as skipped (not as good, with an inf norm in the mean)
    but not towards --max-nonfinite, since lowering the scale is the cure."""
    torch.manual_seed(0)
    model = crossmae.create_model("crossmae_vit_tiny_patch4_32", depth=1, decoder_depth=1)
    optimizer = build_adamw(param_groups(model, 0.05), 1e-3, (0.9, 0.95), "cpu")
    step = OptimizerStep(model, optimizer, device=torch.device("cpu"), precision="fp16")
    before = [p.detach().clone() for p in model.parameters()]
    images = torch.randn(2, 3, 32, 32)
    out = step([images], lambda x: model(x).loss * 1e6)
    assert torch.isfinite(out.loss) and not torch.isfinite(out.grad_norm)
    assert (out.nonfinite.item(), out.diverged.item()) == (1.0, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert step.scaler.get_scale() == 2.0**15  # halved from 2**16
    out = step([images], lambda x: model(x).loss)
    assert (out.nonfinite.item(), out.diverged.item()) == (0.0, 0.0)


class _Wrapped(torch.nn.Module):
    """A DDP or FSDP2 stand-in that records, at each backward, whether gradients would be
    all-reduced."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 1)
        self.syncing, self.at_backward = True, []
        self.linear.weight.register_hook(lambda g: self.at_backward.append(self.syncing) or g)
        if kind == "ddp":
            self.no_sync = self._no_sync
        else:
            self.set_requires_gradient_sync = self._set

    @contextlib.contextmanager
    def _no_sync(self):
        self.syncing = False
        yield
        self.syncing = True

    def _set(self, value: bool) -> None:
        self.syncing = value

    def forward(self, x):
        return self.linear(x).sum()


@pytest.mark.parametrize("kind", ["ddp", "fsdp"])
def test_only_the_last_micro_batch_all_reduces(kind):
    """Each process's micro-batches sum locally; one all-reduce per step, on the last
    backward (the first would leave the others' gradients out of the average)."""
    model = _Wrapped(kind)
    step = OptimizerStep(model, torch.optim.SGD(model.parameters(), lr=0.1),
                         device=torch.device("cpu"), precision="fp32", accum_iter=3)  # fmt: skip
    step([torch.randn(2, 3) for _ in range(3)], model)
    assert model.at_backward == [False, False, True]
