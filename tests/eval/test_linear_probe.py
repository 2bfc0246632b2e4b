"""MAE's probe head, with statistics that are exact for a frozen encoder."""

import pytest
import torch
from torch import nn

from crossmae.eval.linear_probe import FrozenEncoderProbe, LinearProbe


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


def test_frozen_encoder_stays_in_eval_mode_and_gets_no_gradient():
    encoder = nn.Sequential(nn.Linear(6, 6), nn.Dropout(0.9))
    probe = FrozenEncoderProbe(encoder, LinearProbe(6, 2)).train()
    assert not encoder.training and probe.head.training
    x = torch.randn(16, 6)
    probe(x).sum().backward()
    assert all(p.grad is None for p in encoder.parameters())
    assert probe.head[1].weight.grad is not None
    torch.testing.assert_close(encoder(x), encoder(x))  # dropout off: deterministic
