"""Position-embedding resampling for fine-tuning at another resolution or grid shape."""

import pytest
import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from crossmae.eval.pos_embed import resample_pos_embed


def test_constant_field_stays_constant_14_to_28():
    value = torch.randn(1, 1, 32)
    cls = torch.randn(1, 1, 32)
    pos = torch.cat([cls, value.expand(1, 14 * 14, 32)], dim=1)
    out = resample_pos_embed(pos, (14, 14), (28, 28))
    assert out.shape == (1, 1 + 28 * 28, 32)
    torch.testing.assert_close(out[:, :1], cls)
    torch.testing.assert_close(out[:, 1:], value.expand(1, 28 * 28, 32), rtol=1e-5, atol=1e-5)


def test_matches_timm_loading_a_224_checkpoint_at_448():
    """timm's own checkpoint filter, resizing a ViT's positions for a bigger model, agrees."""
    kw = {"patch_size": 16, "embed_dim": 32, "depth": 1, "num_heads": 2, "num_classes": 0}
    small = VisionTransformer(img_size=224, **kw)
    big = VisionTransformer(img_size=448, **kw)
    pos = torch.randn_like(small.pos_embed)
    expected = checkpoint_filter_fn({"pos_embed": pos}, big)["pos_embed"]
    torch.testing.assert_close(resample_pos_embed(pos, (14, 14), (28, 28)), expected)


def test_non_square_grid_goes_through_timm_with_both_sizes():
    pos = torch.randn(1, 1 + 6 * 4, 8)
    out = resample_pos_embed(pos, (6, 4), (3, 8))
    expected = resample_abs_pos_embed(pos, new_size=[3, 8], old_size=[6, 4])
    assert out.shape == (1, 1 + 24, 8)
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, resample_abs_pos_embed(pos, [3, 8], [4, 6]))


def test_same_grid_is_untouched_and_wrong_length_raises():
    pos = torch.randn(1, 1 + 16, 8)
    assert resample_pos_embed(pos, (4, 4), (4, 4)) is pos
    with pytest.raises(ValueError, match="17 rows"):
        resample_pos_embed(pos, (5, 5), (8, 8))


def test_a_table_longer_than_its_grid_is_refused():
    with pytest.raises(ValueError, match="20 rows, expected 17"):
        resample_pos_embed(torch.randn(1, 20, 8), (4, 4), (8, 8))
