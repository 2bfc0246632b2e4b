"""Position embeddings against MAE's numpy code, patchify round trips, config validation."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crossmae import CrossMAEError, get_config
from crossmae.models.patchify import patchify, unpatchify
from crossmae.models.pos_embed import sincos_2d_pos_embed


def _mae_numpy_pos_embed(embed_dim: int, grid_size: int) -> np.ndarray:
    """MAE's util/pos_embed.py, transcribed (square grids, class token row of zeros)."""

    def one_d(dim, pos):
        omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
        omega = 1.0 / 10000**omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape([2, 1, grid_size, grid_size])
    emb = np.concatenate([one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])], axis=1)
    return np.concatenate([np.zeros([1, embed_dim]), emb], axis=0)


@pytest.mark.parametrize(("dim", "grid"), [(768, 14), (64, 8), (1280, 16), (32, 5)])
def test_pos_embed_matches_mae_numpy(dim, grid):
    ours = sincos_2d_pos_embed(dim, (grid, grid), cls_token=True)
    ref = torch.from_numpy(_mae_numpy_pos_embed(dim, grid)).float().unsqueeze(0)
    assert torch.equal(ours, ref)


def test_pos_embed_non_square_rows_and_columns():
    emb = sincos_2d_pos_embed(16, (3, 5), cls_token=False)[0]
    assert emb.shape == (15, 16)
    grid = emb.view(3, 5, 16)
    # first half depends only on the column, second half only on the row
    assert torch.equal(grid[0, :, :8], grid[2, :, :8])
    assert torch.equal(grid[:, 0, 8:], grid[:, 4, 8:])
    assert not torch.equal(grid[0, 0, :8], grid[0, 1, :8])


@settings(max_examples=40, deadline=None)
@given(
    c=st.integers(1, 6),
    p=st.sampled_from([1, 2, 4, 7]),
    gh=st.integers(1, 5),
    gw=st.integers(1, 5),
    seed=st.integers(0, 10_000),
)
def test_patchify_round_trip(c, p, gh, gw, seed):
    imgs = torch.randn(2, c, gh * p, gw * p, generator=torch.Generator().manual_seed(seed))
    patches = patchify(imgs, p)
    assert patches.shape == (2, gh * gw, p * p * c)
    assert torch.equal(unpatchify(patches, p, (gh, gw)), imgs)
    # patch 0 is the top-left block, flattened as (row, col, channel)
    assert torch.equal(patches[:, 0], imgs[:, :, :p, :p].permute(0, 2, 3, 1).reshape(2, -1))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mask_ratio": 1.0}, "mask ratio"),
        ({"mask_ratio": 0.0}, "mask ratio"),
        ({"prediction_ratio": 0.9}, "prediction ratio"),
        ({"prediction_ratio": 0.0}, "prediction ratio"),
        ({"img_size": 30}, "not divisible by the patch size"),
        ({"decoder_heads": 5}, "not divisible by 5 heads"),
        ({"fusion_layers": [40]}, "outside the 12 encoder blocks"),
        ({"decoder": "conv"}, "decoder must be"),
        ({"fusion_weights": "softmx"}, "fusion_weights must be 'linear' or 'softmax'"),
        ({"img_size": "64"}, "img_size must be an int"),
        ({"img_size": 32.0}, "img_size must be an int"),
        ({"norm_pix_loss": "false"}, "norm_pix_loss must be True or False"),
        ({"depth": 12.0}, "depth must be an int"),
        ({"mask_ratio": "0.75"}, "mask_ratio must be a number"),
        ({"fusion_layers": 3}, "fusion_layers must be a list"),
        ({"mlp_ratio": 0.004}, "no hidden unit"),
        ({"patch_size": 1, "in_chans": 1}, "one value per patch"),
    ],
)
def test_invalid_settings_name_the_problem(overrides, message):
    with pytest.raises(CrossMAEError, match=message):
        get_config("crossmae_vit_tiny_patch4_32", **overrides)


def test_unknown_model_and_setting():
    with pytest.raises(CrossMAEError, match="unknown model"):
        get_config("crossmae_vit_gigantic")
    with pytest.raises(CrossMAEError, match=r"mask_rato \(did you mean mask_ratio\?\)"):
        get_config("crossmae_vit_tiny_patch4_32", mask_rato=0.5)


@pytest.mark.parametrize(("weights", "project"), [("linear", False), ("softmax", True)])
def test_fusion_is_a_normed_weighted_sum_of_projected_layers(weights, project):
    """Block i reads LN_i(sum_j W'[i, j] P_j(F_j)), W' = W or softmax(W) by row, in float64."""
    from crossmae.models.fusion import FeatureFusion

    fusion = FeatureFusion(3, 2, 8, weights=weights, project=project).double()
    with torch.no_grad():
        for norm in fusion.norms:  # non-trivial affine, so each block's own LN is checked
            norm.weight.normal_(), norm.bias.normal_()
    layers = [torch.randn(2, 5, 8, dtype=torch.float64) for _ in range(3)]
    w = fusion.weight.softmax(1) if weights == "softmax" else fusion.weight
    projected = [
        torch.nn.functional.linear(f, p.weight, p.bias) if project else f
        for f, p in zip(layers, fusion.projections or [None] * 3, strict=True)
    ]
    out = fusion(layers)
    for i, norm in enumerate(fusion.norms):
        mixed = sum(w[i, j] * projected[j] for j in range(3))
        expected = torch.nn.functional.layer_norm(mixed, (8,), norm.weight, norm.bias, 1e-6)
        torch.testing.assert_close(out[i], expected, rtol=1e-12, atol=1e-12)


def test_fusion_weights_start_xavier_uniform_as_the_reference():
    from crossmae.models.fusion import FeatureFusion

    weight = FeatureFusion(60, 40, 8).weight.detach()
    bound = (6 / (60 + 40)) ** 0.5
    assert weight.abs().max() <= bound and weight.abs().max() > 0.95 * bound
    assert weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.05)


def test_pos_embed_width_must_split_into_four_sincos_quarters():
    sincos_2d_pos_embed(12, (2, 3), cls_token=False)  # 12 = 4 x 3: fine
    with pytest.raises(ValueError, match="divisible by 4, got 10"):
        sincos_2d_pos_embed(10, (2, 3), cls_token=False)
