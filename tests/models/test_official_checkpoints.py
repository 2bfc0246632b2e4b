"""The authors' checkpoint formats: released architectures, encoder-only files, unsafe pickles."""

import argparse
import json
import os
import pickle
import warnings
from pathlib import Path

import pytest
import torch

import crossmae
from crossmae import CrossMAEError, load_official_checkpoint
from crossmae.models.autoencoder import MaskedAutoencoder
from crossmae.models.checkpoint import model_checkpoint
from crossmae.models.official import config_from_official_args, convert_official_state_dict
from crossmae.serialization import check_state_dict, safe_torch_load

from conftest import REFERENCE_DIR

SHAPES = json.loads((REFERENCE_DIR / "reference_state_dict_shapes.json").read_text())


def _args(key: str) -> argparse.Namespace:
    """Namespace as the authors' main_pretrain.py would have written for this release."""
    kind, model_name, *rest = key.split("/")
    args = argparse.Namespace(model=model_name, input_size=224, mask_ratio=0.75, norm_pix_loss=True)
    if kind == "crossmae":
        args.cross_mae = True
        args.weight_fm = "weight_fm" in rest[0]
        args.use_input = "use_input" in rest[0]
        args.use_fm = [-1]
        args.self_attn = False
        args.decoder_depth = int(rest[1].split("=")[1])
        args.kept_mask_ratio = 0.25
    return args


def _synthetic_state_dict(shapes: dict[str, list[int]], device: str) -> dict[str, torch.Tensor]:
    return {k: torch.randn(*s, device=device) * 0.02 for k, s in shapes.items()}


@pytest.mark.parametrize("key", [k for k in SHAPES if "small" in k or "base" in k])
def test_released_architectures_load_and_run(key, tmp_path):
    ckpt = {"model": _synthetic_state_dict(SHAPES[key], "cpu"), "args": _args(key), "epoch": 799}
    torch.save(ckpt, tmp_path / "release.pth")
    model = load_official_checkpoint(tmp_path / "release.pth")
    assert isinstance(model, MaskedAutoencoder)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 224, 224))
    assert torch.isfinite(out.loss)
    expected_rows = 49 if model.is_cross else 196  # γ = 0.25 of 196 patches, MAE predicts all
    assert out.pred.shape == (2, expected_rows, 768)


@pytest.mark.parametrize("key", [k for k in SHAPES if "large" in k or "huge" in k])
def test_large_released_architectures_match_on_meta(key):
    sd = _synthetic_state_dict(SHAPES[key], "meta")
    config = config_from_official_args(_args(key), sd)
    with torch.device("meta"):
        model = MaskedAutoencoder(config)
        check_state_dict(model, convert_official_state_dict(sd), key)
        out = model(torch.empty(2, 3, 224, 224))
    assert out.pred.shape[0] == 2 and out.loss.device.type == "meta"


@pytest.mark.parametrize("kind", ["mae", "crossmae"])
def test_the_masking_args_are_the_checkpoints_own(kind):
    """A run with --mask_ratio 0.6 (and --kept_mask_ratio 0.3): p, γ and the loss's
    normalisation come from args, not from the paper's defaults."""
    key = next(k for k in SHAPES if k.startswith(f"{kind}/") and "base" in k)
    args = _args(key)
    args.mask_ratio, args.norm_pix_loss = 0.6, False
    if kind == "crossmae":
        args.kept_mask_ratio = 0.3
    config = config_from_official_args(args, _synthetic_state_dict(SHAPES[key], "meta"))
    assert (config.mask_ratio, config.norm_pix_loss) == (0.6, False)
    assert config.prediction_ratio == (0.3 if kind == "crossmae" else 0.6)
    if kind == "crossmae":
        del args.kept_mask_ratio  # args without it: γ = p
        shapes = _synthetic_state_dict(SHAPES[key], "meta")
        assert config_from_official_args(args, shapes).prediction_ratio == 0.6


def test_mae_baseline_with_a_deeper_decoder_keeps_its_depth():
    """The authors' CrossMAE main_pretrain.py trains MAE baselines with --decoder_depth too;
    the depth comes from args, or else from the weights (the released MAE files: 8)."""
    shapes = SHAPES["mae/mae_vit_base_patch16"]
    block7 = {k: v for k, v in shapes.items() if k.startswith("decoder_blocks.7.")}
    deeper = shapes | {k.replace(".7.", f".{i}.", 1): v for i in range(8, 12)
                       for k, v in block7.items()}  # fmt: skip
    sd = _synthetic_state_dict(deeper, "meta")
    with_depth = _args("mae/mae_vit_base_patch16")
    with_depth.decoder_depth = 12
    for args in (with_depth, _args("mae/mae_vit_base_patch16")):
        config = config_from_official_args(args, sd)
        assert config.decoder_depth == 12
        with torch.device("meta"):
            check_state_dict(MaskedAutoencoder(config), convert_official_state_dict(sd), "mae")
    released = _synthetic_state_dict(shapes, "meta")
    assert config_from_official_args(_args("mae/mae_vit_base_patch16"), released).decoder_depth == 8


