"""What a `--data` path names, read without opening it: the built-in set, tar shards given
by a pattern, or a file or folder that must exist. Torch-free, so that settings are checked
before torch is imported."""

from __future__ import annotations

import glob
from pathlib import Path

from crossmae.errors import CrossMAEError

BUILTIN = "builtin"  # `--data builtin`, as no --data: the demo set shipped with the package


def is_builtin(path: str | Path | None) -> bool:
    """None, or "builtin" where no such folder is."""
    return path is None or (str(path) == BUILTIN and not Path(BUILTIN).exists())


def is_shard_pattern(path: str | Path) -> bool:
    """A pattern such as `shards-{000..009}.tar` or `shards-*.tar` (no such file itself)."""
    text = str(path)
    return not Path(text).expanduser().exists() and ("{" in text or glob.has_magic(text))


def check_data_path(path: str | Path | None, flag: str = "--data") -> None:
    """Raise CrossMAEError when `path` can hold no images: it does not exist, or it is a file
    that is not a .tar shard (`flag` names the setting, for paths other than --data)."""
    if is_builtin(path) or is_shard_pattern(path):
        return
    root = Path(str(path)).expanduser()
    if not root.exists():
        said = "data path" if flag == "--data" else flag
        raise CrossMAEError(f"{said} {root} does not exist")
    if root.is_file() and root.suffix.lower() != ".tar":
        raise CrossMAEError(f"{root} is a file; give an image folder or .tar shards")
