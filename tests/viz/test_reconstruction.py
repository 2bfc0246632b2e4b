import math

import pytest
import torch

from crossmae.models.patchify import normalize_patches
from crossmae.viz.images import denormalize
from crossmae.viz.reconstruction import (
    denormalize_prediction,
    masked_psnr,
    reconstruct,
    reconstruction_grid,
    zero_prediction_psnr,
)
from crossmae.viz.trace import make_noise, trace_decoder


def test_psnr_of_a_perfect_prediction_is_infinite():
    target = torch.rand(2, 16, 12)
    ids = torch.stack([torch.randperm(16)[:5] for _ in range(2)])
    assert masked_psnr(target.clone(), target, ids).tolist() == [math.inf, math.inf]


def test_psnr_of_a_zero_prediction_matches_a_hand_computation():
    target = torch.rand(2, 16, 12)
    ids = torch.tensor([[0, 3, 7], [15, 2, 9]])
    pred = target.clone()
    pred[0, [0, 3, 7]] = 0  # only the scored patches are wrong
    pred[1, [15, 2, 9]] = 0
    for b in range(2):
        mse = sum(float((target[b, i] ** 2).sum()) for i in ids[b].tolist()) / (3 * 12)
        expected = 10 * math.log10(1.0 / mse)
        assert masked_psnr(pred, target, ids)[b].item() == pytest.approx(expected, rel=1e-5)


def test_psnr_ignores_patches_outside_ids():
    target = torch.rand(1, 8, 4)
    pred = target + torch.rand(1, 8, 4)
    pred[0, 2] = target[0, 2]
    assert masked_psnr(pred, target, torch.tensor([[2]])).item() == math.inf


def test_norm_pix_prediction_is_mapped_back_with_the_target_patch_statistics():
    target = torch.randn(2, 5, 48) * 3 + 1
    assert torch.allclose(
        denormalize_prediction(normalize_patches(target), target, True), target, atol=1e-5
    )
    pred = torch.randn(2, 5, 48)
    assert denormalize_prediction(pred, target, False) is pred


@pytest.mark.parametrize("name", ["crossmae_vit_tiny_patch4_32", "mae_vit_tiny_patch4_32"])
def test_trace_reproduces_the_forward_pass(tiny, name):
    model = tiny(name)
    imgs = torch.randn(2, 3, 32, 32)
    noise = make_noise(2, 64, seed=3)
    out = model(imgs, noise=noise)
    trace = trace_decoder(model, imgs, model.mask(2, imgs.device, noise))
    expected = (
        out.pred
        if model.is_cross
        else torch.gather(out.pred, 1, trace.ids_pred[..., None].expand(-1, -1, out.pred.shape[-1]))
    )
    assert trace.ids_pred.shape[1] == (16 if model.is_cross else 48)
    torch.testing.assert_close(trace.prediction(), expected.detach(), rtol=0, atol=0)


def test_make_noise_forces_the_chosen_patches_to_be_decoded(tiny):
    model = tiny()
    noise = make_noise(3, 64, seed=1, decode=[0, 63, 17])
    decoded = model.mask(3, torch.device("cpu"), noise).ids_decoded
    for row in decoded.tolist():
        assert {0, 17, 63} <= set(row)


def test_reconstruction_pastes_visible_patches_and_scores_predictions(tiny):
    model = tiny()
    imgs = torch.randn(2, 3, 32, 32)
    masking = model.mask(2, imgs.device, make_noise(2, 64, seed=0))
    rec = reconstruct(trace_decoder(model, imgs, masking), imgs)
    original = model.patchify(rec.original)
    pasted = model.patchify(rec.pasted)
    masked = model.patchify(rec.masked)
    vis = masking.ids_visible[..., None].expand(-1, -1, 48)
    torch.testing.assert_close(original.gather(1, vis), pasted.gather(1, vis))
    torch.testing.assert_close(original.gather(1, vis), masked.gather(1, vis))
    assert torch.equal(rec.original, denormalize(imgs))
    assert rec.psnr.shape == (2,) and torch.isfinite(rec.psnr).all()
    grid = reconstruction_grid(rec, padding=1)
    assert grid.shape == (3, 2 * 33 + 1, 4 * 33 + 1)


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_zero_prediction_psnr_fills_patches_with_their_mean(tiny, norm_pix_loss):
    model = tiny(norm_pix_loss=norm_pix_loss)
    imgs = torch.randn(2, 3, 32, 32)
    masking = model.mask(2, imgs.device, make_noise(2, 64, seed=2))
    trace = trace_decoder(model, imgs, masking)
    patches = model.patchify(imgs)
    fill = patches.mean(-1, keepdim=True) if norm_pix_loss else torch.zeros_like(patches)
    indicator = masking.indicator(masking.ids_decoded)[..., None]
    filled = torch.where(indicator.bool(), fill.expand_as(patches), patches)
    expected = masked_psnr(
        model.patchify(denormalize(model.unpatchify(filled))),
        model.patchify(denormalize(imgs)),
        masking.ids_decoded,
    )
    torch.testing.assert_close(zero_prediction_psnr(trace, imgs), expected)
