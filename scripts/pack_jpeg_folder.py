"""Pack a folder of JPEGs into one small .npz, storing each distinct JPEG header only once.

CIFAR-10 as 32-px JPEGs is 920 bytes a file, of which 623 are a header (quantisation and
Huffman tables) that all 60,000 files share: packed, the set is 18 MB instead of 55 MB,
small enough to travel with the working tree to a remote GPU machine. Unpacking writes
the same files back, byte for byte.

    python scripts/pack_jpeg_folder.py pack ../shared/data/cifar-10-images-jpeg local/cifar10.npz
    python scripts/pack_jpeg_folder.py unpack local/cifar10.npz /tmp/cifar-10
"""

from __future__ import annotations

import argparse
import os
import sys
import zipfile
from pathlib import Path

import numpy as np

SOS = b"\xff\xda"  # start of scan: the entropy-coded data follows this segment
SUFFIXES = (".jpg", ".jpeg")


class PackError(Exception):
    """Bad input, said in one sentence."""


def split_jpeg(data: bytes) -> tuple[bytes, bytes]:
    """(header up to and including the start-of-scan segment, the rest)."""
    start = data.find(SOS)
    if start < 0 or len(data) < start + 4:
        raise ValueError("no start-of-scan marker")
    end = start + 2 + int.from_bytes(data[start + 2 : start + 4], "big")
    return data[:end], data[end:]


def pack(folder: Path, output: Path) -> tuple[int, list[Path]]:
    """Pack every .jpg / .jpeg under `folder`; returns their count and the files left out."""
    if output.suffix != ".npz":
        raise PackError(f"{output} must end in .npz (numpy would add it, and unpack not find it)")
    found = sorted(_files_under(folder))
    files = [p for p in found if p.suffix.lower() in SUFFIXES]
    if not files:
        raise PackError(f"no JPEG files under {folder}")
    headers: dict[bytes, int] = {}
    which, bodies = [], []
    for path in files:
        try:
            head, body = split_jpeg(path.read_bytes())
        except ValueError as err:
            raise PackError(f"{path} is not a whole JPEG ({err})") from None
        which.append(headers.setdefault(head, len(headers)))
        bodies.append(body)
    output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        output,
        paths=np.array([str(p.relative_to(folder)) for p in files]),
        header_index=np.array(which, dtype=np.int32),
        **_flat("headers", list(headers)),
        **_flat("bodies", bodies),
    )
    return len(files), [p for p in found if p.suffix.lower() not in SUFFIXES]


def _files_under(folder: Path) -> list[Path]:
    """Every file under `folder`, through linked folders too (as the image-folder reader
    goes), each real folder once."""
    seen, out = set(), []
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs.clear()
            continue
        seen.add(real)
        out += [Path(root) / n for n in names if (Path(root) / n).is_file()]
    return out


def _flat(name: str, items: list[bytes]) -> dict[str, np.ndarray]:
    """Byte strings back to back, and where each starts (no pickled objects in the file)."""
    return {
        name: np.frombuffer(b"".join(items), dtype=np.uint8),
        f"{name}_offsets": np.cumsum([0] + [len(item) for item in items], dtype=np.int64),
    }


def _item(packed: dict[str, np.ndarray], name: str, i: int) -> bytes:
    start, end = packed[f"{name}_offsets"][i : i + 2]
    return packed[name][start:end].tobytes()


def unpack(archive: Path, folder: Path) -> int:
    try:
        with np.load(archive) as archived:
            packed = dict(archived)
        relatives = [Path(str(p)) for p in packed["paths"]]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        raise PackError(f"{archive} is not an archive made by `pack`") from None
    for relative in relatives:  # all checked before anything is written
        if relative.is_absolute() or ".." in relative.parts:
            raise PackError(f"{relative} would land outside {folder}")
    for i, relative in enumerate(relatives):
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        head = _item(packed, "headers", int(packed["header_index"][i]))
        target.write_bytes(head + _item(packed, "bodies", i))
    return len(relatives)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["pack", "unpack"])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    if not args.source.exists():
        print(f"{args.action}: {args.source} does not exist", file=sys.stderr)
        return 2
    left_out: list[Path] = []
    try:
        if args.action == "pack":
            count, left_out = pack(args.source, args.target)
        else:
            count = unpack(args.source, args.target)
    except PackError as err:
        print(f"{args.action}: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # an output path under a file, a folder given as the archive, ...
        where = err.filename or args.target
        print(f"{args.action}: cannot write {where}: {err.strerror or err}", file=sys.stderr)
        return 2
    print(f"{args.action}ed {count} files: {args.source} -> {args.target}")
    if left_out:
        print(f"left out {len(left_out)} file(s) that are not .jpg / .jpeg, such as {left_out[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
