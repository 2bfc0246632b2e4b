import io
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from crossmae.data.builtin import DemoImages


def _encode(img: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20250612)


@pytest.fixture
def encode() -> Callable[..., bytes]:
    """encode(img, "PNG", **options) -> the file's bytes."""
    return _encode


@pytest.fixture
def random_image(rng) -> Callable[..., Image.Image]:
    """random_image(height, width, mode="RGB") with uniformly random pixels."""

    def make(height: int = 32, width: int = 32, mode: str = "RGB") -> Image.Image:
        chans = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
        pixels = rng.integers(0, 256, (height, width, chans), dtype=np.uint8)
        return Image.fromarray(pixels.squeeze(-1) if chans == 1 else pixels, mode)

    return make


@pytest.fixture(scope="session")
def real_jpegs() -> list[tuple[bytes, int]]:
    """Real CIFAR-10 JPEG files (bytes, label) from the built-in demo set, 20 per class."""
    demo = DemoImages("test")
    taken: Counter[int] = Counter()
    files = []
    for i, label in enumerate(demo.labels.tolist()):
        if taken[label] < 20:
            taken[label] += 1
            files.append((demo.read(i), label))
    return files
