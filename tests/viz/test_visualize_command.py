"""`crossmae visualize`: every view writes a valid PNG of the size its layout promises."""

import pytest
from PIL import Image

from crossmae.cli import main
from crossmae.viz.figure import (
    LABEL_PX,
    PANEL_PX,
    ROW_LABEL_PX,
    GridLayout,
    header_px,
    image_grid,
    save_png,
    title_lines,
)
from crossmae.viz.plots import fusion_figure_size, mass_figure_size


def _png_size(path):
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG"
        return img.size


def _assert_grid(path, rows, cols, row_labels=False):
    """A PNG of `rows` x `cols` panels, under a title strip of one to six lines."""
    width, height = _png_size(path)
    assert width == GridLayout(rows, cols, row_labels).width
    assert header_px("", width) <= height - rows * (PANEL_PX + LABEL_PX) <= 10 + 6 * 14


def _run(*argv):
    return main(["visualize", *map(str, argv)])


def test_reconstruction_grid(checkpoints, image_folder, tmp_path, capsys):
    out = tmp_path / "rec.png"
    assert _run(checkpoints["cross"], "--data", image_folder, "--num", 3, "--output", out) == 0
    _assert_grid(out, 3, 4)
    assert _png_size(out)[0] == 4 * PANEL_PX
    printed = capsys.readouterr().out
    assert printed.count("PSNR") == 4 and "on the 16 decoded masked patches" in printed
    assert "mean masked-patch PSNR" in printed
    assert "reference: filling each of those patches with its true mean value" in printed


def test_without_images_it_draws_the_builtin_demo_set(checkpoints, tmp_path):
    out = tmp_path / "demo.png"
    assert _run(checkpoints["cross"], "--num", 2, "--output", out) == 0
    _assert_grid(out, 2, 4)


def test_decode_all_and_image_files_of_another_size(checkpoints, image_folder, tmp_path, capsys):
    files = sorted((image_folder / "test" / "b").glob("*.png"))  # one of them is 48x40
    out = tmp_path / "all.png"
    code = _run(
        checkpoints["cross"],
        "--image",
        *files,
        "--decode-all",
        "--mask-ratio",
        0.5,
        "--output",
        out,
    )
    assert code == 0
    _assert_grid(out, 3, 4)
    assert "on the 32 decoded masked patches" in capsys.readouterr().out


def test_per_block(checkpoints, image_folder, tmp_path):
    out = tmp_path / "blocks.png"
    assert (
        _run(
            checkpoints["cross"], "--data", image_folder, "--num", 2, "--per-block", "--output", out
        )
        == 0
    )
    depth = 3
    _assert_grid(out, depth + 2, 4, row_labels=True)
    assert _png_size(out)[0] == ROW_LABEL_PX + 4 * PANEL_PX


def test_per_block_mae(checkpoints, image_folder, tmp_path):
    out = tmp_path / "blocks.png"
    assert (
        _run(checkpoints["mae"], "--data", image_folder, "--num", 1, "--per-block", "--output", out)
        == 0
    )
    _assert_grid(out, 5, 2, row_labels=True)


def test_cross_attention_with_chosen_patches(checkpoints, image_folder, tmp_path):
    out = tmp_path / "attn.png"
    code = _run(
        checkpoints["cross"],
        "--data",
        image_folder,
        "--num",
        2,
        "--attention",
        "--patch",
        0,
        27,
        "--output",
        out,
    )
    assert code == 0
    _assert_grid(out, 2 * 2, 1 + 3)


def test_cross_attention_with_random_queries(checkpoints, image_folder, tmp_path):
    out = tmp_path / "attn.png"
    code = _run(
        checkpoints["cross_nofusion"],
        "--data",
        image_folder,
        "--num",
        1,
        "--attention",
        "--queries",
        3,
        "--output",
        out,
    )
    assert code == 0
    _assert_grid(out, 3, 4)


def test_mae_attention_mass(checkpoints, image_folder, tmp_path, capsys):
    out = tmp_path / "mass.png"
    assert (
        _run(checkpoints["mae"], "--data", image_folder, "--num", 2, "--attention", "--output", out)
        == 0
    )
    assert _png_size(out) == mass_figure_size(3) == (560, 400)
    table = capsys.readouterr().out.splitlines()
    header = table.index("block  to visible  to mask tokens  to [CLS]")
    rows = [list(map(float, line.split()[1:])) for line in table[header + 1 : header + 4]]
    assert all(sum(r) == pytest.approx(1, abs=2e-3) for r in rows)


def test_fusion_weights(checkpoints, tmp_path):
    out = tmp_path / "fusion.png"
    assert _run(checkpoints["cross"], "--fusion-weights", "--output", out) == 0
    assert _png_size(out) == fusion_figure_size(3, 3) == (480, 300)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["mae", "--fusion-weights"], "no feature fusion"),
        (["cross_nofusion", "--fusion-weights"], "no feature fusion"),
        (["cross", "DATA", "--attention", "--patch", "64"], "patch 64 does not exist"),
        (["mae", "DATA", "--attention", "--patch", "3"], "--patch chooses query patches"),
        (["cross", "DATA", "--mask-ratio", "1.5"], "between 0 and 1"),
        (["cross", "DATA", "--mask-ratio", "0.999"], "no visible patch"),
        (["cross", "DATA", "--num", "99"], "asked for 99 images"),
        (["cross", "--image", "missing.png"], "does not exist"),
        (["missing"], "does not exist"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(
    checkpoints, image_folder, tmp_path, capsys, args, message
):
    ckpt = checkpoints.get(args[0], tmp_path / "missing.pth")
    rest = [str(image_folder) if a == "DATA" else a for a in args[1:]]
    rest = ["--data", *rest] if "DATA" in args else rest
    out = tmp_path / "x.png"
    assert _run(ckpt, *rest, "--output", out) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_output_must_be_a_png(checkpoints, tmp_path, capsys):
    assert _run(checkpoints["cross"], "--fusion-weights", "--output", tmp_path / "x.jpg") == 2
    assert ".png" in capsys.readouterr().err


def test_layout_sizes_are_what_the_panels_need(tmp_path):
    assert GridLayout(1, 1).size == (PANEL_PX, 24 + PANEL_PX + LABEL_PX)
    title = "a long title " * 30
    layout = GridLayout(2, 3, row_labels=True, title=title)
    assert layout.header == 10 + 14 * len(title_lines(title, layout.width)) > 24
    fig, axes = image_grid(layout)
    assert len(axes) == 2 and len(axes[0]) == 3
    assert _png_size(save_png(fig, tmp_path / "grid.png")) == layout.size


@pytest.mark.parametrize("view", [["--fusion-weights"], ["--data", "DATA"]])
def test_an_encoder_without_its_decoder_is_refused_in_one_sentence(
    image_folder, tmp_path, capsys, view
):
    """MAE's released mae_pretrain_vit_*.pth, or a fine-tuned model, has no decoder to draw."""
    import timm
    import torch

    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, depth=1)
    torch.save({"model": vit.state_dict()}, tmp_path / "encoder.pth")
    view = [str(image_folder) if a == "DATA" else a for a in view]
    assert _run(tmp_path / "encoder.pth", *view, "--output", tmp_path / "x.png") == 2
    err = capsys.readouterr().err
    assert "holds an encoder without its decoder; visualize needs a pretraining" in err
    assert "Traceback" not in err and not (tmp_path / "x.png").exists()
