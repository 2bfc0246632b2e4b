"""`--init-from`: a new run starts from another run's weights (ours or the authors')."""

from __future__ import annotations

import pytest
import torch

import crossmae
from crossmae.cli import main
from crossmae.train.checkpointing import load_training_state

from conftest import REFERENCE_DIR

AUTHORS = REFERENCE_DIR / "crossmae_wfm_input_pr025.checkpoint.pth"
STILL = ["--lr", "1e-12", "--weight-decay", "0", "--max-steps", "1", "--batch-size", "8",
         "--warmup-epochs", "0", "--log-every", "1"]  # fmt: skip  # one step that moves nothing


def _pretrain(capsys, *args) -> tuple[int, str, str]:
    code = main(["pretrain", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def _weights(path) -> dict[str, torch.Tensor]:
    return crossmae.load_model(path).state_dict()


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=1e-9) for k in a)


def test_a_new_run_starts_from_the_weights_with_its_own_objective(
    tiny, image_folder, tmp_path, capsys
):
    source = tmp_path / "source"
    assert _pretrain(capsys, *tiny, "--data", image_folder, "--epochs", 1, "--batch-size", 8,
                     "--warmup-epochs", 0, "--output-dir", source)[0] == 0  # fmt: skip
    warm, cold = tmp_path / "warm", tmp_path / "cold"
    code, out, err = _pretrain(capsys, *tiny, "--data", image_folder, *STILL, "--mask-ratio",
                               0.5, "--init-from", source / "checkpoint.pth", "--output-dir",
                               warm)  # fmt: skip
    assert code == 0, err
    assert f"weights {source / 'checkpoint.pth'} (crossmae format)" in out
    assert _pretrain(capsys, *tiny, "--data", image_folder, *STILL, "--seed", 1, "--output-dir",
                     cold)[0] == 0  # fmt: skip
    trained = _weights(source / "checkpoint.pth")
    assert _same(_weights(warm / "checkpoint.pth"), trained)
    assert not _same(_weights(cold / "checkpoint.pth"), trained)
    state = load_training_state(warm / "checkpoint.pth")
    assert state["global_step"] == 1 and state["epoch"] == 0  # a new run: its own schedule
    assert crossmae.load_model(warm / "checkpoint.pth").config.mask_ratio == 0.5


def test_the_authors_checkpoint_starts_a_run_of_its_architecture(image_folder, tmp_path, capsys):
    c = crossmae.load_model(AUTHORS).config
    overrides = [f"{k}={getattr(c, k)}" for k in ("embed_dim", "depth", "num_heads",
                 "decoder_dim", "decoder_depth", "decoder_heads")]  # fmt: skip
    out_dir = tmp_path / "run"
    code, out, err = _pretrain(capsys, "--model", "crossmae_vit_tiny_patch4_32",
                               "--model-overrides", *overrides, "--prediction-ratio", 0.25,
                               "--device", "cpu", "--no-tensorboard", "--num-workers", 0,
                               "--recon-every-epochs", 0, "--data", image_folder, *STILL,
                               "--init-from", AUTHORS, "--output-dir", out_dir)  # fmt: skip
    assert code == 0, err
    assert "(authors' format)" in out
    assert _same(_weights(out_dir / "checkpoint.pth"), _weights(AUTHORS))


@pytest.mark.parametrize(
    ("what", "message"),
    [
        (
            "other",
            "another architecture (depth is 2 there and 3 here); add --model-overrides depth=2",
        ),
        ("encoder", "another architecture (depth is 2 there and 3 here); add --model-overrides"),
        ("missing", "does not exist"),
    ],
)
def test_a_file_that_cannot_start_the_run_is_one_sentence(
    what, message, tiny, image_folder, tmp_path, capsys
):
    model = crossmae.create_model("crossmae_vit_tiny_patch4_32", img_size=16, embed_dim=32,
                                  num_heads=2, depth=2, decoder_dim=32, decoder_depth=2,
                                  decoder_heads=2)  # fmt: skip
    path = tmp_path / (f"{what}.safetensors" if what == "encoder" else f"{what}.pth")
    if what == "other":
        crossmae.save_model(path, model)
    elif what == "encoder":
        crossmae.save_model(tmp_path / "ae.pth", model)
        assert main(["export", str(tmp_path / "ae.pth"), "--output", str(path)]) == 0
    code, _, err = _pretrain(capsys, *tiny, "--model-overrides", "img_size=16", "embed_dim=32",
                             "num_heads=2", "depth=3", "decoder_dim=32", "decoder_depth=2",
                             "decoder_heads=2", "--data", image_folder, *STILL, "--init-from",
                             path, "--output-dir", tmp_path / "run")  # fmt: skip
    assert code == 2 and message in err and "Traceback" not in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("decoder", ["cross", "mae"])