def test_an_encoder_without_args_takes_its_head_count_from_its_width(tmp_path):
    """MAE's released encoder files hold no args; ViT-H is 1280 wide with 16 heads (not
    1280 / 64 = 20), and a wrong count would load without complaint."""
    import timm

    huge = timm.create_model("vit_huge_patch14_224", depth=1, num_classes=0, global_pool="token")
    torch.save({"model": huge.state_dict()}, tmp_path / "mae_pretrain_vit_huge.pth")
    model = load_official_checkpoint(tmp_path / "mae_pretrain_vit_huge.pth").eval()
    assert model.blocks[0].attn.num_heads == 16
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), huge.eval()(x))


def test_linear_probe_checkpoint_folds_its_batchnorm_into_the_head(tmp_path):
    """MAE's main_linprobe.py head, Sequential(BatchNorm1d(affine=False), Linear), is one
    Linear in eval mode: the loaded timm classifier gives the probe's logits."""
    import timm

    reference = timm.create_model("vit_small_patch16_224", num_classes=7, global_pool="avg")
    norm = torch.nn.BatchNorm1d(384, affine=False, eps=1e-6)
    norm.running_mean.normal_()
    norm.running_var.uniform_(0.2, 3.0)
    torch.nn.init.normal_(reference.head.weight, std=0.1)
    torch.nn.init.normal_(reference.head.bias)
    reference.head = torch.nn.Sequential(norm, reference.head)
    ckpt = {"model": reference.state_dict(), "args": argparse.Namespace(model="vit_small_patch16")}
    torch.save(ckpt, tmp_path / "linprobe.pth")
    model = load_official_checkpoint(tmp_path / "linprobe.pth").eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference.eval()(x), rtol=1e-4, atol=1e-5)


def test_encoder_only_finetuned_checkpoint_gives_timm_classifier(tmp_path):
    import timm

    reference = timm.create_model("vit_small_patch16_224", num_classes=7, global_pool="avg")
    ckpt = {"model": reference.state_dict(), "args": argparse.Namespace(model="vit_small_patch16")}
    torch.save(ckpt, tmp_path / "finetuned.pth")
    model = load_official_checkpoint(tmp_path / "finetuned.pth").eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference.eval()(x))


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch " + str(Path(os.environ["CROSSMAE_MARKER"])),))


def test_malicious_checkpoint_is_refused_and_never_executed(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("CROSSMAE_MARKER", str(marker))
    torch.save({"model": {}, "args": _RunsCode()}, tmp_path / "evil.pth")
    with pytest.raises(CrossMAEError, match=r"(posix|os)\.system"):
        load_official_checkpoint(tmp_path / "evil.pth")
    assert not marker.exists()


def test_plain_pickle_and_garbage_are_refused(tmp_path):
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"model": {}}))
    (tmp_path / "garbage.pth").write_bytes(os.urandom(1000))
    (tmp_path / "text.pth").write_text("just some text\n")
    for name in ("plain.pkl", "garbage.pth", "text.pth"):
        with warnings.catch_warnings(record=True) as caught, pytest.raises(CrossMAEError):
            warnings.simplefilter("always")
            load_official_checkpoint(tmp_path / name)
        assert not caught, f"{name}: {caught[0].message}"  # the error alone, no torch warning


def test_architecture_mismatch_names_parameter_and_shapes(tmp_path):
    ckpt = torch.load(
        REFERENCE_DIR / "crossmae_wfm_pr075.checkpoint.pth", weights_only=False, map_location="cpu"
    )
    ckpt["model"]["decoder_pred.weight"] = torch.randn(10, 32)
    torch.save(ckpt, tmp_path / "bad.pth")
    with pytest.raises(CrossMAEError, match=r"decoder\.pred\.weight.*\(10, 32\).*\(48, 32\)"):
        load_official_checkpoint(tmp_path / "bad.pth")


