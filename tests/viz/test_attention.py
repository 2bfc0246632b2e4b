import pytest
import torch

import crossmae
from crossmae.models.layers import _merge_heads
from crossmae.viz.attention import (
    cross_attention_maps,
    cross_attention_probs,
    mae_attention_mass,
    self_attention_probs,
)
from crossmae.viz.trace import make_noise, trace_decoder

from conftest import REFERENCE_DIR


def _trace(model, batch=2):
    imgs = torch.randn(batch, 3, 32, 32)
    masking = model.mask(batch, imgs.device, make_noise(batch, model.config.num_patches, 5))
    return trace_decoder(model, imgs, masking)


@pytest.mark.parametrize("fixture", ["crossmae_wfm_input_pr025", "crossmae_wfm_selfattn_pr050"])
def test_cross_attention_probabilities_are_the_ones_the_block_uses(fixture):
    model = crossmae.load_model(REFERENCE_DIR / f"{fixture}.checkpoint.pth").eval()
    trace = _trace(model)
    for block, x, context in zip(model.decoder.blocks, trace.states, trace.contexts, strict=False):
        probs = cross_attention_probs(block, x, context)
        inp = x + block.self_attn(block.norm0(x)) if block.has_self_attn else x
        _, _, v = block.cross_attn.qkv_heads(block.norm1(inp), context)
        via_probs = block.cross_attn.proj(_merge_heads(probs @ v))
        with torch.no_grad():
            torch.testing.assert_close(
                via_probs, block.cross_attn(block.norm1(inp), context), rtol=1e-4, atol=1e-5
            )


def test_cross_attention_maps_are_distributions_over_cls_and_visible_tokens(tiny):
    model = tiny()
    trace = _trace(model)
    maps = cross_attention_maps(trace)
    n_vis = trace.masking.ids_visible.shape[1]
    assert maps.shape == (3, 2, 16, 1 + n_vis)
    torch.testing.assert_close(maps.sum(-1), torch.ones(3, 2, 16))
    assert (maps >= 0).all()


def test_mae_self_attention_probabilities_are_the_ones_the_block_uses():
    model = crossmae.load_model(REFERENCE_DIR / "mae_npl.checkpoint.pth").eval()
    trace = _trace(model)
    block, x = model.decoder.blocks[0], trace.states[0]
    probs = self_attention_probs(block, x)
    _, _, v = block.attn.qkv_heads(block.norm1(x))
    with torch.no_grad():
        torch.testing.assert_close(
            block.attn.proj(_merge_heads(probs @ v)),
            block.attn(block.norm1(x)),
            rtol=1e-4,
            atol=1e-5,
        )


def test_mae_attention_mass_matches_a_direct_count(tiny):
    model = tiny("mae_vit_tiny_patch4_32")
    trace = _trace(model)
    mass = mae_attention_mass(trace)
    total = mass.to_visible + mass.to_masked + mass.to_cls
    torch.testing.assert_close(total, torch.ones(3))
    # block 2, by loops: every masked query of every image, head mean
    probs = self_attention_probs(model.decoder.blocks[1], trace.states[1]).mean(1)
    masked = trace.masking.ids_masked.tolist()
    vis_share = []
    for b, rows in enumerate(masked):
        vis_keys = [1 + i for i in trace.masking.ids_visible[b].tolist()]
        vis_share += [probs[b, 1 + q, vis_keys].sum().item() for q in rows]
    assert mass.to_visible[1].item() == pytest.approx(sum(vis_share) / len(vis_share), rel=1e-5)


def test_attention_views_refuse_the_other_decoder(tiny):
    with pytest.raises(ValueError, match="CrossMAE"):
        cross_attention_maps(_trace(tiny("mae_vit_tiny_patch4_32")))
    with pytest.raises(ValueError, match="MAE"):
        mae_attention_mass(_trace(tiny()))
