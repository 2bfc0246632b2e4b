"""LARS: trust-ratio-scaled momentum SGD for matrices, plain momentum SGD for vectors."""

import torch

from crossmae.eval.lars import LARS


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
