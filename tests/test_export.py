"""`crossmae export --format timm`: timm loads the file strictly and computes the same features."""

import json

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

from crossmae import CrossMAEError, create_model, load_model, save_model
from crossmae.cli import main

from conftest import REFERENCE_DIR


def _export(checkpoint, tmp_path, capsys):
    out = tmp_path / "encoder.safetensors"
    assert main(["export", str(checkpoint), "--format", "timm", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert meta["timm_model"] in printed
    kwargs = json.loads(meta["timm_kwargs"])
    timm_model = timm.create_model(meta["timm_model"], pretrained=False, num_classes=0, **kwargs)
    timm_model.load_state_dict(load_file(str(out)), strict=True)
    return meta, timm_model.eval()


def test_standard_model_exports_to_plain_timm_name(tmp_path, capsys):
    model = create_model("mae_vit_small_patch16").eval()
    save_model(tmp_path / "mae.pth", model)
    meta, timm_model = _export(tmp_path / "mae.pth", tmp_path, capsys)
    assert meta["timm_model"] == "vit_small_patch16_224" and json.loads(meta["timm_kwargs"]) == {}
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
    from safetensors.torch import save_file

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


def test_a_timm_export_read_back_says_what_it_is(tmp_path, capsys):
    _export(REFERENCE_DIR / "mae_npl.checkpoint.pth", tmp_path, capsys)
    with pytest.raises(CrossMAEError, match=r"exported for timm \(timm.create_model\('vit_"):
        load_model(tmp_path / "encoder.safetensors")


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
