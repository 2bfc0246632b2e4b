"""The figures of `crossmae visualize`, drawn from tensors computed elsewhere in `viz`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from crossmae.viz.attention import AttentionMass
from crossmae.viz.figure import (
    GridLayout,
    image_grid,
    label_row,
    new_figure,
    pixel_axes,
    show_image,
)
from crossmae.viz.reconstruction import Reconstruction


def reconstruction_figure(rec: Reconstruction, title: str) -> Figure:
    """One row per image: original, masked input, reconstruction + visible, reconstruction."""
    fig, axes = image_grid(GridLayout(rec.original.shape[0], 4, title=title))
    for b, row in enumerate(axes):
        show_image(row[0], rec.original[b], "original")
        show_image(row[1], rec.masked[b], "masked input")
        show_image(row[2], rec.pasted[b], f"+ visible: {rec.psnr[b]:.1f} dB")
        show_image(row[3], rec.predicted[b], "reconstruction")
    return fig


def stretch(delta: torch.Tensor) -> torch.Tensor:
    """Signed (C, H, W) pixel change -> [0, 1] image, grey = 0, symmetric contrast stretch."""
    return 0.5 + delta / (2 * delta.abs().max().clamp_min(1e-12))


def per_block_figure(
    rec: Reconstruction, cumulative: torch.Tensor, contributions: torch.Tensor, title: str
) -> Figure:
    """Rows: input, base term, then each decoder block; two columns per image.

    cumulative: (depth + 1, B, C, H, W) [0, 1] reconstructions after the base and each block;
    contributions: (depth + 1, B, C, H, W) signed pixel change of the base and each block.
    """
    depth, batch = cumulative.shape[0] - 1, cumulative.shape[1]
    layout = GridLayout(depth + 2, 2 * batch, row_labels=True, title=title)
    fig, axes = image_grid(layout)
    label_row(fig, layout, 0, "input")
    label_row(fig, layout, 1, "base: queries + biases")
    for i in range(depth):
        label_row(fig, layout, i + 2, f"decoder block {i + 1}")
    for b in range(batch):
        left, right = 2 * b, 2 * b + 1
        show_image(axes[0][left], rec.original[b], "original")
        show_image(axes[0][right], rec.masked[b], "masked input")
        for k in range(depth + 1):
            what = "base" if k == 0 else f"block {k}"
            show_image(axes[k + 1][left], stretch(contributions[k, b]), f"{what} term")
            show_image(axes[k + 1][right], cumulative[k, b], f"sum through {what}")
    return fig


def attention_figure(
    rec: Reconstruction,
    maps: torch.Tensor,
    queries: Sequence[tuple[int, int, int]],
    patch_size: int,
    title: str,
) -> Figure:
    """One row per (image, query patch): the query, then its attention in every block.

    maps: (depth, B, n_decoded, 1 + n_visible) head-averaged cross-attention (key 0 = [CLS]);
    queries: (image index, row in ids_pred, patch index) triples.
    """
    depth = maps.shape[0]
    grid_h, grid_w = (s // patch_size for s in rec.original.shape[-2:])
    fig, axes = image_grid(GridLayout(len(queries), depth + 1, title=title))
    for row, (b, q, patch) in zip(axes, queries, strict=True):
        show_image(row[0], rec.original[b], f"query: patch {patch}")
        outline(row[0], patch, grid_w, patch_size)
        for i in range(depth):
            weights = maps[i, b, q].float().cpu()
            heat = np.full(grid_h * grid_w, np.nan)
            heat[rec.ids_visible[b].cpu().numpy()] = weights[1:].numpy()
            show_image(row[i + 1], rec.masked[b], f"block {i + 1} (cls {weights[0]:.2f})")
            row[i + 1].imshow(
                heat.reshape(grid_h, grid_w),
                cmap="inferno",
                alpha=0.7,
                vmin=0,
                vmax=float(weights[1:].max()),
                interpolation="nearest",
                extent=(-0.5, grid_w * patch_size - 0.5, grid_h * patch_size - 0.5, -0.5),
            )
            outline(row[i + 1], patch, grid_w, patch_size)
    return fig


def outline(ax: Axes, patch: int, grid_w: int, patch_size: int) -> None:
    """Draw a box around patch `patch` (raster index) of an image shown in pixel coordinates."""
    top, left = divmod(patch, grid_w)
    ax.add_patch(
        Rectangle(
            (left * patch_size - 0.5, top * patch_size - 0.5),
            patch_size,
            patch_size,
            fill=False,
            edgecolor="cyan",
            linewidth=1.2,
        )
    )


def attention_mass_figure(mass: AttentionMass, title: str, uniform: float | None = None) -> Figure:
    """Stacked bars per MAE decoder block: where the mask tokens' attention goes; `uniform`
    marks the visible tokens' share under uniform attention."""
    depth = mass.to_visible.shape[0]
    width, height = mass_figure_size(depth)
    fig = new_figure(width, height, title)
    ax = pixel_axes(fig, 64, 60, width - 64 - 170, height - 60 - 48)
    blocks = np.arange(1, depth + 1)
    bottom = np.zeros(depth)
    for share, label in (
        (mass.to_visible, "visible tokens"),
        (mass.to_masked, "mask tokens"),
        (mass.to_cls, "[CLS]"),
    ):
        values = share.float().cpu().numpy()
        ax.bar(blocks, values, bottom=bottom, label=label)
        bottom += values
    if uniform is not None:
        ax.axhline(uniform, color="black", ls="--", lw=1, label="visible, if uniform")
    ax.set_xlabel("decoder block", fontsize=8)
    ax.set_ylabel("share of the mask tokens' attention", fontsize=8)
    ax.set_xticks(blocks)
    ax.set_ylim(0, 1)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return fig


def mass_figure_size(depth: int) -> tuple[int, int]:
    return max(560, 240 + 40 * depth), 400


def fusion_figure(matrix: torch.Tensor, columns: Sequence[str], title: str) -> Figure:
    """Heatmap of the fusion weights: decoder block (rows) x encoder layer (columns)."""
    depth, k = matrix.shape
    width, height = fusion_figure_size(depth, k)
    fig = new_figure(width, height, title)
    ax = pixel_axes(fig, 90, 50, width - 200, height - 110)
    values = matrix.detach().float().cpu().numpy()
    limit = float(np.abs(values).max()) or 1.0
    image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(k), list(columns), fontsize=7)
    ax.set_yticks(range(depth), [str(i + 1) for i in range(depth)], fontsize=7)
    ax.set_xlabel("encoder layer (input first)", fontsize=8)
    ax.set_ylabel("decoder block", fontsize=8)
    if k <= 16:
        for (i, j), v in np.ndenumerate(values):
            ax.text(
                j,
                i,
                f"{v:.2f}",
                ha="center",
                va="center",
                fontsize=5.5,
                color="white" if abs(v) > 0.6 * limit else "black",
            )
    bar = fig.colorbar(image, cax=pixel_axes(fig, width - 90, 50, 14, height - 110))
    bar.ax.tick_params(labelsize=7)
    return fig


def fusion_figure_size(depth: int, k: int) -> tuple[int, int]:
    return max(480, 200 + 34 * k), max(300, 110 + 26 * depth)
