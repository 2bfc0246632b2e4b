"""Training curves from a run directory's log.jsonl: loss, and the learning rate below it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter

from crossmae.errors import CrossMAEError
from crossmae.train.logging import LOG_NAME, read_log
from crossmae.viz.figure import new_figure, pixel_axes, save_png

CURVE_SIZE = (800, 560)  # figure size in pixels


def step_series(records: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of records holding a number under `key`; a resumed run's re-logged
    steps replace the earlier ones."""
    by_step = {}
    for r in records:
        value, step = r.get(key), r.get("step")
        if isinstance(value, (int, float)) and isinstance(step, (int, float)):
            by_step[step] = float(value)
    steps = np.array(sorted(by_step), dtype=float)
    return steps, np.array([by_step[s] for s in steps], dtype=float)


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Centred mean over `window` points (fewer at the ends)."""
    kernel = np.ones(window)
    counts = np.convolve(np.ones_like(values), kernel, mode="same")
    return np.convolve(values, kernel, mode="same") / counts


def curves_figure(records: list[dict[str, Any]], title: str) -> Figure:
    steps, loss = step_series(records, "loss")
    if len(steps) == 0:  # fine-tuning and the linear probe log theirs as train_loss
        steps, loss = step_series(records, "train_loss")
    if len(steps) == 0:
        raise CrossMAEError("the log has no records with a 'step' and a 'loss' or 'train_loss'")
    lr_steps, lr = step_series(records, "lr")
    width, height = CURVE_SIZE
    fig = new_figure(width, height, title)
    split = 330 if len(lr) else height - 50
    ax = pixel_axes(fig, 80, 40, width - 110, split - 40 - 10)
    ax.plot(steps, loss, lw=0.8, alpha=0.5, label="loss")
    if len(loss) >= 50:
        ax.plot(steps, running_mean(loss, len(loss) // 25), lw=1.6, label="running mean")
    if loss.min() > 0 and loss.max() / loss.min() > 3:  # an early spike would flatten the rest
        ax.set_yscale("log")
        for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
            axis(FormatStrFormatter("%g"))
    ax.set_ylabel("training loss", fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax.tick_params(which="both", labelsize=7)
    if len(lr):
        ax.tick_params(labelbottom=False)
        ax_lr = pixel_axes(fig, 80, split + 30, width - 110, height - split - 30 - 50)
        ax_lr.plot(lr_steps, lr, color="tab:green", lw=1.2)
        ax_lr.set_ylabel("learning rate", fontsize=8)
        ax_lr.set_xlim(ax.get_xlim())
        ax_lr.grid(alpha=0.3)
        ax_lr.tick_params(labelsize=7)
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        ax_lr.yaxis.get_offset_text().set_fontsize(7)
        ax_lr.set_xlabel("step", fontsize=8)
    else:
        ax.set_xlabel("step", fontsize=8)
    return fig


def plot_training_log(run: str | Path, output: str | Path | None = None) -> Path:
    """Plot RUN/log.jsonl (or a log file given directly) to `output` (default RUN/loss.png)."""
    run = Path(run)
    log = run if run.is_file() else run / LOG_NAME
    if not log.is_file():
        raise CrossMAEError(f"no {LOG_NAME} in {run}; is it a pretraining output directory?")
    records = read_log(log)
    output = Path(output) if output else log.parent / "loss.png"
    title = f"{log.parent.name}: training loss and learning rate"
    return save_png(curves_figure(records, title), output)
