"""The built-in demo set: 5,000 train + 1,000 test CIFAR-10 images shipped with the package.

The original JPEG bytes live in `crossmae/assets/cifar10_demo.npz` (see assets/ORIGIN.md and
scripts/build_demo_assets.py), so demos and tests run with no data on disk and no network.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from crossmae.data.encoded import EncodedImages
from crossmae.data.packed import Packed
from crossmae.errors import CrossMAEError

ASSET = "cifar10_demo.npz"
SPLITS = {"train": "train", "test": "test", "val": "test"}


class DemoImages(EncodedImages):
    """CIFAR-10 demo images, 32x32, labels 0-9 in the official class order."""

    def __init__(self, split: str = "train", **options) -> None:
        if split not in SPLITS:
            raise CrossMAEError(f"the built-in demo set has splits train and test, not {split!r}")
        part = SPLITS[split]
        with resources.files("crossmae").joinpath("assets", ASSET).open("rb") as f:
            arrays = np.load(f, allow_pickle=False)
            self.jpegs = Packed(arrays[f"{part}_jpeg"], arrays[f"{part}_offsets"])
            labels = arrays[f"{part}_labels"].astype(np.int64)
            classes = [str(name) for name in arrays["classes"]]
        super().__init__(labels, classes, description=f"built-in CIFAR-10 demo ({part})", **options)

    def read(self, index: int) -> bytes:
        return self.jpegs[index]
