"""`crossmae export --format timm`: timm loads the file strictly and computes the same features."""

import json

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from timm.models.vision_transformer import VisionTransformer

from crossmae import CrossMAEError, create_model, load_model, save_model
from crossmae.cli import main
from crossmae.models.checkpoint import read_model
from crossmae.models.classifier import ViTArch, build_vit, classifier_checkpoint

from conftest import REFERENCE_DIR


def _export(checkpoint, tmp_path, capsys):
    out = tmp_path / "encoder.safetensors"
    assert main(["export", str(checkpoint), "--format", "timm", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert meta["timm_model"] in printed
    kwargs = json.loads(meta["timm_kwargs"])
    assert kwargs["num_classes"] == 0  # an encoder: every argument is in the metadata
    timm_model = timm.create_model(meta["timm_model"], pretrained=False, **kwargs)
    timm_model.load_state_dict(load_file(str(out)), strict=True)
    return meta, timm_model.eval()


def test_standard_model_exports_to_plain_timm_name(tmp_path, capsys):
    model = create_model("mae_vit_small_patch16").eval()
    save_model(tmp_path / "mae.pth", model)
    meta, timm_model = _export(tmp_path / "mae.pth", tmp_path, capsys)
    assert meta["timm_model"] == "vit_small_patch16_224" and json.loads(meta["timm_kwargs"]) == {
        "num_classes": 0
    }
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(timm_model.forward_features(x), model.forward_features(x))
        torch.testing.assert_close(timm_model(x), model.forward_features(x)[:, 0])


@pytest.mark.parametrize("case", ["crossmae_wfm_input_pr025", "mae_npl"])
def test_small_authors_checkpoint_round_trips(case, tmp_path, capsys):
    model = load_model(REFERENCE_DIR / f"{case}.checkpoint.pth").eval()
    _, timm_model = _export(REFERENCE_DIR / f"{case}.checkpoint.pth", tmp_path, capsys)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ours = model.forward_features(x)
        if not model.config.encoder_final_norm:  # fusion encoders: timm adds an affine-free norm
            ours = F.layer_norm(ours, (ours.shape[-1],), eps=1e-6)
        torch.testing.assert_close(timm_model.forward_features(x), ours, rtol=1e-5, atol=1e-5)


def test_safetensors_model_round_trip(tmp_path):
    source = REFERENCE_DIR / "crossmae_wfm_selfattn_pr050.checkpoint.pth"
    out = tmp_path / "model.safetensors"
    assert main(["export", str(source), "--format", "safetensors", "--output", str(out)]) == 0
    original, restored = load_model(source), load_model(out)
    assert restored.config == original.config
    imgs, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 64)
    assert torch.equal(original(imgs, noise=noise).pred, restored(imgs, noise=noise).pred)


def test_foreign_safetensors_is_refused(tmp_path):
    save_file({"w": torch.randn(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CrossMAEError, match="no crossmae model config"):
        load_model(tmp_path / "other.safetensors")
    (tmp_path / "torn.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CrossMAEError, match="not a readable safetensors"):
        load_model(tmp_path / "torn.safetensors")
    metadata = {"format": "crossmae", "model_config": "{not json"}
    save_file({"w": torch.randn(2)}, str(tmp_path / "damaged.safetensors"), metadata=metadata)
    with pytest.raises(CrossMAEError, match="damaged model config"):
        load_model(tmp_path / "damaged.safetensors")


def test_a_timm_export_reads_back_as_the_same_encoder(tmp_path, capsys):
    source = REFERENCE_DIR / "crossmae_wfm_input_pr025.checkpoint.pth"
    _, timm_model = _export(source, tmp_path, capsys)
    loaded = read_model(tmp_path / "encoder.safetensors")
    assert isinstance(loaded.model, VisionTransformer) and loaded.origin == "timm export"
    assert loaded.model.num_classes == 0 and loaded.classes is None
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.eval()(x), timm_model(x), rtol=0, atol=0)


def test_our_safetensors_model_exports_to_timm_and_reads_back(tmp_path, capsys):
    source = REFERENCE_DIR / "mae_npl.checkpoint.pth"
    whole = tmp_path / "model.safetensors"
    assert main(["export", str(source), "--format", "safetensors", "--output", str(whole)]) == 0
    loaded = read_model(whole)
    assert loaded.origin == "safetensors" and loaded.classes is None
    _, timm_model = _export(whole, tmp_path, capsys)
    with safe_open(str(tmp_path / "encoder.safetensors"), "pt") as f:
        assert "classes" not in f.metadata()  # an encoder has no classes
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        again = read_model(tmp_path / "encoder.safetensors").model.eval()
        torch.testing.assert_close(again(x), timm_model(x), rtol=0, atol=0)


def _random_classifier(global_pool: str, classes: int) -> VisionTransformer:
    # ViT-Tiny's width and heads: an authors' file without args names its heads by width
    vit = build_vit(ViTArch((32, 32), 4, 3, 192, 2, 3), classes, global_pool).eval()
    torch.nn.init.normal_(vit.head.weight, std=0.5)  # a fresh head would be near zero
    torch.nn.init.normal_(vit.head.bias)
    return vit


@pytest.mark.parametrize("global_pool", ["avg", "token"])
def test_a_fine_tuned_classifier_exports_with_its_head_and_class_names(
    global_pool, tmp_path, capsys
):
    vit = _random_classifier(global_pool, 3)
    torch.save(classifier_checkpoint(vit, ["cat", "dog", "emu"]), tmp_path / "ft.pth")
    assert isinstance(load_model(tmp_path / "ft.pth"), VisionTransformer)
    out = tmp_path / "classifier.safetensors"
    assert main(["export", str(tmp_path / "ft.pth"), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "num_classes=3" in printed and "cat, dog, emu" in printed
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["classes"]) == ["cat", "dog", "emu"]
    kwargs = json.loads(meta["timm_kwargs"])
    assert kwargs.get("global_pool", "token") == global_pool
    timm_model = timm.create_model(meta["timm_model"], pretrained=False, **kwargs).eval()
    timm_model.load_state_dict(load_file(str(out)), strict=True)
    again = read_model(out)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(timm_model(x), vit(x), rtol=0, atol=0)
        torch.testing.assert_close(again.model.eval()(x), vit(x), rtol=0, atol=0)
    assert again.classes == ["cat", "dog", "emu"]


def test_an_authors_fine_tuned_classifier_exports_without_class_names(tmp_path, capsys):
    vit = _random_classifier("avg", 5)
    torch.save({"model": vit.state_dict()}, tmp_path / "authors_ft.pth")  # their layout
    out = tmp_path / "classifier.safetensors"
    assert main(["export", str(tmp_path / "authors_ft.pth"), "--output", str(out)]) == 0
    again = read_model(out)
    assert again.classes is None and again.model.num_classes == 5
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again.model.eval()(x), vit(x), rtol=0, atol=0)
    assert main(["export", str(tmp_path / "authors_ft.pth"), "--format", "safetensors",
                 "--output", str(tmp_path / "x.safetensors")]) == 2  # fmt: skip
    assert "exports with --format timm" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"timm_model": "resnet50"}, "which crossmae does not export"),
        ({"timm_kwargs": "{not json"}, "damaged timm metadata"),
        ({"timm_kwargs": {"pretrained_cfg_overlay": 1}}, "unknown arguments"),
        ({"timm_kwargs": {"depth": 1000000}}, "its weights do not fit"),  # never built
        ({"timm_kwargs": {"embed_dim": 10**30, "num_heads": 1}}, "its weights do not fit"),
        ({"timm_kwargs": {"mlp_ratio": 100000.0}}, "its weights do not fit"),
        ({"timm_kwargs": {"mlp_ratio": float("inf")}}, "not a positive number"),
        ({"timm_kwargs": {"num_heads": 7}}, "7 heads do not split width 64"),
        ({"timm_kwargs": {"num_heads": -4}}, "positive whole numbers"),
        ({"timm_kwargs": {"patch_size": -4}}, "positive whole numbers"),
        ({"timm_kwargs": {"img_size": -32}}, "positive whole numbers"),
        ({"timm_kwargs": {"img_size": [32, 32, 3]}}, r"is not \(height, width\)"),
        ({"timm_kwargs": {"depth": 4.7}}, "positive whole numbers"),
        ({"classes": '["a", "b"]'}, "0 outputs but 2 class names"),
        ({"classes": '[{"a": 1}]'}, "not a list of names"),
    ],
)
def test_a_damaged_or_foreign_timm_export_is_one_sentence(change, message, tmp_path, capsys):
    _export(REFERENCE_DIR / "mae_npl.checkpoint.pth", tmp_path, capsys)
    path = tmp_path / "encoder.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    if isinstance(change.get("timm_kwargs"), dict):  # one argument changed, the rest kept
        change = {
            "timm_kwargs": json.dumps({**json.loads(meta["timm_kwargs"]), **change["timm_kwargs"]})
        }
    save_file(load_file(str(path)), str(path), metadata={**meta, **change})
    with pytest.raises(CrossMAEError, match=message) as refused:
        load_model(path)
    assert "\n" not in str(refused.value)  # one sentence, no stack dump from torch


