"""Damaged, odd and hostile image files: converted or skipped and counted, never raised."""

import io
import os
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile
from torch.utils.data import DataLoader, Subset

from crossmae.data import ImageSkipped, decode_image, eval_transform, open_image_dataset
from crossmae.data.encoded import collate_good, decoded_images, without_stand_ins
from crossmae.errors import CrossMAEError


def _damaged_pixels(png: bytes) -> bytes:
    """A whole PNG whose compressed pixels are overwritten: corrupt, not cut short."""
    data = bytearray(png)
    start = data.index(b"IDAT") + 8
    data[start : start + 8] = bytes(8)
    return bytes(data)


@pytest.fixture
def messy_folder(tmp_path, random_image, encode, rng):
    """Five convertible odd images, three broken ones and a text file."""
    rgb = random_image(24, 20)
    grey16 = Image.fromarray(rng.integers(0, 65536, (16, 16), dtype=np.uint16))
    png = encode(random_image(), "PNG")
    files = {
        "rgba.png": encode(random_image(mode="RGBA"), "PNG"),
        "grey.jpg": encode(random_image(mode="L"), "JPEG"),
        "grey16.png": encode(grey16, "PNG"),
        "cmyk.jpg": encode(rgb.convert("CMYK"), "JPEG"),
        "palette.png": encode(rgb.convert("P"), "PNG", transparency=3),
        "corrupt.png": _damaged_pixels(png),
        "truncated.png": png[: len(png) // 2],
        "empty.jpg": b"",
        "notes.txt": b"not an image",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


EXPECTED_REPORT = "skipped 4 of 9 files: 1 corrupt, 1 truncated, 1 empty, 1 not an image"


@pytest.mark.parametrize("workers", [0, 2])
def test_messy_folder_loads_and_reports(messy_folder, workers):
    ds = open_image_dataset(messy_folder, transform=eval_transform(32))
    assert len(ds) == 8  # the text file is left out at scan time
    assert ds.report() == "skipped 1 of 9 files: 1 not an image"
    loader = DataLoader(ds, batch_size=3, num_workers=workers)
    batches = list(loader)  # must not raise
    images = torch.cat([x for x, _ in batches])
    assert images.shape == (8, 3, 32, 32)  # bad items were replaced by good ones
    assert torch.isfinite(images).all()
    assert ds.report() == EXPECTED_REPORT  # found in worker processes, seen here
    list(loader)
    assert ds.report() == EXPECTED_REPORT  # a second epoch does not count twice


@pytest.mark.parametrize("workers", [0, 2])
def test_without_stand_ins_bad_items_are_left_out_of_the_batches(messy_folder, workers):
    ds = open_image_dataset(messy_folder, transform=eval_transform(32))
    subset = without_stand_ins(Subset(ds, [0, 1, 2, 3, 4, 5, 6, 7]))
    batches = list(DataLoader(subset, batch_size=3, num_workers=workers, collate_fn=collate_good))
    assert sum(len(labels) for _, labels in batches) == 5  # the five convertible images
    assert ds.report() == EXPECTED_REPORT


def test_decoded_images_counts_what_decoded_through_nested_subsets(messy_folder):
    ds = open_image_dataset(messy_folder, transform=eval_transform(32))
    names = [Path(ds.name(i)).name for i in range(len(ds))]
    picked = [names.index(n) for n in ("corrupt.png", "rgba.png", "empty.jpg", "grey.jpg")]
    nested = Subset(Subset(ds, picked), [1, 2, 3])  # rgba, empty, grey
    assert decoded_images(nested) == 3  # nothing read yet: none known bad
    list(DataLoader(ds, batch_size=3))
    assert decoded_images(ds) == 5
    assert decoded_images(nested) == 2
    assert decoded_images(Subset(ds, picked[:1])) == 0


def test_odd_modes_are_converted_faithfully(messy_folder):
    ds = open_image_dataset(messy_folder)
    by_name = {os.path.basename(ds.name(i)): i for i in range(len(ds))}
    for name in ("rgba.png", "grey.jpg", "grey16.png", "cmyk.jpg", "palette.png"):
        img = decode_image(ds.read(by_name[name]))
        assert img.mode == "RGB", name
    # 16-bit grey is scaled to 8 bits (Pillow's own convert clips it to white).
    raw = np.asarray(Image.open(messy_folder / "grey16.png"), dtype=np.int64)
    out = np.asarray(decode_image(ds.read(by_name["grey16.png"]), mode="L"), dtype=np.int64)
    assert np.abs(out - raw / 257).max() <= 0.5 + 1e-9
    assert out.std() > 30


def test_all_bad_raises_one_clear_error(tmp_path, rng):
    (tmp_path / "a.jpg").write_bytes(rng.bytes(100))
    ds = open_image_dataset(tmp_path)
    with pytest.raises(CrossMAEError, match="could be decoded"):
        ds[0]


def png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR claiming width x height RGB, with one tiny IDAT."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


@pytest.fixture
def no_pixel_decoding(monkeypatch):
    calls = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: calls.append(self))
    return calls


@pytest.mark.parametrize(("side", "limit"), [(100_000, 2**28), (12_000, 10**8)])
def test_decompression_bomb_skipped_from_header(tmp_path, no_pixel_decoding, side, limit):
    (tmp_path / "bomb.png").write_bytes(png_header(side, side))
    start = time.perf_counter()
    with pytest.raises(ImageSkipped) as skip:
        decode_image((tmp_path / "bomb.png").read_bytes(), max_pixels=limit)
    assert skip.value.reason == "too large"
    assert no_pixel_decoding == []
    assert time.perf_counter() - start < 1.0


def test_pixel_limit_is_configurable(tmp_path, random_image, encode, no_pixel_decoding):
    (tmp_path / "big.png").write_bytes(encode(random_image(64, 64), "PNG"))
    (tmp_path / "small.png").write_bytes(encode(random_image(16, 16), "PNG"))
    ds = open_image_dataset(tmp_path, max_pixels=64 * 64 - 1)
    assert [os.path.basename(ds.name(i)) for i in range(2)] == ["big.png", "small.png"]
    ds[0]  # substitutes small.png without decoding big.png's pixels
    assert [img.size for img in no_pixel_decoding] == [(16, 16)]
    assert ds.report() == "skipped 1 of 2 files: 1 too large"


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlink_loops_do_not_hang_the_scan(tmp_path, random_image, encode):
    (tmp_path / "cat" / "sub").mkdir(parents=True)
    (tmp_path / "cat" / "sub" / "a.png").write_bytes(encode(random_image(), "PNG"))
    os.symlink(tmp_path / "cat", tmp_path / "cat" / "sub" / "loop")
    os.symlink("..", tmp_path / "cat" / "up")
    os.symlink("x.jpg", tmp_path / "cat" / "x.jpg")  # a file link to itself
    start = time.perf_counter()
    ds = open_image_dataset(tmp_path)
    assert time.perf_counter() - start < 5
    assert ds.classes == ["cat"] and len(ds) == 1
    assert ds.report() == "skipped 1 of 2 files: 1 unreadable"


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_a_link_to_another_class_or_the_root_does_not_relabel_a_class(
    tmp_path, random_image, encode
):
    for name in ("a/1.png", "b/2.png", "b/3.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(encode(random_image(), "PNG"))
    os.symlink("..", tmp_path / "a" / "up")  # a/up/b/*.png would be read as class a
    os.symlink(tmp_path / "b", tmp_path / "a" / "b_too")
    ds = open_image_dataset(tmp_path)
    named = sorted((ds.name(i).removeprefix(f"{tmp_path}/"), int(ds.labels[i])) for i in range(3))
    assert len(ds) == 3 and named == [("a/1.png", 0), ("b/2.png", 1), ("b/3.png", 1)]


def test_unreadable_file_is_reported(tmp_path, random_image, encode):
    (tmp_path / "locked.png").write_bytes(encode(random_image(), "PNG"))
    (tmp_path / "open.png").write_bytes(encode(random_image(), "PNG"))
    os.chmod(tmp_path / "locked.png", 0)
    if os.access(tmp_path / "locked.png", os.R_OK):
        pytest.skip("running as root: chmod 000 files stay readable")
    ds = open_image_dataset(tmp_path)
    assert ds[0][0].size == (32, 32)
    assert ds.report() == "skipped 1 of 2 files: 1 unreadable"


def test_permission_error_on_read_is_reported(tmp_path, random_image, encode, monkeypatch):
    """The same path for root, who can read chmod-000 files: the read itself is refused."""
    for name in ("locked.png", "open.png"):
        (tmp_path / name).write_bytes(encode(random_image(), "PNG"))

    def guarded_open(path, *args, **kwargs):
        if str(path).endswith("locked.png"):
            raise PermissionError(13, "Permission denied", str(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr("crossmae.data.folder.open", guarded_open, raising=False)
    ds = open_image_dataset(tmp_path)
    assert ds[0][0].size == (32, 32)
    assert ds.report() == "skipped 1 of 2 files: 1 unreadable"


def _seed_files() -> list[bytes]:
    rng = np.random.default_rng(7)
    img = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    out = []
    for fmt in ("JPEG", "PNG"):
        buffer = io.BytesIO()
        img.save(buffer, fmt)
        out.append(buffer.getvalue())
    return out


SEEDS = _seed_files()


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        action = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "truncate":
            del data[at:]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif data:
            del data[at : at + draw(st.integers(1, 16))]
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated())
def test_fuzzed_files_never_raise_out_of_the_decoder(data):
    try:
        img = decode_image(data, max_pixels=4096)
    except ImageSkipped as skip:
        assert skip.reason in {"corrupt", "truncated", "empty", "too large"}
    else:
        assert img.mode == "RGB" and img.width * img.height <= 4096
        np.asarray(img)  # fully decoded pixels


def test_first_skip_of_each_kind_is_logged_then_only_counted(messy_folder, caplog):
    ds = open_image_dataset(messy_folder)
    with caplog.at_level("WARNING", logger="crossmae.data"):
        items = list(ds) + list(ds)  # the sequence protocol ends at IndexError
    assert len(items) == 16
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 3  # corrupt, truncated, empty: once each
    assert all("dataset.report()" in message for message in messages)


def test_empty_class_folder_keeps_its_label_and_is_noted(tmp_path, random_image, encode):
    for name in ("ant", "bee", "cow"):
        (tmp_path / name).mkdir()
    (tmp_path / "ant" / "a.png").write_bytes(encode(random_image(), "PNG"))
    (tmp_path / "cow" / "c.png").write_bytes(encode(random_image(), "PNG"))
    (tmp_path / "bee" / "readme.txt").write_text("nothing here")
    ds = open_image_dataset(tmp_path)
    assert ds.classes == ["ant", "bee", "cow"] and [ds[i][1] for i in range(2)] == [0, 2]
    assert ds.report() == ("skipped 1 of 3 files: 1 not an image; 1 empty class folder(s): bee")


def test_a_dark_16_bit_image_stays_dark_and_a_unit_float_image_is_full_range():
    """Scaled by its mode, not by its content: a 16-bit scan whose values stay below 256
    is nearly black, not stretched as if it were 8-bit; float pixels in [0, 1] span 0-255."""

    def encoded(img: Image.Image, fmt: str) -> bytes:
        buffer = io.BytesIO()
        img.save(buffer, fmt)
        return buffer.getvalue()

    dark = np.random.default_rng().integers(0, 200, (8, 8), dtype=np.uint16)
    dark_png = encoded(Image.fromarray(dark), "PNG")
    assert Image.open(io.BytesIO(dark_png)).mode.startswith("I;16")
    assert np.asarray(decode_image(dark_png, mode="L")).max() <= 1
    unit = np.random.default_rng().random((8, 8), dtype=np.float32)
    unit[0, 0] = 1.0
    out = np.asarray(decode_image(encoded(Image.fromarray(unit, mode="F"), "TIFF"), mode="L"))
    assert out[0, 0] == 255 and np.abs(out - np.rint(unit * 255)).max() <= 1


@pytest.mark.parametrize("kept", [100, 300, 500, 0.5, 0.9])
def test_a_jpeg_cut_anywhere_counts_as_truncated(kept, random_image, encode):
    """Pillow says "Truncated File Read" when the cut is in the header (its first ~620 bytes
    here: the tables) and "image file is truncated" when it is in the scan."""
    jpeg = encode(random_image(64, 64), "JPEG")
    with pytest.raises(ImageSkipped) as skipped:
        decode_image(jpeg[: kept if isinstance(kept, int) else int(len(jpeg) * kept)])
    assert skipped.value.reason == "truncated"
