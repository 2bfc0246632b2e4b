"""Parameter groups (what is decayed) and the update that skips non-finite gradients."""

import pytest
import torch

import crossmae
from crossmae.train.optim import build_adamw, param_groups, set_lr, step_unless_nonfinite


def _names(model, group):
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def _decayed_and_plain(model, groups):
    decayed = set().union(*(_names(model, g) for g in groups if g["weight_decay"] > 0))
    plain = set().union(*(_names(model, g) for g in groups if g["weight_decay"] == 0))
    assert decayed | plain == {n for n, _ in model.named_parameters()}
    assert not decayed & plain
    return decayed, plain


def test_pretraining_decays_matrices_and_tokens_not_biases_or_norms():
    """The authors' param_groups_weight_decay(model, wd): only 1-D parameters and biases go
    undecayed, so the cls and mask tokens, (1, 1, D), are decayed."""
    model = crossmae.create_model("crossmae_vit_tiny_patch4_32", depth=2, decoder_depth=2)
    decayed, plain = _decayed_and_plain(model, param_groups(model, weight_decay=0.05))
    for name in ("encoder.blocks.0.norm1.weight", "encoder.blocks.0.attn.qkv.bias",
                 "decoder.pred.bias", "decoder.fusion.norms.0.weight"):  # fmt: skip
        assert name in plain
    for name in ("encoder.blocks.0.attn.qkv.weight", "decoder.pred.weight", "encoder.cls_token",
                 "decoder.mask_token", "encoder.patch_embed.proj.weight",
                 "decoder.fusion.weight"):  # fmt: skip
        assert name in decayed


def test_fine_tuning_exempts_what_timm_names_as_its_vit_s_no_weight_decay():
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", num_classes=3, depth=2)
    groups = param_groups(vit, 0.05, no_decay=vit.no_weight_decay())
    decayed, plain = _decayed_and_plain(vit, groups)
    assert {"cls_token", "pos_embed", "blocks.0.norm1.weight", "head.bias"} <= plain
    assert {"patch_embed.proj.weight", "blocks.1.mlp.fc1.weight", "head.weight"} <= decayed


def test_lr_scale_groups_and_frozen_parameters():
    model = crossmae.create_model("crossmae_vit_tiny_patch4_32", depth=2, decoder_depth=2)
    model.encoder.cls_token.requires_grad_(False)
    groups = param_groups(model, 0.1, lr_scale=lambda n: 0.5 if n.startswith("encoder.") else 1.0)
    assert {(g["weight_decay"], g["lr_scale"]) for g in groups} == {
        (0.1, 0.5), (0.0, 0.5), (0.1, 1.0), (0.0, 1.0)
    }  # fmt: skip
    assert "encoder.cls_token" not in set().union(*(_names(model, g) for g in groups))
    optimizer = build_adamw(groups, 1e-3, (0.9, 0.95), "cpu")
    set_lr(optimizer, 2e-3)
    assert sorted({g["lr"] for g in optimizer.param_groups}) == pytest.approx([1e-3, 2e-3])


@pytest.mark.parametrize("fused", [True, False])
def test_nonfinite_step_is_skipped(fused):
    param = torch.nn.Parameter(torch.randn(8))
    optimizer = torch.optim.AdamW([param], lr=0.1, weight_decay=0.5, fused=fused)
    before = param.detach().clone()
    param.grad = torch.randn(8)
    step_unless_nonfinite(optimizer, torch.tensor(1.0))
    assert torch.equal(param.detach(), before)  # no update, not even weight decay
    assert not optimizer.state or int(optimizer.state[param]["step"]) == 0
    step_unless_nonfinite(optimizer, torch.tensor(0.0))
    assert not torch.equal(param.detach(), before)
    assert int(optimizer.state[param]["step"]) == 1
