"""Watching a run: JSON lines, TensorBoard scalars and a progress display, on rank 0 only.

`log.jsonl` holds one JSON object per logged step (and one per epoch), so curves can be
re-plotted without TensorBoard. On a terminal a tqdm bar shows progress; elsewhere (CI, a
cluster log file) each logged step becomes one plain line.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from crossmae.errors import CrossMAEError

LOG_NAME = "log.jsonl"


class RunLogger:
    """Writes metrics of one run; every method is a no-op on ranks other than 0."""

    def __init__(
        self,
        output_dir: str | Path,
        *,
        enabled: bool = True,
        total_steps: int = 0,
        initial_step: int = 0,
        tensorboard: bool = True,
        progress_bar: bool | None = None,
    ) -> None:
        self.enabled = enabled
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / LOG_NAME
        self._tb = None
        self._bar = None
        if not enabled:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        if tensorboard:
            self._tb = _summary_writer(self.output_dir)
        if progress_bar is None:
            progress_bar = sys.stdout.isatty()
        if progress_bar:
            self._bar = tqdm(
                total=total_steps, initial=initial_step, unit="step", dynamic_ncols=True
            )

    def log(self, record: dict[str, Any], step: int, line: str | None = None) -> None:
        """Append `record` to log.jsonl, its numbers to TensorBoard, and show progress."""
        if not self.enabled:
            return
        record = {**record, "step": step, "time": round(time.time(), 3)}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "time"):
                    self._tb.add_scalar(key, value, step)
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            if line is not None:
                self._bar.set_postfix_str(line, refresh=True)
        elif line is not None:
            print(line, flush=True)

    def image(self, tag: str, image: Any, step: int) -> None:
        """A (C, H, W) [0, 1] image in TensorBoard (e.g. the reconstruction grid)."""
        if self.enabled and self._tb is not None:
            self._tb.add_image(tag, image, step)

    def message(self, text: str) -> None:
        """A line for the user that does not break the progress bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        self._file.close()


def _summary_writer(output_dir: Path) -> Any:
    """A TensorBoard writer, or None when tensorboard is not installed (it is optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(output_dir))


def peak_host_memory_gib() -> float | None:
    """This process's peak resident memory (VmHWM), or None off Linux.

    Read from /proc rather than `getrusage`, whose peak survives `exec` and so would
    report the memory of whatever process launched this one."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20  # the figure is in KiB
    return None


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a log.jsonl (a torn last line, from a killed run, is ignored)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CrossMAEError(f"{path} is not a log.jsonl (it is not text)") from None
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