@pytest.mark.parametrize("fmt", ["timm", "safetensors"])
def test_an_unwritable_output_is_one_sentence_and_leaves_no_file(fmt, tmp_path, capsys):
    source = REFERENCE_DIR / "crossmae_wfm_input_pr025.checkpoint.pth"
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_folder.safetensors").mkdir()
    for output in (tmp_path / "a_folder.safetensors", tmp_path / "a_file" / "model.safetensors"):
        assert main(["export", str(source), "--format", fmt, "--output", str(output)]) == 2
        assert f"error: cannot write {output}" in capsys.readouterr().err
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["a_file", "a_folder.safetensors"]  # no temporary file left


def test_export_never_writes_over_its_checkpoint(tmp_path, capsys):
    source = tmp_path / "checkpoint.pth"
    save_model(source, create_model("crossmae_vit_tiny_patch4_32", depth=2, decoder_depth=2))
    before = source.read_bytes()
    for output, message in ((source, "is the checkpoint being exported"),
                            (tmp_path / "enc.pth", "must end in .safetensors")):  # fmt: skip
        assert (
            main(["export", str(source), "--format", "safetensors", "--output", str(output)]) == 2
        )
        assert message in capsys.readouterr().err
    assert source.read_bytes() == before


def test_a_non_square_classifier_with_another_mlp_ratio_round_trips(tmp_path, capsys):
    """32 px high, 16 wide, MLP 2x: the export must name the height first, as timm does."""
    vit = build_vit(ViTArch((32, 16), 4, 3, 192, 2, 3, mlp_ratio=2.0), 4, "token").eval()
    torch.save(classifier_checkpoint(vit, list("abcd")), tmp_path / "ft.pth")
    out = tmp_path / "tall.safetensors"
    assert main(["export", str(tmp_path / "ft.pth"), "--output", str(out)]) == 0
    again = read_model(out).model.eval()
    assert (
        ViTArch.from_vit(again) == ViTArch.from_vit(vit) == ViTArch((32, 16), 4, 3, 192, 2, 3, 2.0)
    )
    x = torch.randn(2, 3, 32, 16)
    with torch.no_grad():
        torch.testing.assert_close(again(x), vit(x), rtol=0, atol=0)


def test_save_model_to_a_safetensors_path_writes_safetensors(tmp_path):
    model = create_model("crossmae_vit_tiny_patch4_32", depth=2, decoder_depth=2).eval()
    save_model(tmp_path / "m.safetensors", model)
    with safe_open(str(tmp_path / "m.safetensors"), "pt") as f:  # not a pickle by another name
        assert f.metadata()["format"] == "crossmae"
    imgs, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 64)
    again = load_model(tmp_path / "m.safetensors")
    assert torch.equal(again(imgs, noise=noise).pred, model(imgs, noise=noise).pred)
    with pytest.raises(CrossMAEError, match=r"save epoch in a \.pth"):
        save_model(tmp_path / "n.safetensors", model, epoch=3)
