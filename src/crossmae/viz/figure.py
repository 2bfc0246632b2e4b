"""Figure layout with exact pixel sizes: panels placed in pixels, saved without cropping.

Uses matplotlib's object API with the Agg canvas (no pyplot, no display, no global state).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from crossmae.errors import CrossMAEError

DPI = 100
PANEL_PX = 128  # side of one image panel
LABEL_PX = 18  # panel title strip above each image
TITLE_LINE_PX = 14  # one line of the 8-pt figure title
ROW_LABEL_PX = 112  # optional row labels on the left


def title_lines(title: str, width: int) -> list[str]:
    """The figure title wrapped to the figure's width (about 6.4 px per 8-pt character)."""
    return textwrap.wrap(title, max(40, int(width / 6.4)))


def header_px(title: str, width: int) -> int:
    """Height of the strip above the panels that holds the wrapped title."""
    return 10 + TITLE_LINE_PX * max(1, len(title_lines(title, width)))


@dataclass(frozen=True)
class GridLayout:
    rows: int
    cols: int
    row_labels: bool = False
    title: str = ""

    @property
    def width(self) -> int:
        return self.cols * PANEL_PX + (ROW_LABEL_PX if self.row_labels else 0)

    @property
    def header(self) -> int:
        return header_px(self.title, self.width)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the figure in pixels; the title strip grows with the title."""
        return self.width, self.header + self.rows * (PANEL_PX + LABEL_PX)


def new_figure(width: int, height: int, title: str = "") -> Figure:
    """A blank Agg figure of exactly `width` x `height` pixels."""
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    if title:
        text = "\n".join(title_lines(title, width))
        fig.suptitle(text, fontsize=8, y=1 - 4 / height, va="top", linespacing=1.25)
    return fig


def pixel_axes(fig: Figure, left: float, top: float, width: float, height: float) -> Axes:
    """Axes at a pixel rectangle measured from the figure's top-left corner."""
    fw, fh = fig.bbox.width, fig.bbox.height
    return fig.add_axes((left / fw, 1 - (top + height) / fh, width / fw, height / fh))


def image_grid(layout: GridLayout) -> tuple[Figure, list[list[Axes]]]:
    """Figure with `rows` x `cols` square image panels, each with room for a short title."""
    fig = new_figure(*layout.size, layout.title)
    left0 = ROW_LABEL_PX if layout.row_labels else 0
    axes = []
    for r in range(layout.rows):
        top = layout.header + r * (PANEL_PX + LABEL_PX) + LABEL_PX
        lefts = (left0 + c * PANEL_PX + 2 for c in range(layout.cols))
        axes.append([pixel_axes(fig, left, top, PANEL_PX - 4, PANEL_PX - 4) for left in lefts])
    for ax in (a for row in axes for a in row):
        ax.set_axis_off()
    return fig, axes


def label_row(fig: Figure, layout: GridLayout, row: int, text: str) -> None:
    """Write `text` in the row-label margin of an `image_grid` made with `row_labels`."""
    y = layout.header + row * (PANEL_PX + LABEL_PX) + LABEL_PX + PANEL_PX / 2
    fig.text(
        4 / fig.bbox.width,
        1 - y / fig.bbox.height,
        textwrap.fill(text, 18),
        fontsize=7,
        va="center",
        ha="left",
    )


def show_image(ax: Axes, img: torch.Tensor, title: str = "") -> None:
    """Draw a (C, H, W) [0, 1] image; grey images get a grey colour map."""
    arr = img.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
    if arr.shape[-1] == 1:
        ax.imshow(arr[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(arr, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=7, pad=2)


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write the figure as a PNG of exactly its pixel size (parent folders are created)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise CrossMAEError(f"the output must be a .png file, got {path}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI, format="png")
    except OSError as err:
        raise CrossMAEError(f"cannot write {path}: {err.strerror or err}") from None
    return path