def test_an_encoder_alone_starts_the_encoder_and_leaves_the_decoder_fresh(
    decoder, tiny, image_folder, tmp_path, capsys
):
    """A timm export (a ViT with a final norm): CrossMAE with fusion has no use for the
    norm; MAE takes it. The decoder is the new run's own initialisation."""
    name = "crossmae_vit_tiny_patch4_32" if decoder == "cross" else "mae_vit_tiny_patch4_32"
    sizes = {"img_size": 16, "embed_dim": 32, "num_heads": 2, "depth": 2, "decoder_dim": 32,
             "decoder_depth": 2, "decoder_heads": 2}  # fmt: skip
    model = crossmae.create_model(name, **sizes)
    with torch.no_grad():  # unlike the new run's initialisation, whatever its seed
        for param in model.parameters():
            param.add_(torch.randn_like(param), alpha=0.02)
    crossmae.save_model(tmp_path / "ae.pth", model)
    encoder = tmp_path / "encoder.safetensors"
    assert main(["export", str(tmp_path / "ae.pth"), "--output", str(encoder)]) == 0
    out_dir = tmp_path / "run"
    code, out, err = _pretrain(capsys, *tiny, "--model", name, "--data", image_folder, *STILL,
                               "--init-from", encoder, "--output-dir", out_dir)  # fmt: skip
    assert code == 0, err
    unused = "; not used: norm" if decoder == "cross" else ""
    assert f"weights {encoder} (timm export): the encoder; fresh: decoder{unused}\n" in out
    started = _weights(out_dir / "checkpoint.pth")
    vit = crossmae.load_model(encoder).state_dict()
    encoder = {k.removeprefix("encoder."): v for k, v in started.items() if "encoder." in k}
    assert _same(encoder, {k: vit[k] for k in encoder})
    assert ("norm.weight" in encoder) == (decoder == "mae")
    source = _weights(tmp_path / "ae.pth")
    assert not torch.allclose(started["decoder.pred.weight"], source["decoder.pred.weight"])


def test_a_resumed_run_keeps_its_own_weights(tiny, image_folder, tmp_path, capsys):
    source, run = tmp_path / "source", tmp_path / "run"
    common = [*tiny, "--data", image_folder, "--batch-size", 8, "--warmup-epochs", 0]
    assert _pretrain(capsys, *common, "--epochs", 1, "--output-dir", source)[0] == 0
    started = [*common, "--init-from", source / "checkpoint.pth", "--output-dir", run,
               "--resume", "auto"]  # fmt: skip
    assert _pretrain(capsys, *started, "--epochs", 1)[0] == 0
    after_one = _weights(run / "checkpoint.pth")
    assert not _same(after_one, _weights(source / "checkpoint.pth"))  # it trained on
    code, out, err = _pretrain(
        capsys, *started, "--epochs", 2, "--max-steps", 9, "--lr", 1e-12, "--weight-decay", 0
    )  # one more step that moves nothing
    assert code == 0, err
    assert "resumed" in out and "weights " not in out
    assert load_training_state(run / "checkpoint.pth")["global_step"] == 9
    assert _same(_weights(run / "checkpoint.pth"), after_one)  # its own, not the source's


def test_an_image_size_given_as_a_pair_or_a_number_is_the_same(tiny, image_folder, tmp_path,
                                                               capsys):  # fmt: skip
    path = tmp_path / "pair.pth"
    crossmae.save_model(path, crossmae.create_model(
        "crossmae_vit_tiny_patch4_32", img_size=(16, 16), embed_dim=32, num_heads=2, depth=2,
        decoder_dim=32, decoder_depth=2, decoder_heads=2))  # fmt: skip
    code, _, err = _pretrain(capsys, *tiny, "--data", image_folder, *STILL, "--init-from", path,
                             "--output-dir", tmp_path / "run")  # fmt: skip
    assert code == 0, err
    code, _, err = _pretrain(capsys, *tiny, "--img-size", 20, "--data", image_folder, *STILL,
                             "--init-from", path, "--output-dir", tmp_path / "other")  # fmt: skip
    assert code == 2 and "(img_size is [16, 16] there and [20, 20] here); pass --img-size 16" in err


def test_settings_a_decoder_does_not_have_are_not_compared(image_folder, tmp_path, capsys):
    """An MAE decoder has no fusion: its fusion settings shape nothing, whatever they say."""
    sizes = {"img_size": 16, "embed_dim": 32, "num_heads": 2, "depth": 2, "decoder_dim": 32,
             "decoder_depth": 2, "decoder_heads": 2}  # fmt: skip
    mae = crossmae.create_model("mae_vit_tiny_patch4_32", **sizes, fusion_layers=[0])
    crossmae.save_model(tmp_path / "mae.pth", mae)
    overrides = [f"{k}={v}" for k, v in sizes.items()] + ["fusion=false"]
    code, _, err = _pretrain(capsys, "--model", "mae_vit_tiny_patch4_32", "--model-overrides",
                             *overrides, "--device", "cpu", "--no-tensorboard", "--num-workers",
                             0, "--recon-every-epochs", 0, "--data", image_folder, *STILL,
                             "--init-from", tmp_path / "mae.pth", "--output-dir",
                             tmp_path / "run")  # fmt: skip
    assert code == 0, err
