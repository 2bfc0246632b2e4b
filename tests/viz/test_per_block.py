import pytest
import torch

import crossmae
from crossmae.viz.per_block import block_terms, term_pixels
from crossmae.viz.trace import make_noise, trace_decoder

from conftest import REFERENCE_DIR

# The authors'-format fixtures have every parameter perturbed (non-zero biases, LN affine).
FIXTURES = ["crossmae_wfm_input_pr025", "crossmae_wfm_selfattn_pr050", "mae_npl"]


def _trace(model, batch=3, seed=0, **mask):
    imgs = torch.randn(batch, model.config.in_chans, 32, 32)
    noise = make_noise(batch, model.config.num_patches, seed)
    masking = model.mask(batch, imgs.device, noise, **mask)
    return trace_decoder(model, imgs, masking), imgs


@pytest.mark.parametrize("fixture", FIXTURES)
def test_block_terms_sum_to_the_reconstruction(fixture):
    model = crossmae.load_model(REFERENCE_DIR / f"{fixture}.checkpoint.pth").eval()
    trace, _ = _trace(model)
    terms = block_terms(trace)
    pred = trace.prediction()
    assert terms.terms.shape == (len(model.decoder.blocks), *pred.shape)
    torch.testing.assert_close(terms.reconstruction, pred, rtol=0, atol=1e-5)
    torch.testing.assert_close(terms.cumulative()[-1], pred, rtol=0, atol=1e-5)
    # every block contributes something, and no single term is the whole answer
    assert (terms.terms.flatten(1).abs().amax(dim=1) > 1e-3).all()
    assert (terms.base - pred).abs().max() > 1e-3


def test_block_terms_sum_for_a_fresh_model_decoding_every_masked_patch(tiny):
    model = tiny(norm_pix_loss=False)
    for block in model.decoder.blocks:  # make the decoder's residual updates large
        torch.nn.init.normal_(block.mlp.fc2.bias, std=1.0)
    trace, _ = _trace(model, prediction_ratio=0.75)
    assert trace.ids_pred.shape[1] == 48
    torch.testing.assert_close(
        block_terms(trace).reconstruction, trace.prediction(), rtol=0, atol=1e-5
    )


def test_each_term_is_the_head_of_that_blocks_update_with_frozen_statistics(tiny):
    model = tiny()
    trace, _ = _trace(model, batch=2)
    terms = block_terms(trace)
    norm, head = model.decoder.norm, model.decoder.pred
    final = trace.states[-1].double()
    var = final.var(-1, unbiased=False, keepdim=True)
    i = 1
    delta = (trace.states[i + 1] - trace.states[i]).double()
    # the LN of the final state, written out, with only block i's update kept
    frozen = norm.weight.double() * (delta - delta.mean(-1, keepdim=True)) / (var + 1e-6).sqrt()
    expected = frozen @ head.weight.double().T
    torch.testing.assert_close(terms.terms[i].double(), expected, rtol=1e-4, atol=1e-5)


def test_term_pixels_scale_norm_pix_terms_by_the_patch_std(tiny):
    model = tiny()
    trace, imgs = _trace(model, batch=2)
    terms = block_terms(trace)
    pixels = term_pixels(trace, imgs, terms.terms)
    assert pixels.shape == (3, 2, 3, 32, 32)
    # pixels outside the decoded patches are untouched (0)
    decoded = model.unpatchify(
        trace.masking.indicator(trace.ids_pred)[..., None].expand(-1, -1, 48)
    )
    assert pixels[:, decoded == 0].abs().max() == 0
    assert pixels[:, decoded == 1].abs().max() > 0
