"""The short result table every evaluation command prints, and its JSON twin on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crossmae.serialization import atomic_write_text, unwritten


def _cell(value: Any) -> str:
    """Accuracies as 12.34; small numbers (learning rates) with three significant digits."""
    if isinstance(value, float):
        return f"{value:.2f}" if value == 0 or abs(value) >= 0.1 else f"{value:.3g}"
    return str(value)


def result_table(title: str, results: dict[str, Any]) -> str:
    """`key  value` lines under a title, floats to two decimals; nested values (the
    per-epoch history) are left to the JSON."""
    rows = [(k, _cell(v)) for k, v in results.items() if not isinstance(v, dict | list)]
    width = max(len(k) for k, _ in rows)
    rule = "-" * max(len(title), *(width + 2 + len(v) for _, v in rows))
    return "\n".join([title, rule, *(f"{k:<{width}}  {v}" for k, v in rows), rule])


def write_results(path: str | Path, results: dict[str, Any]) -> Path:
    """Write JSON atomically, so a reader never sees half a file."""
    path = Path(path)
    try:
        atomic_write_text(json.dumps(results, indent=2) + "\n", path)
    except OSError as err:
        raise unwritten(path, err) from None
    return path


def results_beside(checkpoint: str, output_dir: str | None, kind: str) -> Path:
    """`output_dir`/<kind>.json, or beside the checkpoint as <name>.<kind>.json: commands
    that only measure a file (kNN, a classifier's accuracy) keep the answer next to it."""
    if output_dir is not None:
        return Path(output_dir) / f"{kind}.json"
    path = Path(checkpoint).resolve()  # `.` (a hub folder) has a name once resolved
    return path.with_name(f"{path.stem}.{kind}.json")
