"""Build the built-in demo set `src/crossmae/assets/cifar10_demo.npz` from CIFAR-10 JPEGs.

Takes the first 500 training and the first 100 test images of each class, in the official
CIFAR-10 order, and stores their ORIGINAL JPEG bytes (no re-encoding) with their labels.

    python scripts/build_demo_assets.py /work/shared/data/cifar-10-images-jpeg
"""

from __future__ import annotations

import argparse
import csv
import hashlib
from pathlib import Path

import numpy as np

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
PER_CLASS = {"train": 500, "test": 100}
OUTPUT = Path(__file__).resolve().parents[1] / "src" / "crossmae" / "assets" / "cifar10_demo.npz"


def collect(root: Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenated JPEG bytes, offsets (N+1) and labels, in official order."""
    blobs, labels = [], []
    with open(root / "official_order.csv", newline="") as f:
        for row in csv.DictReader(f):
            position = int(Path(row["path"]).stem)  # the image's index within its class
            if row["split"] == split and position < PER_CLASS[split]:
                blobs.append((root / row["path"]).read_bytes())
                labels.append(int(row["label"]))
    offsets = np.cumsum([0] + [len(b) for b in blobs], dtype=np.int64)
    data = np.frombuffer(b"".join(blobs), dtype=np.uint8)
    return data, offsets, np.asarray(labels, dtype=np.int16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the cifar-10-images-jpeg folder")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    arrays: dict[str, np.ndarray] = {"classes": np.asarray(CLASSES)}
    for split in PER_CLASS:
        data, offsets, labels = collect(args.root, split)
        counts = np.bincount(labels, minlength=len(CLASSES))
        assert (counts == PER_CLASS[split]).all(), f"{split}: per-class counts {counts}"
        arrays |= {f"{split}_jpeg": data, f"{split}_offsets": offsets, f"{split}_labels": labels}
    np.savez(args.output, **arrays)  # uncompressed: JPEG bytes do not compress further
    digest = hashlib.sha256(args.output.read_bytes()).hexdigest()
    print(f"wrote {args.output} ({args.output.stat().st_size:,} bytes, sha256 {digest})")


if __name__ == "__main__":
    main()
