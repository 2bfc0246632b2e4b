"""Model variants beyond the fixtures: no-fusion, fusion options, channels, shapes, compile,
gradient checkpointing."""

import contextlib
import re

import pytest
import torch
import torch.nn.functional as F

from crossmae import CrossMAEError, create_model
from crossmae.models import layers
from crossmae.models.patchify import normalize_patches
from crossmae.profiling import saved_tensor_bytes

TINY = {"depth": 3, "decoder_depth": 2}


def _imgs(c=3, h=32, w=32, b=2):
    return torch.randn(b, c, h, w)


def test_fusion_mixes_layers_as_written_in_float64():
    model = create_model("crossmae_vit_tiny_patch4_32", **TINY).double()
    imgs = _imgs().double()
    masking = model.mask(2, imgs.device)
    encoded = model.encode(imgs, masking)
    feats = encoded.intermediates  # input tokens, then every block
    assert len(feats) == 1 + 3
    fusion = model.decoder.fusion
    got = fusion(feats)
    for i, norm in enumerate(fusion.norms):
        mixed = sum(fusion.weight[i, j] * f for j, f in enumerate(feats))
        expected = F.layer_norm(mixed, (mixed.shape[-1],), norm.weight, norm.bias, eps=1e-6)
        torch.testing.assert_close(got[i], expected, rtol=1e-12, atol=1e-12)


def test_no_fusion_reads_final_normed_layer_in_every_block():
    model = create_model("crossmae_vit_tiny_patch4_32", fusion=False, **TINY)
    assert isinstance(model.encoder.norm, torch.nn.LayerNorm)
    assert model.decoder.fusion is None
    imgs, noise = _imgs(), torch.rand(2, 64)
    out = model(imgs, noise=noise)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    masking = model.mask(2, imgs.device, noise=noise)
    tokens = model.encoder(imgs, masking.ids_visible).tokens
    x = model.decoder.queries(masking.ids_decoded)
    for block in model.decoder.blocks:
        x = block(x, tokens)
    torch.testing.assert_close(out.pred, model.decoder.pred(model.decoder.norm(x)))


def test_fusion_variants_softmax_projection_and_layer_subset():
    model = create_model(
        "crossmae_vit_tiny_patch4_32", fusion_weights="softmax", fusion_project=True,
        fusion_layers=[0, -1], fusion_input=False, **TINY,
    )  # fmt: skip
    fusion = model.decoder.fusion
    assert fusion.weight.shape == (2, 2) and len(fusion.projections) == 2
    torch.testing.assert_close(fusion.mixing_matrix().sum(dim=1), torch.ones(2))
    out = model(_imgs())
    out.loss.backward()
    assert fusion.projections[0].weight.grad is not None
    assert model.config.fusion_blocks == [0, 2]


def test_self_attention_ablation_builds_and_trains():
    model = create_model("crossmae_vit_tiny_patch4_32", decoder_self_attn=True, **TINY)
    out = model(_imgs())
    out.loss.backward()
    assert model.decoder.blocks[0].self_attn.qkv.weight.grad is not None


