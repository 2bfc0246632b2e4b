"""Tiny models and image folders, so that whole training runs take seconds on a CPU."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# A 16-px CrossMAE with two blocks each side: 16 patches, 4 visible, 4 decoded.
TINY_MODEL = [
    "--model", "crossmae_vit_tiny_patch4_32",
    "--model-overrides", "img_size=16", "embed_dim=32", "num_heads=2", "depth=2",
    "decoder_dim=32", "decoder_depth=2", "decoder_heads=2",
]  # fmt: skip
QUIET = ["--device", "cpu", "--no-tensorboard", "--num-workers", "0", "--recon-every-epochs", "0"]


@pytest.fixture
def tiny() -> list[str]:
    """Flags for a tiny model on the CPU, without the slower extras (TensorBoard, figures)."""
    return [*TINY_MODEL, *QUIET]


@pytest.fixture
def quiet() -> list[str]:
    return list(QUIET)


def _write_images(folder: Path, count: int, size: int = 20, seed: int = 0) -> None:
    """`count` random RGB PNGs in two class folders (fresh noise, never constant images)."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        cls = folder / ("a" if i % 2 else "b")
        cls.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(cls / f"{i:03d}.png")


@pytest.fixture
def write_images() -> Callable[..., None]:
    return _write_images


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """PATH/train/<class>/*.png with 64 random 20x20 images."""
    root = tmp_path / "images"
    _write_images(root / "train", 64)
    return root


@pytest.fixture
def tar_shards(tmp_path: Path) -> str:
    """PATH/shards/part-{000..002}.tar, WebDataset-style: 24 x (NNNN.png + NNNN.cls) each,
    as the brace pattern `--data` takes."""
    folder, shards, per_shard = tmp_path / "shards", 3, 24
    rng = np.random.default_rng(0)
    folder.mkdir()
    for s in range(shards):
        with tarfile.open(folder / f"part-{s:03d}.tar", "w") as tar:
            for i in range(per_shard):
                png = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(png, "PNG")
                for name, data in ((f"{s}_{i:04d}.png", png.getvalue()),
                                   (f"{s}_{i:04d}.cls", str(i % 2).encode())):  # fmt: skip
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return str(folder / f"part-{{000..{shards - 1:03d}}}.tar")


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "crossmae", *args]


@pytest.fixture
def crossmae_env() -> dict[str, str]:
    """One thread per process: reproducible CPU sums, and no oversubscription."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture
def run_crossmae(crossmae_env) -> Callable[..., subprocess.CompletedProcess]:
    """`python -m crossmae ...` in a fresh process (for signals, torchrun, exit codes)."""

    def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run(_command(*args), capture_output=True, text=True,
                              timeout=timeout, env=crossmae_env)  # fmt: skip

    return run


@pytest.fixture
def start_crossmae(crossmae_env) -> Callable[..., subprocess.Popen]:
    """Start `python -m crossmae ...` without waiting (to signal it)."""

    def start(*args: str) -> subprocess.Popen:
        return subprocess.Popen(_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=crossmae_env)  # fmt: skip

    return start
