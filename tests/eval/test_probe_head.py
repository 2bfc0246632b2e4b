"""MAE's probe head, with statistics that are exact for a frozen encoder."""

import pytest
import torch
from torch import nn

from crossmae.eval.probe_head import CumulativeBatchNorm, FrozenEncoderProbe, LinearProbe


def test_head_is_batchnorm_without_affine_then_a_small_linear_layer():
    norm, linear = LinearProbe(256, 1000)
    assert isinstance(norm, nn.BatchNorm1d) and not norm.affine and norm.eps == 1e-6
    assert linear.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.equal(linear.bias, torch.zeros(1000))


def test_running_statistics_are_the_average_over_every_batch_seen():
    probe = LinearProbe(8, 3).train()
    features = torch.randn(120, 8) * 3 + 5
    batches = features.split(40)
    for batch in batches:
        probe(batch)
    norm = probe[0]
    torch.testing.assert_close(norm.running_mean, features.mean(0))
    expected_var = torch.stack([b.var(0) for b in batches]).mean(0)  # unbiased per batch
    torch.testing.assert_close(norm.running_var, expected_var)


def test_host_counted_statistics_are_torchs_cumulative_ones_across_a_resume():
    reference = nn.BatchNorm1d(6, eps=1e-6, affine=False, momentum=None).double()
    ours = CumulativeBatchNorm(6, eps=1e-6).double()
    for size in (5, 9, 3):
        batch = torch.randn(size, 6, dtype=torch.float64) * 2 + 1
        reference(batch), ours(batch)
    resumed = CumulativeBatchNorm(6, eps=1e-6).double()
    resumed.load_state_dict(ours.state_dict())
    for size in (7, 4):
        batch = torch.randn(size, 6, dtype=torch.float64) - 3
        reference(batch), resumed(batch)
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], tensor, rtol=1e-12, atol=0)


def test_training_steps_read_nothing_back_from_the_device(monkeypatch):
    """torch's momentum=None BatchNorm runs float(num_batches_tracked) every step."""
    norm = CumulativeBatchNorm(4, eps=1e-6)
    norm(torch.randn(8, 4))  # the first step reads the count once

    def sync(*_):
        raise AssertionError("a host read of a tensor in a training step")

    for method in ("__float__", "__int__", "item"):
        monkeypatch.setattr(torch.Tensor, method, sync)
    for _ in range(3):
        norm(torch.randn(8, 4))
    with pytest.raises(AssertionError, match="host read"):
        nn.BatchNorm1d(4, affine=False, momentum=None)(torch.randn(8, 4))


def test_frozen_encoder_stays_in_eval_mode_and_gets_no_gradient():
    encoder = nn.Sequential(nn.Linear(6, 6), nn.Dropout(0.9))
    probe = FrozenEncoderProbe(encoder, LinearProbe(6, 2)).train()
    assert not encoder.training and probe.head.training
    x = torch.randn(16, 6)
    probe(x).sum().backward()
    assert all(p.grad is None for p in encoder.parameters())
    assert probe.head[1].weight.grad is not None
    torch.testing.assert_close(encoder(x), encoder(x))  # dropout off: deterministic
