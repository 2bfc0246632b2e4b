"""scripts/pack_jpeg_folder.py: packed and unpacked, every file comes back byte for byte."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "pack_jpeg_folder.py"
spec = importlib.util.spec_from_file_location("pack_jpeg_folder", SCRIPT)
packer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(packer)


def write_jpegs(root: Path) -> dict[str, bytes]:
    """Random JPEGs in split/class folders, at two qualities (so two distinct headers)."""
    rng = np.random.default_rng(0)
    files = {}
    for i in range(12):
        path = root / ("train" if i < 8 else "test") / f"class{i % 3}" / f"{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buffer, "JPEG", quality=75 if i % 4 else 90)
        path.write_bytes(buffer.getvalue())
        files[str(path.relative_to(root))] = buffer.getvalue()
    (root / "train" / "notes.txt").write_text("not an image: left out")
    return files


def test_round_trip_is_byte_identical_and_headers_are_stored_once(tmp_path, capsys):
    files = write_jpegs(tmp_path / "in")
    packed_path = tmp_path / "local" / "p.npz"  # its folder made on the way, as in the README
    assert packer.main(["pack", str(tmp_path / "in"), str(packed_path)]) == 0
    notes = tmp_path / "in" / "train" / "notes.txt"
    note = f"left out 1 file(s) that are not .jpg / .jpeg, such as {notes}"
    assert note in capsys.readouterr().out
    with np.load(packed_path) as packed:
        assert len(packed["headers_offsets"]) == 3  # two distinct headers
        assert packed["bodies"].size < sum(len(b) for b in files.values()) - 10 * 600
    assert packer.main(["unpack", str(packed_path), str(tmp_path / "out")]) == 0
    back = {str(p.relative_to(tmp_path / "out")): p.read_bytes()
            for p in (tmp_path / "out").rglob("*") if p.is_file()}  # fmt: skip
    assert back == files


def test_a_file_without_a_scan_is_refused():
    with pytest.raises(ValueError, match="no start-of-scan marker"):
        packer.split_jpeg(b"\xff\xd8 not really a jpeg")


def test_bad_input_is_one_sentence_and_exit_2(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    assert packer.main(["pack", str(tmp_path / "in"), str(tmp_path / "p.npz")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"pack: {tmp_path / 'in' / 'broken.jpg'} is not a whole JPEG (no start-of-scan marker)"
    )
    (tmp_path / "not.npz").write_text("plain text")
    assert packer.main(["unpack", str(tmp_path / "not.npz"), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"unpack: {tmp_path / 'not.npz'} is not an archive made by `pack`"
    )
    write_jpegs(tmp_path / "good")
    (tmp_path / "a_file").write_text("x")
    under_a_file = tmp_path / "a_file" / "p.npz"
    assert packer.main(["pack", str(tmp_path / "good"), str(under_a_file)]) == 2
    assert capsys.readouterr().err.startswith(f"pack: cannot write {tmp_path / 'a_file'}")
    assert packer.main(["pack", str(tmp_path / "good"), str(tmp_path / "good.npz")]) == 0
    assert packer.main(["unpack", str(tmp_path / "good.npz"), str(tmp_path / "a_file")]) == 2
    assert capsys.readouterr().err.startswith(f"unpack: cannot write {tmp_path / 'a_file'}")
    np.savez(tmp_path / "foreign.npz", weights=np.ones(3))
    assert packer.main(["unpack", str(tmp_path / "foreign.npz"), str(tmp_path / "out")]) == 2
    assert "is not an archive made by `pack`" in capsys.readouterr().err


@pytest.mark.parametrize("absolute", [False, True])
def test_unpack_refuses_paths_outside_the_target(tmp_path, capsys, absolute):
    write_jpegs(tmp_path / "in")
    packer.main(["pack", str(tmp_path / "in"), str(tmp_path / "p.npz")])
    with np.load(tmp_path / "p.npz") as packed:
        arrays = dict(packed)
    path = str(tmp_path / "escape.jpg") if absolute else "../escape.jpg"
    arrays["paths"] = np.array([*arrays["paths"][:-1], path])  # the last: nothing written first
    np.savez(tmp_path / "evil.npz", **arrays)
    assert packer.main(["unpack", str(tmp_path / "evil.npz"), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"unpack: {path} would land outside {tmp_path / 'out'}"
    )
    assert not (tmp_path / "escape.jpg").exists() and not (tmp_path / "out").exists()


def test_linked_class_folders_are_packed_and_the_archive_must_end_in_npz(tmp_path, capsys):
    files = write_jpegs(tmp_path / "real")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "train").symlink_to(tmp_path / "real" / "train")  # a linked split
    assert packer.main(["pack", str(tmp_path / "in"), str(tmp_path / "p.npz")]) == 0
    with np.load(tmp_path / "p.npz") as packed:
        assert len(packed["paths"]) == sum(name.startswith("train") for name in files)
    assert packer.main(["pack", str(tmp_path / "in"), str(tmp_path / "noext")]) == 2
    assert "must end in .npz" in capsys.readouterr().err
