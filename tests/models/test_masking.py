"""Masking: counts with the reference's rounding, a partition of the patches, determinism."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crossmae.models.mask_counts import mask_counts
from crossmae.models.masking import random_masking


@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(1, 4),
    length=st.integers(2, 300),
    mask_ratio=st.floats(0.0, 0.99),
    fraction=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_every_patch_in_exactly_one_group(batch, length, mask_ratio, fraction, seed):
    gamma = mask_ratio * fraction
    if int(length * (1 - mask_ratio)) < 1:
        with pytest.raises(ValueError, match="no visible patch"):
            mask_counts(length, mask_ratio, gamma)
        return
    noise = torch.rand(batch, length, generator=torch.Generator().manual_seed(seed))
    m = random_masking(noise, mask_ratio, gamma)
    counts = mask_counts(length, mask_ratio, gamma)
    assert m.ids_visible.shape == (batch, int(length * (1 - mask_ratio)))
    assert m.ids_skipped.shape == (batch, int(length * (mask_ratio - gamma)))
    assert m.ids_decoded.shape == (batch, counts.decoded)
    everything = torch.cat([m.ids_visible, m.ids_skipped, m.ids_decoded], dim=1)
    assert torch.equal(everything.sort(dim=1).values, torch.arange(length).expand(batch, -1))
    assert torch.all(m.ids_decoded[:, 1:] > m.ids_decoded[:, :-1])  # raster order
    # the lowest noise is visible, the highest decoded
    if counts.decoded and counts.visible:
        low = noise.gather(1, m.ids_visible).max(dim=1).values
        high = noise.gather(1, m.ids_decoded).min(dim=1).values
        assert torch.all(low <= high)


def test_reference_rounding_for_paper_settings():
    assert mask_counts(196, 0.75, 0.25) == mask_counts(196, 0.75, 0.25)
    c = mask_counts(196, 0.75, 0.25)
    assert (c.visible, c.skipped, c.decoded) == (49, 98, 49)
    c = mask_counts(64, 0.75, 0.5)
    assert (c.visible, c.skipped, c.decoded) == (16, 16, 32)
    c = mask_counts(256, 0.75, 0.75)
    assert (c.visible, c.skipped, c.decoded) == (64, 0, 192)


@pytest.mark.parametrize(("p", "g"), [(1.0, 0.5), (-0.1, 0.0), (0.5, 0.6), (0.75, -0.1)])
def test_impossible_ratios_raise(p, g):
    with pytest.raises(ValueError):
        mask_counts(196, p, g)


def test_indicator_marks_exactly_the_ids():
    noise = torch.rand(3, 20)
    m = random_masking(noise, 0.75, 0.25)
    ind = m.indicator(m.ids_decoded)
    assert ind.sum(dim=1).tolist() == [m.ids_decoded.shape[1]] * 3
    assert torch.all(ind.gather(1, m.ids_decoded) == 1)
    assert torch.all(ind.gather(1, m.ids_visible) == 0)
