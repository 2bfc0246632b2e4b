"""`crossmae profile`: counted FLOPs (attention included), ratios, a measured step."""

import json
import weakref

import pytest
import torch

from crossmae.cli import main
from crossmae.commands.profile import times
from crossmae.errors import CrossMAEError
from crossmae.models.autoencoder import MaskedAutoencoder
from crossmae.models.registry import get_config
from crossmae.profiling import (
    comparison_configs,
    count_flops,
    count_saved_activations,
    measure_step,
    saved_tensor_bytes,
)


def _profile_json(capsys, *argv):
    assert main(["profile", *argv, "--steps", "0", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_vit_base_decoder_flops_ratio_mae_vs_crossmae_12_blocks(capsys):
    report = _profile_json(
        capsys, "--model", "crossmae_vit_base_patch16", "--compare", "--gammas", "0.25"
    )
    mae, cross = report["profiles"]
    assert (mae["decoder"], mae["decoder_depth"], cross["prediction_ratio"]) == ("mae", 8, 0.25)
    ratio = report["versus_mae"][0]["decoder_flops_ratio"]
    assert 2.4 <= ratio <= 2.7  # paper: 2.48x (linear layers only)
    assert report["versus_mae"][0]["decoder_linear_flops_ratio"] == pytest.approx(2.48, abs=0.01)
    # the authors' linear-only counts: MAE 10.11, CrossMAE γ=.25 4.08 GFLOPs per image
    assert mae["decoder_flops"]["linear"] / 1e9 == pytest.approx(10.11, abs=0.01)
    assert cross["decoder_flops"]["linear"] / 1e9 == pytest.approx(4.08, abs=0.01)
    assert mae["decoder_flops"]["attention"] > 0.5e9  # 8 blocks of 197x197 attention


def test_vit_base_decoder_flops_ratio_with_8_crossmae_blocks(capsys):
    report = _profile_json(
        capsys, "--model", "crossmae_vit_base_patch16_dec8", "--compare", "--gammas", "0.25"
    )
    assert 3.5 <= report["versus_mae"][0]["decoder_flops_ratio"] <= 4.0  # paper: 3.70x
    assert report["profiles"][1]["decoder_flops"]["linear"] / 1e9 == pytest.approx(2.73, abs=0.01)


def test_attention_flops_follow_the_token_counts():
    config = get_config("crossmae_vit_tiny_patch4_32", depth=2, decoder_depth=3)
    flops = count_flops(config)
    n_vis, n_dec, heads_dim = 16 + 1, 16, 128  # [CLS] + visible keys; decoded queries
    assert flops["decoder"].attention == 3 * 2 * (2 * n_dec * n_vis * heads_dim)
    assert flops["encoder"].attention == 2 * 2 * (2 * n_vis * n_vis * 192)


def test_comparison_pairs_mae_with_crossmae():
    rows = comparison_configs("mae_vit_small_patch16", [0.25, 0.75], img_size=112)
    assert [(n, c.decoder, c.prediction_ratio) for n, c in rows][1:] == [
        ("crossmae_vit_small_patch16", "cross", 0.25),
        ("crossmae_vit_small_patch16", "cross", 0.75),
    ]
    assert rows[0][0] == "mae_vit_small_patch16"
    assert all(c.img_size == 112 for _, c in rows)


def test_measured_step_on_cpu():
    config = get_config("crossmae_vit_tiny_patch4_32", depth=1, decoder_depth=1)
    stats = measure_step(config, batch_size=2, device="cpu", steps=1, warmup=1)
    assert stats.images_per_s > 0 and stats.step_ms > 0
    assert stats.peak_memory_mb is None and "--activations" in stats.memory


def test_a_step_out_of_gpu_memory_is_one_sentence(monkeypatch):
    def no_memory(self, *args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(MaskedAutoencoder, "forward", no_memory)
    config = get_config("crossmae_vit_tiny_patch4_32", depth=1, decoder_depth=1)
    for compiled in (False, True):  # not mistaken for a compile failure
        with pytest.raises(CrossMAEError) as err:
            measure_step(config, batch_size=6, device="cpu", steps=1, warmup=1, compile=compiled)
        assert str(err.value) == "out of GPU memory at batch 6; try a smaller batch size"


def test_a_count_keeps_nothing_alive_after_it():
    a = torch.randn(1000, requires_grad=True)
    outputs = []

    def forward() -> torch.Tensor:
        out = a.exp()  # exp saves its own output
        outputs.append(weakref.ref(out))
        return out

    assert saved_tensor_bytes(forward) == 4000
    assert outputs[0]() is None  # freed with its graph, not kept in a cycle


def test_saved_tensor_bytes_counts_each_saved_storage_once():
    a, b = torch.randn(5, 7, requires_grad=True), torch.randn(5, 7, requires_grad=True)
    size = 5 * 7 * 4
    assert saved_tensor_bytes(lambda: a.exp()) == size  # exp keeps its output
    assert saved_tensor_bytes(lambda: (a * b).view(-1)) == 2 * size  # mul keeps both inputs
    assert saved_tensor_bytes(lambda: a * a) == size  # one storage, saved twice
    assert saved_tensor_bytes(lambda: a.exp()[:2].exp()) == size + 2 * 7 * 4
    holder = torch.nn.Module()
    holder.a = torch.nn.Parameter(a)  # the same storage as `a`
    assert saved_tensor_bytes(lambda: a * b, weights_of=holder) == size
    assert saved_tensor_bytes(lambda: (a + b).sum()) == 0  # nothing needed for backward


@pytest.mark.parametrize("amp", [False, True])
def test_held_memory_is_linear_in_the_batch(amp):
    config = get_config("crossmae_vit_tiny_patch4_32", depth=2, decoder_depth=2)
    counted = count_saved_activations(config, batch_size=3, amp=amp)
    model = MaskedAutoencoder(config).train()
    imgs = torch.randn(3, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        direct = saved_tensor_bytes(lambda: model(imgs).loss, weights_of=model) / 2**20
    assert direct == pytest.approx(counted.per_step_mib + 3 * counted.per_image_mib, rel=1e-9)
    assert (counted.per_step_mib > 0) == amp  # autocast's bfloat16 copies of the weights
    params = sum(p.numel() for p in model.parameters())
    assert counted.state_mib == 12 * params / 2**20  # no gradients yet when the forward ends
    assert counted.held_mib == pytest.approx(counted.state_mib + direct)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        masking = model.mask(3, imgs.device)
        encoder = saved_tensor_bytes(lambda: model.encode(imgs, masking), weights_of=model)
    # the encoder's weight copies are a share of the model's; its activations, of the images
    assert encoder / 2**20 - 3 * counted.encoder_per_image_mib <= counted.per_step_mib + 1e-9
    assert encoder / 2**20 >= 3 * counted.encoder_per_image_mib - 1e-9


def test_partial_reconstruction_holds_less_for_backward():
    tiny = {"depth": 2, "decoder_depth": 2}
    mae = count_saved_activations(get_config("mae_vit_tiny_patch4_32", **tiny), 1)
    per_image = {
        gamma: count_saved_activations(
            get_config("crossmae_vit_tiny_patch4_32", **tiny, prediction_ratio=gamma), 1
        ).per_image_mib
        for gamma in (0.25, 0.75)
    }
    assert per_image[0.25] < per_image[0.75] and per_image[0.25] < mae.per_image_mib
    assert 0 < mae.encoder_per_image_mib < mae.per_image_mib
    bf16 = count_saved_activations(get_config("mae_vit_tiny_patch4_32", **tiny), 1, amp=True)
    assert bf16.per_image_mib < 0.75 * mae.per_image_mib


def test_gradient_checkpointing_holds_a_fraction_for_backward(capsys):
    argv = ("--model", "crossmae_vit_tiny_patch4_32", "--activations")
    plain = _profile_json(capsys, *argv)["profiles"][0]["activations"]
    kept = _profile_json(capsys, *argv, "--grad-checkpointing")["profiles"][0]["activations"]
    assert kept["per_image_mib"] < plain["per_image_mib"] / 3
    assert kept["state_mib"] == plain["state_mib"]
    # autocast's cache keeps every bfloat16 weight copy until the forward ends, checkpointed
    # blocks or not
    bf16 = [
        _profile_json(capsys, *argv, "--amp", *more)["profiles"][0]["activations"]
        for more in ([], ["--grad-checkpointing"])
    ]
    assert bf16[1]["per_step_mib"] == bf16[0]["per_step_mib"] > 0
    assert main([*_one_step("2"), "--grad-checkpointing"]) == 0  # the timed step runs too


def test_text_report(capsys):
    assert main(["profile", "--model", "mae_vit_tiny_patch4_32", "--compare", "--steps", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("crossmae_vit_tiny_patch4_32") == 4
    assert "decoder FLOPs 2.60x fewer than MAE's" in out and "step" not in out.split("FLOPs:")[0]
    assert main(_one_step("2")) == 0
    assert "batch 2 on cpu, mean of 1 steps" in capsys.readouterr().out
    argv = ["profile", "--model", "mae_vit_tiny_patch4_32", "--compare", "--gammas", "0.25"]
    assert main([*argv, "--steps", "0", "--activations", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert out.count("holds for backward (float32, eager)") == 2 and "at batch 4" in out
    assert "activations 1.50x smaller, 1.02x more held at the batch" in out  # weights: 12 blocks


def test_a_ratio_below_one_is_said_the_other_way_round():
    assert times(2.6, "fewer", "more") == "2.60x fewer"
    assert times(1 / 1.25, "fewer", "more") == "1.25x more"  # not "0.80x fewer"
    assert times(1.0, "faster", "slower") == "1.00x faster"


def test_activations_in_the_json_report(capsys):
    report = _profile_json(
        capsys, "--model", "mae_vit_tiny_patch4_32", "--compare", "--gammas", "0.25",
        "--activations", "--amp", "--batch-size", "16",
    )  # fmt: skip
    mae, cross = (p["activations"] for p in report["profiles"])
    assert mae["dtype"] == "bfloat16 autocast" and cross["batch_size"] == 16
    ratios = report["versus_mae"][0]
    assert ratios["activations_ratio"] == pytest.approx(
        mae["per_image_mib"] / cross["per_image_mib"]
    )
    assert ratios["activations_ratio"] > ratios["held_ratio"] > 1


def test_versus_mae_ratios():
    from crossmae.commands.profile import versus
    from crossmae.profiling import Flops, Profile, StepStats

    def fake(decoder_gflops, images_per_s, memory_mb):
        step = StepStats("cpu", 8, 5, 1.0, images_per_s, memory_mb, "test")
        return Profile(
            "m", "mae", 32, 0.75, 0.75, 8, {}, Flops(1e9, 0), Flops(decoder_gflops * 1e9, 0), step
        )

    ratios = versus(fake(10, 100, 800), fake(4, 150, 400))
    assert ratios["decoder_flops_ratio"] == pytest.approx(2.5)
    assert ratios["total_flops_ratio"] == pytest.approx(11 / 5)
    assert ratios["step_speedup"] == pytest.approx(1.5)
    assert ratios["memory_ratio"] == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "nope"], "unknown model"),
        (["--model", "crossmae_vit_base_patch16", "--prediction-ratio", "0.9"], "prediction ratio"),
        (["--model", "mae_vit_base_patch16", "--prediction-ratio", "0.25"], "is CrossMAE's"),
        (["--model", "crossmae_vit_base_patch16_448", "--compare"], "MAE/CrossMAE pair"),
        (["--model", "mae_vit_base_patch16", "--compare", "--prediction-ratio", "0.2"], "gammas"),
        (["--model", "mae_vit_base_patch16", "--img-size", "100"], "not divisible"),
        (["--model", "mae_vit_base_patch16", "--steps", "-1"], "--steps"),
    ],
)
def test_bad_input_exits_2(capsys, argv, message):
    assert (
        main(["profile", *argv, "--steps", "0"] if "--steps" not in argv else ["profile", *argv])
        == 2
    )
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the no-GPU message")
def test_cuda_without_a_gpu_is_a_clear_error(capsys):
    argv = ["profile", "--model", "mae_vit_tiny_patch4_32", "--device", "cuda", "--steps", "1"]
    assert main(argv) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def _one_step(batch: str) -> list[str]:
    tiny = ["--model", "crossmae_vit_tiny_patch4_32", "--img-size", "16"]
    return ["profile", *tiny, "--steps", "1", "--batch-size", batch]


def test_a_batch_of_zero_is_refused_not_replaced(capsys):
    assert main(_one_step("0")) == 2
    assert "batch" in capsys.readouterr().err
