"""LARS: trust-ratio-scaled momentum SGD for matrices, plain momentum SGD for vectors, skipping
flagged steps on the device."""

import torch

from crossmae.eval.lars import LARS
from crossmae.train.optim import step_unless_nonfinite


def test_first_step_moves_a_matrix_by_trust_times_its_norm_whatever_the_gradient_scale():
    for grad_scale in (1e-3, 1e3):
        w = torch.nn.Parameter(torch.randn(5, 7))
        before = w.detach().clone()
        w.grad = torch.randn(5, 7) * grad_scale
        LARS([w], lr=0.5, trust_coefficient=0.01).step()
        moved = torch.linalg.vector_norm(w.detach() - before)
        expected = 0.5 * 0.01 * torch.linalg.vector_norm(before)
        torch.testing.assert_close(moved, expected)


def test_weight_decay_enters_the_update_direction_of_matrices_only():
    w = torch.nn.Parameter(torch.randn(4, 4))
    b = torch.nn.Parameter(torch.randn(4))
    w0, b0 = w.detach().clone(), b.detach().clone()
    gw, gb = torch.randn(4, 4), torch.randn(4)
    w.grad, b.grad = gw.clone(), gb.clone()
    LARS([w, b], lr=0.1, weight_decay=0.5, momentum=0.9, trust_coefficient=0.02).step()
    update = gw + 0.5 * w0
    ratio = 0.02 * torch.linalg.vector_norm(w0) / torch.linalg.vector_norm(update)
    torch.testing.assert_close(w.detach(), w0 - 0.1 * ratio * update)
    torch.testing.assert_close(b.detach(), b0 - 0.1 * gb)  # no decay, no trust ratio


def test_momentum_accumulates_and_zero_weights_take_the_raw_gradient():
    w = torch.nn.Parameter(torch.zeros(3, 3))
    g = torch.randn(3, 3)
    opt = LARS([w], lr=1.0, momentum=0.5)
    w.grad = g.clone()
    opt.step()
    torch.testing.assert_close(w.detach(), -g)  # ||w|| = 0: trust ratio is 1
    torch.testing.assert_close(opt.state[w]["mu"], g)


def test_fits_a_linear_classifier():
    x = torch.randn(256, 8)
    y = (x[:, 0] + x[:, 1] > 0).long()
    model = torch.nn.Linear(8, 2)
    opt = LARS(model.parameters(), lr=20.0, trust_coefficient=0.001)
    for _ in range(200):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    assert (model(x).argmax(1) == y).float().mean() > 0.95


def _matrix_and_bias(seed: int) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(4, 6, generator=g)),
            torch.nn.Parameter(torch.randn(6, generator=g))]  # fmt: skip


def test_a_flagged_step_changes_neither_weights_nor_momentum_even_with_nan_gradients():
    params = _matrix_and_bias(0)
    opt = LARS(params, lr=0.1, weight_decay=0.05)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()  # one real step, so momentum is not zero
    before = [p.detach().clone() for p in params] + [opt.state[p]["mu"].clone() for p in params]
    for p in params:
        p.grad = torch.full_like(p, float("nan"))
    step_unless_nonfinite(opt, torch.tensor(1.0))
    after = [p.detach() for p in params] + [opt.state[p]["mu"] for p in params]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_the_skip_flag_is_read_on_the_device(monkeypatch):
    params = _matrix_and_bias(1)
    opt = LARS(params, lr=0.1)
    for p in params:
        p.grad = torch.randn_like(p)

    def host_sync(*_):
        raise AssertionError("the step read a tensor on the host")

    monkeypatch.setattr(torch.Tensor, "item", host_sync)
    monkeypatch.setattr(torch.Tensor, "__bool__", host_sync)
    before = params[0].detach().clone()
    step_unless_nonfinite(opt, torch.tensor(0.0))
    assert not torch.equal(params[0].detach(), before)


def test_under_a_grad_scaler_the_step_is_the_unscaled_one():
    reference, scaled = _matrix_and_bias(2), _matrix_and_bias(2)
    x = torch.randn(5, 4)
    ref_opt, opt = LARS(reference, lr=0.3, weight_decay=0.1), LARS(scaled, lr=0.3, weight_decay=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    for _ in range(3):
        ref_opt.zero_grad()
        (x @ reference[0] + reference[1]).square().mean().backward()
        ref_opt.step()
        opt.zero_grad()
        scaler.scale((x @ scaled[0] + scaled[1]).square().mean()).backward()
        scaler.step(opt)  # no unscale_ first: LARS divides by the scale itself
        scaler.update()
    for a, b in zip(reference, scaled, strict=True):
        torch.testing.assert_close(a, b)


def test_the_defaults_are_maes_momentum_09_and_trust_0001():
    """The probe builds LARS with its defaults; two steps pin both, in float64."""
    w = torch.nn.Parameter(torch.randn(4, 6, dtype=torch.float64))
    w0 = w.detach().clone()
    g1, g2 = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    opt = LARS([w], lr=0.3)
    w.grad = g1.clone()
    opt.step()
    mu = 0.001 * torch.linalg.vector_norm(w0) / torch.linalg.vector_norm(g1) * g1
    torch.testing.assert_close(w.detach(), w0 - 0.3 * mu, rtol=1e-12, atol=0)
    w1 = w.detach().clone()
    w.grad = g2.clone()
    opt.step()
    mu = 0.9 * mu + 0.001 * torch.linalg.vector_norm(w1) / torch.linalg.vector_norm(g2) * g2
    torch.testing.assert_close(w.detach(), w1 - 0.3 * mu, rtol=1e-12, atol=0)


def test_a_matrix_with_a_zero_update_stays_finite():
    """||update|| = 0 (no gradient, no decay): the trust ratio would be inf, and 0 * inf NaN."""
    w = torch.nn.Parameter(torch.randn(3, 3))
    before = w.detach().clone()
    w.grad = torch.zeros(3, 3)
    LARS([w], lr=1.0).step()
    assert torch.equal(w.detach(), before)
