"""Reading checkpoints without ever running code from them, and strict, explained loading."""

from __future__ import annotations

import argparse
import os
import pickle
import re
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from crossmae.errors import CrossMAEError

# The only non-tensor object the authors' checkpoints hold (their `args`).
SAFE_GLOBALS = [argparse.Namespace]
COPY_CHUNK_BYTES = 16 * 2**20


def safe_torch_load(path: str | Path, mmap: bool = False) -> Any:
    """`torch.load(weights_only=True)` allowing only argparse.Namespace; clear errors otherwise.
    `mmap` maps the tensors instead of reading them (for a look at a file's small entries)."""
    path = Path(path)
    if not path.is_file():
        raise CrossMAEError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS), warnings.catch_warnings():
            # a plain pickle of a newer protocol is read (or refused) all the same; torch's
            # warning about it would only bury our one sentence
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found is None:
            raise CrossMAEError(f"{path} is not a PyTorch checkpoint (unreadable pickle)") from None
        raise CrossMAEError(
            f"refused to load {path}: it asks to import {found.group(1)}, which could run code; "
            "a checkpoint may hold only tensors, plain containers and argparse.Namespace"
        ) from None
    except Exception as err:  # a garbled pickle can raise almost anything (KeyError, ...)
        detail = str(err).splitlines()[0].split(". ")[0] if str(err) else ""
        said = f": {detail}" if re.search("[A-Za-z]{3}", detail) else ""  # not a bare '101'
        raise CrossMAEError(
            f"{path} is not a readable PyTorch checkpoint (corrupt or truncated?){said}"
        ) from None


def check_tensor_dict(state_dict: Any, what: str) -> None:
    """A state dict read from a file maps names to tensors; anything else is one sentence."""
    if not isinstance(state_dict, dict):
        raise CrossMAEError(f"{what} holds a {type(state_dict).__name__}, not a state dict")
    for name, value in state_dict.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise CrossMAEError(
                f"{what} is not a state dict: its entry {name!r} holds "
                f"{type(value).__name__}, not a tensor"
            )


def check_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor], what: str) -> None:
    """Raise CrossMAEError naming the first missing, unexpected or mis-shaped parameter."""
    check_tensor_dict(state_dict, what)
    expected = model.state_dict()
    for name, tensor in expected.items():
        if name not in state_dict:
            raise CrossMAEError(f"{what} has no parameter {name!r} that the model needs")
        if tuple(state_dict[name].shape) != tuple(tensor.shape):
            raise CrossMAEError(
                f"{what} does not fit the model: {name!r} has shape "
                f"{tuple(state_dict[name].shape)} in the checkpoint and {tuple(tensor.shape)} "
                "in the model"
            )
    extra = sorted(set(state_dict) - set(expected))
    if extra:
        raise CrossMAEError(f"{what} has a parameter {extra[0]!r} that the model does not have")


def load_state_dict_strict(
    model: nn.Module, state_dict: dict[str, torch.Tensor], what: str
) -> None:
    check_state_dict(model, state_dict, what)
    model.load_state_dict(state_dict, strict=True)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """Write to a temporary file, fsync, then rename: a crash never leaves a torn file."""
    with _replaced_atomically(Path(path)) as tmp:
        _write_durably(tmp, lambda f: torch.save(obj, f))


def unwritten(path: str | Path, err: OSError) -> CrossMAEError:
    """An atomic write that failed (a full disk, a read-only mount), as one sentence that
    says whether the file's previous version is still there."""
    kept = "; its previous version is intact" if Path(path).is_file() else ""
    return CrossMAEError(f"cannot write {path}: {err.strerror or err}{kept}")


def atomic_write_text(text: str, path: str | Path) -> None:
    """`atomic_torch_save` for text (result JSON): a reader never sees half a file."""
    with _replaced_atomically(Path(path)) as tmp:
        _write_durably(tmp, lambda f: f.write(text.encode()))


def atomic_save_safetensors(
    tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str]
) -> None:
    """safetensors written as `atomic_torch_save` writes; an unwritable path is one sentence."""
    from safetensors.torch import save

    path = Path(path)
    try:
        with _replaced_atomically(path) as tmp:
            _write_durably(tmp, lambda f: f.write(save(tensors, metadata=metadata)))
    except OSError as err:
        raise unwritten(path, err) from None


def atomic_link_or_copy(source: str | Path, path: str | Path) -> None:
    """Give `source` a second name as atomically as `atomic_torch_save` writes: a hard link
    where the file system has them (nothing is written again; every writer here replaces
    files by rename, never in place, so the two names cannot drift), a byte copy elsewhere."""
    with _replaced_atomically(Path(path)) as tmp:
        try:
            os.link(source, tmp)
        except OSError:  # no hard links here (some network and FUSE mounts)
            with open(source, "rb") as src:
                _write_durably(tmp, lambda f: shutil.copyfileobj(src, f, COPY_CHUNK_BYTES))


@contextmanager
def _replaced_atomically(path: Path) -> Iterator[Path]:
    """Yield a temporary name beside `path` to fill; then rename it over `path` and make the
    rename durable, or remove it if anything failed, so no half-made file is ever left."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _write_durably(path: Path, write: Callable[[BinaryIO], None]) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable: a crash right after it cannot bring back the old name."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