def _hub_release(case: str, folder: Path) -> argparse.Namespace:
    """A fixture as the authors' util/hf_hub.py publishes it: their weights as
    model.safetensors (metadata {'format': 'pt'}) and their constructor's kwargs in config.json."""
    from safetensors.torch import save_file

    ckpt = torch.load(REFERENCE_DIR / f"{case}.checkpoint.pth", weights_only=False)
    folder.mkdir()
    state = {k: v.contiguous() for k, v in ckpt["model"].items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    a, arch = ckpt["args"], ckpt["args"].arch
    config = {
        "img_size": arch["img"], "patch_size": arch["patch"], "embed_dim": arch["dim"],
        "depth": arch["depth"], "num_heads": arch["heads"], "decoder_embed_dim": arch["ddim"],
        "decoder_depth": arch["ddepth"], "decoder_num_heads": arch["dheads"], "mlp_ratio": 4,
        "norm_pix_loss": a.norm_pix_loss, "weight_fm": a.weight_fm, "use_fm": a.use_fm,
        "use_input": a.use_input, "self_attn": a.self_attn,
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    return a


@pytest.mark.parametrize("case", ["crossmae_wfm_input_pr025", "crossmae_wfm_selfattn_pr050"])
def test_authors_hub_release_loads_and_matches_their_output(case, tmp_path):
    args = _hub_release(case, tmp_path / "hub")
    model = crossmae.load_model(tmp_path / "hub")  # the folder a hub download gives
    assert model.config.prediction_ratio == model.config.mask_ratio  # the hub records no γ
    # with the fixture's masking, the function is the authors'
    fixed = MaskedAutoencoder(
        model.config.replace(mask_ratio=args.mask_ratio, prediction_ratio=args.kept_mask_ratio)
    )
    fixed.load_state_dict(model.state_dict())
    io = safe_torch_load(REFERENCE_DIR / f"{case}.io.pt")
    with torch.no_grad():
        out = fixed(io["imgs"], noise=io["noise"])
    torch.testing.assert_close(out.pred, io["pred"], rtol=1e-5, atol=2e-6)
    torch.testing.assert_close(out.loss, io["loss"], rtol=1e-5, atol=1e-6)


def test_hub_release_without_its_config_or_weights_is_one_sentence(tmp_path):
    _hub_release("crossmae_wfm_pr075", tmp_path / "hub")
    (tmp_path / "hub" / "config.json").write_text("{not json")
    with pytest.raises(CrossMAEError, match="damaged model config"):
        crossmae.load_model(tmp_path / "hub")
    (tmp_path / "hub" / "config.json").unlink()
    with pytest.raises(CrossMAEError, match=r"no config\.json beside it"):
        crossmae.load_model(tmp_path / "hub" / "model.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CrossMAEError, match=r"folder without a model\.safetensors"):
        crossmae.load_model(tmp_path / "empty")


def _ours() -> dict:
    model = crossmae.create_model("crossmae_vit_tiny_patch4_32", depth=2, decoder_depth=2)
    return model_checkpoint(model)


def _authors(**args) -> dict:
    return {"model": {"decoder_pred.weight": torch.randn(2)}, "args": argparse.Namespace(**args)}


@pytest.mark.parametrize(
    ("ckpt", "message"),
    [
        (lambda: _ours() | {"model_config": None}, "unusable model config"),
        (lambda: _ours() | {"model": dict.fromkeys(_ours()["model"], 0)}, "holds int, not a"),
        (lambda: {"model": {0: torch.zeros(1), "decoder_pred.weight": torch.zeros(1)}},
         "entry 0 holds Tensor"),
        (lambda: {"model": {"patch_embed.proj.weight": torch.randn(192, 48),
                            "pos_embed": torch.randn(1, 65, 192)}}, "not the .* convolution"),
        (lambda: _authors(arch={"img": 32}), r"args do not describe a model \(no 'patch'\)"),
        (lambda: _authors(model="mae_vit_base_patch16", cross_mae=True, use_fm=-1),
         "args do not describe a model"),
    ],
)  # fmt: skip
def test_damaged_or_foreign_checkpoints_are_one_sentence(ckpt, message, tmp_path):
    torch.save(ckpt(), tmp_path / "bad.pth")
    with pytest.raises(CrossMAEError, match=message):
        crossmae.load_model(tmp_path / "bad.pth")


def test_our_checkpoint_given_to_the_authors_loader_points_to_load_model(tmp_path):
    crossmae.save_model(tmp_path / "ours.pth", crossmae.create_model("mae_vit_tiny_patch4_32"))
    with pytest.raises(CrossMAEError, match=r"is a crossmae checkpoint; load it with crossmae\."):
        load_official_checkpoint(tmp_path / "ours.pth")


def test_an_encoder_whose_width_its_named_size_cannot_split_is_one_sentence(tmp_path):
    import timm

    narrow = timm.create_model("vit_tiny_patch16_224", embed_dim=64, depth=1, num_heads=2)
    torch.save({"model": narrow.state_dict(), "args": argparse.Namespace(model="vit_base_patch16")},
               tmp_path / "ft.pth")  # fmt: skip
    with pytest.raises(CrossMAEError, match="64 wide, which 12 heads"):
        load_official_checkpoint(tmp_path / "ft.pth")


def test_an_unreadable_file_is_named_with_the_first_sentence_of_the_cause(tmp_path):
    (tmp_path / "hello.pth").write_text("hello\n")  # torch's cause: a bare '101'
    with pytest.raises(CrossMAEError) as refused:
        load_official_checkpoint(tmp_path / "hello.pth")
    assert str(refused.value).endswith(
        "is not a readable PyTorch checkpoint (corrupt or truncated?)"
    )
    real = (REFERENCE_DIR / "mae_npl.checkpoint.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(real[:300])
    with pytest.raises(CrossMAEError) as refused:
        load_official_checkpoint(tmp_path / "cut.pth")
    message = str(refused.value)
    assert message.endswith("failed finding central directory") and ". " not in message
