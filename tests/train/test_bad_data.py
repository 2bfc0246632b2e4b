"""A folder of broken and unusual files trains through; what was skipped is reported once."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from crossmae.cli import main


@pytest.fixture
def messy_folder(tmp_path, write_images):
    """16 good images plus one of each kind of trouble, in a labeled train/ folder."""
    root = tmp_path / "messy"
    write_images(root / "train", 16)
    odd = root / "train" / "a"
    rng = np.random.default_rng(1)
    jpeg = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    (odd / "corrupt.jpg").write_bytes(jpeg.getvalue()[:20] + bytes(200) + b"\xff\xd9")
    png = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(png, "PNG")
    (odd / "truncated.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    Image.fromarray(rng.integers(0, 256, (24, 24, 4), dtype=np.uint8), "RGBA").save(
        odd / "rgba.png"
    )
    Image.fromarray(rng.integers(0, 256, (24, 24), dtype=np.uint8), "L").save(odd / "grey.png")
    deep = rng.integers(0, 65536, (24, 24), dtype=np.uint16)
    Image.fromarray(deep).save(odd / "sixteen_bit.png")
    (odd / "empty.jpg").write_bytes(b"")
    (odd / "notes.txt").write_text("not an image")
    return root


@pytest.mark.parametrize("in_memory", ["true", "false"])
def test_bad_files_are_skipped_counted_and_reported(
    tiny, messy_folder, tmp_path, capsys, in_memory
):
    code = main(["pretrain", *tiny, "--data", str(messy_folder), "--in-memory", in_memory,
                 "--epochs", "2", "--batch-size", "4", "--warmup-epochs", "0",
                 "--output-dir", str(tmp_path / f"run-{in_memory}")])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in err
    report = [line for line in out.splitlines() if re.search(r"skipped \d+ of", line)]
    assert len(report) == 2, out  # after the first epoch, and in the summary
    # 7 odd files: corrupt, truncated and empty are skipped at decoding, the text file at the
    # scan; RGBA, grey and 16-bit images are converted and train.
    # (after epoch 1 a lazily decoding loader may not have met every file yet)
    assert "skipped 4 of 23 files" in report[-1]
    for reason in ("1 corrupt", "1 truncated", "1 empty", "1 not an image"):
        assert reason in report[-1], report[-1]


@pytest.mark.parametrize("workers", ["0", "1"])
def test_shards_that_give_no_image_say_so(workers, tiny, tmp_path, capsys):
    """Not "use a smaller --batch-size" alone: no batch size helps when nothing decodes."""
    (tmp_path / "bad.tar").write_bytes(b"not a tar archive\n")
    args = [*tiny, "--data", str(tmp_path / "bad.tar"), "--samples-per-epoch", "16",
            "--batch-size", "4", "--num-workers", workers, "--warmup-epochs", "0",
            "--output-dir", str(tmp_path / "run")]  # fmt: skip
    assert main(["pretrain", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        "crossmae pretrain: error: the tar shards give no full batch of 4 images to each "
        "process (skipped 1 of 1 samples: 1 corrupt); replace the damaged files, or use a "
        "smaller --batch-size"
    )
