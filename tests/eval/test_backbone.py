"""Checkpoints of ours and the authors' as timm ViT classifiers, with honest load reports."""

import argparse
import re

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

import crossmae
from crossmae.errors import CrossMAEError
from crossmae.eval.backbone import load_backbone, load_encoder
from crossmae.models.checkpoint import save_safetensors
from crossmae.models.classifier import build_vit, classifier_checkpoint

from conftest import REFERENCE_DIR

AUTHORS = ["crossmae_wfm_input_pr025", "mae_npl"]


def _last_block(model, imgs):
    depth = model.config.depth
    return model.encoder(imgs, return_blocks=[depth - 1]).intermediates[-1]


@pytest.mark.parametrize("case", AUTHORS)
def test_authors_checkpoint_as_timm_vit_computes_our_encoder(case):
    backbone = load_backbone(REFERENCE_DIR / f"{case}.checkpoint.pth")
    model = backbone.model
    assert isinstance(model, crossmae.MaskedAutoencoder)
    imgs = torch.randn(3, 3, 32, 32)
    avg = build_vit(backbone.arch, num_classes=0, global_pool="avg").eval()
    report = load_encoder(avg, backbone)
    tokens = _last_block(model, imgs)
    expected = F.layer_norm(tokens[:, 1:].mean(1), (64,), eps=1e-6)  # fc_norm, fresh
    torch.testing.assert_close(avg(imgs), expected, rtol=1e-5, atol=1e-5)
    assert set(report.fresh) == {"fc_norm.weight", "fc_norm.bias"}
    has_norm = case.startswith("mae")
    assert set(report.unused) == ({"norm.weight", "norm.bias"} if has_norm else set())

    cls = build_vit(backbone.arch, num_classes=0, global_pool="token").eval()
    report = load_encoder(cls, backbone)
    final = model.encoder(imgs).tokens[:, 0]
    if not has_norm:  # fusion encoder: timm's final norm is fresh, i.e. parameter-free
        final = F.layer_norm(final, (64,), eps=1e-6)
        assert set(report.fresh) == {"norm.weight", "norm.bias"}
    torch.testing.assert_close(cls(imgs), final, rtol=1e-5, atol=1e-5)


def test_our_checkpoint_and_a_new_resolution(tmp_path):
    model = crossmae.create_model("mae_vit_tiny_patch4_32", depth=2, embed_dim=48, num_heads=3)
    crossmae.save_model(tmp_path / "ours.pth", model)
    backbone = load_backbone(tmp_path / "ours.pth")
    assert "MAE pretraining checkpoint (crossmae format)" in backbone.description
    vit = build_vit(backbone.arch, num_classes=5, global_pool="avg", img_size=(64, 32))
    report = load_encoder(vit, backbone)
    assert report.resampled == "pos_embed 8x8 -> 16x8"
    assert {"head.weight", "head.bias"} <= set(report.fresh)
    torch.testing.assert_close(vit.blocks[1].mlp.fc1.weight, model.encoder.blocks[1].mlp.fc1.weight)
    assert vit(torch.randn(2, 3, 64, 32)).shape == (2, 5)


def test_our_safetensors_export_is_a_backbone(tmp_path):
    model = crossmae.create_model("crossmae_vit_tiny_patch4_32", depth=2, decoder_depth=2)
    save_safetensors(tmp_path / "ours.safetensors", model)
    backbone = load_backbone(tmp_path / "ours.safetensors")
    assert "CrossMAE (fusion, prediction ratio 0.25) pretraining checkpoint" in backbone.description
    vit = build_vit(backbone.arch, num_classes=3)
    load_encoder(vit, backbone)
    qkv = model.encoder.blocks[1].attn.qkv.weight
    torch.testing.assert_close(vit.blocks[1].attn.qkv.weight, qkv)


def test_classifier_checkpoint_round_trip(tmp_path):
    backbone = load_backbone(REFERENCE_DIR / "crossmae_wfm_pr075.checkpoint.pth")
    vit = build_vit(backbone.arch, num_classes=3, global_pool="token").eval()
    load_encoder(vit, backbone)
    torch.nn.init.normal_(vit.head.weight)
    torch.save(classifier_checkpoint(vit, ["a", "b", "c"], epoch=4), tmp_path / "ft.pth")
    again = load_backbone(tmp_path / "ft.pth")
    assert again.classes == ["a", "b", "c"]
    assert again.arch == backbone.arch
    imgs = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(again.model.eval()(imgs), vit(imgs))
    # as an encoder for a new task: a new head, the trained one is not used
    report = load_encoder(build_vit(again.arch, 7, "token"), again)
    assert set(report.fresh) == set(report.unused) == {"head.weight", "head.bias"}


def test_authors_finetuned_checkpoint(tmp_path):
    vit = VisionTransformer(img_size=32, patch_size=4, embed_dim=128, depth=2, num_heads=2,
                            num_classes=4, global_pool="avg").eval()  # fmt: skip
    torch.save(
        {"model": vit.state_dict(), "args": argparse.Namespace(input_size=32), "epoch": 1},
        tmp_path / "authors_ft.pth",
    )
    backbone = load_backbone(tmp_path / "authors_ft.pth")
    assert backbone.description.startswith("ViT classifier (authors' format)")
    features = build_vit(backbone.arch, num_classes=0, global_pool="avg").eval()
    report = load_encoder(features, backbone)
    assert report.fresh == []  # its trained fc_norm is used
    imgs = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(features(imgs), vit.forward_head(vit.forward_features(imgs), True))


def test_wrong_checkpoints_raise_one_sentence(tmp_path):
    torch.save({"format": "crossmae-linprobe", "head": {}}, tmp_path / "probe.pth")
    with pytest.raises(CrossMAEError, match=r"training state.* a finished probe writes its"):
        load_backbone(tmp_path / "probe.pth")
    (tmp_path / "classifier.pth").write_bytes(b"")  # the probe finished: name its file
    with pytest.raises(CrossMAEError, match=re.escape(f"its classifier is {tmp_path}/classifier")):
        load_backbone(tmp_path / "probe.pth")
    torch.save({"format": "crossmae-later", "model": {}}, tmp_path / "later.pth")
    with pytest.raises(CrossMAEError, match="'crossmae-later' checkpoint, not a model to load"):
        load_backbone(tmp_path / "later.pth")
    torch.save({"model": {"weight": torch.randn(2)}}, tmp_path / "other.pth")
    with pytest.raises(CrossMAEError, match="neither an autoencoder nor a ViT"):
        load_backbone(tmp_path / "other.pth")
    with pytest.raises(CrossMAEError, match="does not exist"):
        load_backbone(tmp_path / "missing.pth")
    backbone = load_backbone(REFERENCE_DIR / "mae_npl.checkpoint.pth")
    deeper = VisionTransformer(img_size=32, patch_size=4, embed_dim=64, depth=5, num_heads=4)
    with pytest.raises(CrossMAEError, match=r"no encoder weight 'blocks\.4"):
        load_encoder(deeper, backbone)
    wider_patch = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=4, num_heads=4)
    with pytest.raises(CrossMAEError, match=r"patch_embed\.proj\.weight"):
        load_encoder(wider_patch, backbone)
