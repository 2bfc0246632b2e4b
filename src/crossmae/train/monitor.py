"""Figures a pretraining run leaves behind: the loss curve and a reconstruction grid,
drawn with `crossmae.viz` (the same figures `crossmae plot` and `crossmae visualize` make)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from crossmae.models.autoencoder import MaskedAutoencoder


def save_loss_curve(records: Sequence[dict[str, Any]], path: str | Path, title: str) -> Path:
    """Plot the logged loss and learning rate against optimizer steps (a resumed run's
    re-logged steps replace the earlier ones)."""
    from crossmae.viz.curves import curves_figure
    from crossmae.viz.figure import save_png

    return save_png(curves_figure(list(records), title), path)


@torch.no_grad()
def save_reconstruction(
    model: MaskedAutoencoder, images: torch.Tensor, path: str | Path, seed: int, title: str
) -> torch.Tensor:
    """Write a reconstruction grid (original / masked / reconstruction + visible /
    reconstruction, one row per image) and return it as a (C, H, W) tensor for TensorBoard.

    The same images and masks every time (fixed `seed`), so successive grids show progress;
    every masked patch is decoded, also for a CrossMAE trained with γ < p.
    """
    from crossmae.viz.figure import save_png
    from crossmae.viz.plots import reconstruction_figure
    from crossmae.viz.reconstruction import reconstruct, reconstruction_grid
    from crossmae.viz.trace import make_noise, trace_decoder

    was_training = model.training
    model.eval()
    try:
        images = images.float()
        noise = make_noise(images.shape[0], model.config.num_patches, seed).to(images.device)
        ratio = model.config.mask_ratio
        masking = model.mask(images.shape[0], images.device, noise, ratio, ratio)
        rec = reconstruct(trace_decoder(model, images, masking), images)
    finally:
        model.train(was_training)
    save_png(reconstruction_figure(rec, title), path)
    return reconstruction_grid(rec).cpu()
