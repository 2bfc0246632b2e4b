"""Position-embedding resampling for fine-tuning at another resolution or grid shape."""

import pytest
import torch
from timm.layers import resample_abs_pos_embed

from crossmae.eval.pos_embed import resample_pos_embed


def test_constant_field_stays_constant_14_to_28():
    value = torch.randn(1, 1, 32)
    cls = torch.randn(1, 1, 32)
    pos = torch.cat([cls, value.expand(1, 14 * 14, 32)], dim=1)
    out = resample_pos_embed(pos, (14, 14), (28, 28))
    assert out.shape == (1, 1 + 28 * 28, 32)
    torch.testing.assert_close(out[:, :1], cls)
    torch.testing.assert_close(out[:, 1:], value.expand(1, 28 * 28, 32), rtol=1e-5, atol=1e-5)


def _mae_interpolate_pos_embed(pos_embed: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """MAE's util/pos_embed.py `interpolate_pos_embed`, its tensor lines verbatim."""
    extra_tokens = pos_embed[:, :1]
    pos_tokens = pos_embed[:, 1:]
    pos_tokens = pos_tokens.reshape(-1, orig, orig, pos_embed.shape[-1]).permute(0, 3, 1, 2)
    pos_tokens = torch.nn.functional.interpolate(
        pos_tokens, size=(new, new), mode="bicubic", align_corners=False
    )
    pos_tokens = pos_tokens.permute(0, 2, 3, 1).flatten(1, 2)
    return torch.cat((extra_tokens, pos_tokens), dim=1)


@pytest.mark.parametrize(("orig", "new"), [(14, 28), (14, 7), (4, 6)])
def test_matches_maes_interpolate_pos_embed_in_float64(orig, new):
    pos = torch.randn(1, 1 + orig * orig, 16, dtype=torch.float64)
    out = resample_pos_embed(pos, (orig, orig), (new, new))
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, _mae_interpolate_pos_embed(pos, orig, new), rtol=0, atol=0)


def test_is_not_timms_antialiased_resampling():
    """timm's default kernel differs even upsampling: starting 448-px fine-tuning from its
    table would not start where MAE's did."""
    pos = torch.randn(1, 1 + 14 * 14, 16)
    timm = resample_abs_pos_embed(pos, new_size=[28, 28], old_size=[14, 14])
    assert (resample_pos_embed(pos, (14, 14), (28, 28)) - timm).abs().max() > 1e-3


def test_non_square_grid_keeps_rows_and_columns_apart():
    pos = torch.randn(1, 1 + 6 * 4, 8, dtype=torch.float64)
    out = resample_pos_embed(pos, (6, 4), (3, 8))
    grid = pos[:, 1:].reshape(1, 6, 4, 8).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(3, 8), mode="bicubic",
                                               align_corners=False)  # fmt: skip
    assert out.shape == (1, 1 + 24, 8)
    torch.testing.assert_close(out[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 24, 8))
    torch.testing.assert_close(out[:, :1], pos[:, :1])
    transposed = resample_pos_embed(pos, (4, 6), (8, 3))
    assert not torch.allclose(out, transposed)


def test_same_grid_is_untouched_and_wrong_length_raises():
    pos = torch.randn(1, 1 + 16, 8)
    assert resample_pos_embed(pos, (4, 4), (4, 4)) is pos
    with pytest.raises(ValueError, match="17 rows"):
        resample_pos_embed(pos, (5, 5), (8, 8))


def test_a_table_longer_than_its_grid_is_refused():
    with pytest.raises(ValueError, match="20 rows, expected 17"):
        resample_pos_embed(torch.randn(1, 20, 8), (4, 4), (8, 8))