@pytest.mark.parametrize("name", ["crossmae_vit_tiny_patch4_32", "mae_vit_tiny_patch4_32"])
@pytest.mark.parametrize(("c", "h", "w"), [(1, 32, 32), (5, 32, 48), (3, 16, 40)])
def test_any_channels_and_non_square_images(name, c, h, w):
    model = create_model(name, in_chans=c, img_size=(h, w), **TINY)
    imgs = _imgs(c, h, w)
    out = model(imgs)
    n = (h // 4) * (w // 4)
    assert out.mask.shape == (2, n)
    assert out.pred.shape[-1] == 16 * c
    full = torch.zeros(2, n, 16 * c).scatter(
        1, out.ids_pred[..., None].expand_as(out.pred), out.pred
    )
    assert model.unpatchify(full).shape == imgs.shape
    assert model.forward_features(imgs).shape == (2, 1 + n, 192)


def test_noise_makes_it_deterministic_and_decode_all_overrides_gamma():
    model = create_model("crossmae_vit_tiny_patch4_32", **TINY).eval()
    imgs, noise = _imgs(), torch.rand(2, 64)
    a, b = model(imgs, noise=noise), model(imgs, noise=noise)
    assert torch.equal(a.pred, b.pred) and torch.equal(a.mask, b.mask)
    assert not torch.equal(a.mask, model(imgs, noise=torch.rand(2, 64)).mask)
    assert a.pred.shape[1] == 16  # γ = 0.25 of 64
    full = model(imgs, noise=noise, prediction_ratio=0.75)
    assert full.pred.shape[1] == 48
    # decoding is per query: the common patches get the same prediction either way
    rows = torch.isin(full.ids_pred[0], a.ids_pred[0])
    torch.testing.assert_close(full.pred[0, rows], a.pred[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["crossmae_vit_tiny_patch4_32", "mae_vit_tiny_patch4_32"])
@pytest.mark.parametrize("shape", [(1, 64), (2, 40), (2, 80), (64,)])
def test_noise_of_another_shape_is_refused_in_one_sentence(name, shape):
    """A smaller noise would make gather quietly mask part of the batch or of the grid."""
    model = create_model(name, **TINY)
    expected = f"noise must have shape (2, 64) (batch, patches), got {tuple(shape)}"
    with pytest.raises(CrossMAEError, match=re.escape(expected)):
        model(_imgs(), noise=torch.rand(shape))


@pytest.mark.parametrize(
    ("name", "ratios", "message"),
    [
        ("crossmae_vit_tiny_patch4_32", {"mask_ratio": 0.0}, "decode no patch out of 64"),
        ("mae_vit_tiny_patch4_32", {"mask_ratio": 0.0}, "decode no patch out of 64"),
        ("crossmae_vit_tiny_patch4_32", {"prediction_ratio": 0.0}, "decode no patch out of 64"),
        ("mae_vit_tiny_patch4_32", {"mask_ratio": 1.0}, r"mask ratio must be in \[0, 1\)"),
        ("crossmae_vit_tiny_patch4_32", {"prediction_ratio": 0.9}, "prediction ratio must be"),
    ],
)
def test_a_call_with_ratios_that_score_nothing_is_refused_not_nan(name, ratios, message):
    model = create_model(name, **TINY)
    with pytest.raises(CrossMAEError, match=message):
        model(_imgs(), **ratios)
    assert model.forward_features(_imgs()).shape == (2, 65, 192)  # what mask ratio 0 is for


def test_mae_refuses_a_prediction_ratio_other_than_its_mask_ratio():
    model = create_model("mae_vit_tiny_patch4_32", **TINY)
    with pytest.raises(CrossMAEError, match="MAE decodes every masked patch"):
        model(_imgs(), prediction_ratio=0.1)
    assert model(_imgs(), prediction_ratio=0.75).mask.sum(1).tolist() == [48, 48]


@pytest.mark.parametrize(
    ("imgs", "message"),
    [
        (torch.randn(3, 32, 32), r"expected a float batch of shape \(B, 3, 32, 32\)"),
        (torch.randn(2, 1, 32, 32), r"shape \(B, 3, 32, 32\), got torch.float32 \(2, 1, 32, 32\)"),
        (torch.randn(2, 3, 28, 32), r"\(2, 3, 28, 32\)"),
        (torch.randint(255, (2, 3, 32, 32), dtype=torch.uint8), "got torch.uint8"),
        (torch.randn(0, 3, 32, 32), "the batch holds no image"),
    ],
)
def test_images_of_the_wrong_kind_are_refused_in_one_sentence(imgs, message):
    model = create_model("crossmae_vit_tiny_patch4_32", **TINY)
    with pytest.raises(CrossMAEError, match=message):
        model(imgs)


def test_fusion_over_no_layer_is_refused_and_over_the_input_alone_runs():
    with pytest.raises(CrossMAEError, match="fusion over no layer"):
        create_model("crossmae_vit_tiny_patch4_32", fusion_layers=[], fusion_input=False, **TINY)
    model = create_model("crossmae_vit_tiny_patch4_32", fusion_layers=[], **TINY)
    assert model.decoder.fusion.weight.shape == (2, 1)
    model(_imgs()).loss.backward()


def test_mae_loss_averages_over_masked_patches_float64():
    model = create_model("mae_vit_tiny_patch4_32", **TINY).double()
    imgs = _imgs().double()
    out = model(imgs)
    target = normalize_patches(model.patchify(imgs))
    per_patch = ((out.pred - target) ** 2).mean(-1)
    expected = (per_patch * out.mask).sum() / out.mask.sum()
    torch.testing.assert_close(out.loss, expected, rtol=1e-12, atol=0)
    assert out.mask.sum().item() == 2 * 48


@pytest.mark.parametrize("name", ["crossmae_vit_tiny_patch4_32", "mae_vit_tiny_patch4_32"])
def test_compiled_model_matches_eager_without_graph_breaks(name):
    torch._dynamo.reset()
    model = create_model(name, depth=2, decoder_depth=2)
    imgs, noise = _imgs(), torch.rand(2, 64)
    eager = model(imgs, noise=noise).loss
    compiled = torch.compile(model, fullgraph=True)  # fullgraph raises on any graph break
    torch.testing.assert_close(compiled(imgs, noise=noise).loss, eager, rtol=1e-5, atol=1e-6)


def _loss_and_grads(model, imgs, noise, forward=None):
    model.zero_grad(set_to_none=True)
    loss = (model if forward is None else forward)(imgs, noise=noise).loss
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@contextlib.contextmanager
def _checkpoint_refused():
    def refuse(*args, **kwargs):
        raise AssertionError("checkpointed without gradients")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(layers, "checkpoint", refuse)
        yield


@pytest.mark.parametrize("name", ["crossmae_vit_tiny_patch4_32", "mae_vit_tiny_patch4_32"])
def test_gradient_checkpointing_keeps_the_gradients_and_holds_less(name):
    model = create_model(name, **TINY).double()
    imgs, noise = _imgs().double(), torch.rand(2, 64)

    def held() -> int:
        return saved_tensor_bytes(lambda: model(imgs, noise=noise).loss, weights_of=model)

    plain_bytes, (plain_loss, plain_grads) = held(), _loss_and_grads(model, imgs, noise)
    model.set_grad_checkpointing()
    kept_bytes, (loss, grads) = held(), _loss_and_grads(model, imgs, noise)
    assert kept_bytes < plain_bytes / 2  # the blocks' inputs, not their activations
    torch.testing.assert_close(loss, plain_loss, rtol=1e-13, atol=0)
    assert grads.keys() == plain_grads.keys()
    for n, g in grads.items():
        torch.testing.assert_close(g, plain_grads[n], rtol=1e-10, atol=1e-13, msg=n)
    with torch.no_grad(), _checkpoint_refused():  # nothing to recompute: plain blocks run
        torch.testing.assert_close(model(imgs, noise=noise).loss, plain_loss)


@pytest.mark.slow
def test_checkpointed_model_compiles_without_graph_breaks_forward_and_backward():
    torch._dynamo.reset()
    model = create_model("crossmae_vit_tiny_patch4_32", depth=2, decoder_depth=2)
    model.set_grad_checkpointing()
    imgs, noise = _imgs(), torch.rand(2, 64)
    loss, grads = _loss_and_grads(model, imgs, noise)
    compiled = torch.compile(model, fullgraph=True)
    compiled_loss, compiled_grads = _loss_and_grads(model, imgs, noise, forward=compiled)
    torch.testing.assert_close(compiled_loss, loss, rtol=1e-5, atol=1e-6)
    assert compiled_grads.keys() == grads.keys()
    for n, g in compiled_grads.items():
        torch.testing.assert_close(g, grads[n], rtol=1e-4, atol=1e-6, msg=n)


def test_initial_weights_follow_mae():
    """Patch embedding xavier-uniform over its (D, C*p*p) view; [CLS] and mask token N(0, 0.02)."""
    model = create_model("crossmae_vit_base_patch16")
    w = model.encoder.patch_embed.proj.weight
    bound = (6 / (w.shape[0] + w[0].numel())) ** 0.5
    assert w.abs().max() <= bound and w.std().item() == pytest.approx(bound / 3**0.5, rel=0.02)
    for token in (model.encoder.cls_token, model.decoder.mask_token):
        assert token.std().item() == pytest.approx(0.02, rel=0.15)
