"""Tiny labeled data sets and checkpoints for the evaluation protocols (CPU, seconds)."""

import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import crossmae

from conftest import REFERENCE_DIR


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    """Default output folders (runs/...) land in the test's folder, never in the checkout."""
    monkeypatch.chdir(tmp_path)


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def dark_and_bright(rng: np.random.Generator, n: int, size: int = 32) -> list[tuple[bytes, int]]:
    """n noise images per class: class 0 dark (0-99), class 1 bright (156-255)."""
    out = []
    for label, low in ((0, 0), (1, 156)):
        for _ in range(n):
            out.append((_png(rng.integers(low, low + 100, (size, size, 3), dtype=np.uint8)), label))
    return out


@pytest.fixture(scope="session")
def two_class_tree(tmp_path_factory) -> Path:
    """ROOT/train|val/<dark|bright>/*.png: 30 + 10 random images per class, separable."""
    root = tmp_path_factory.mktemp("two_class")
    rng = np.random.default_rng(7)
    for split, n in (("train", 30), ("val", 10)):
        for i, (data, label) in enumerate(dark_and_bright(rng, n)):
            folder = root / split / ("dark", "bright")[label]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i:03d}.png").write_bytes(data)
    return root


@pytest.fixture(scope="session")
def shard_tree(tmp_path_factory) -> Path:
    """ROOT/train/0.tar and ROOT/val/0.tar with .cls labels (shards name no classes)."""
    root = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(8)
    for split, n in (("train", 12), ("val", 4)):
        (root / split).mkdir()
        with tarfile.open(root / split / "0.tar", "w") as tar:
            for i, (data, label) in enumerate(dark_and_bright(rng, n)):
                for suffix, payload in (("png", data), ("cls", str(label).encode())):
                    info = tarfile.TarInfo(f"{i:04d}.{suffix}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return root


@pytest.fixture
def ours(tmp_path) -> Path:
    """A small CrossMAE of ours (fusion encoder, no final norm), as `crossmae.save_model` writes."""
    model = crossmae.create_model(
        "crossmae_vit_tiny_patch4_32", embed_dim=32, depth=2, num_heads=2, decoder_dim=32,
        decoder_depth=2, decoder_heads=2,
    )  # fmt: skip
    path = tmp_path / "ours.pth"
    crossmae.save_model(path, model)
    return path


@pytest.fixture
def authors(tmp_path, request) -> Path:
    """An authors'-format fixture, copied so results written beside it stay in tmp_path."""
    name = getattr(request, "param", "crossmae_wfm_input_pr025")
    path = tmp_path / f"{name}.checkpoint.pth"
    shutil.copy(REFERENCE_DIR / f"{name}.checkpoint.pth", path)
    return path
