"""Reconstructions in pixel space and their masked-patch PSNR."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from crossmae.models.autoencoder import MaskedAutoencoder
from crossmae.models.masking import gather_tokens
from crossmae.viz.images import denormalize
from crossmae.viz.trace import DecoderTrace


@dataclass
class Reconstruction:
    """[0, 1] images of one batch; `ids_pred` are the masked patches that were predicted."""

    original: torch.Tensor  # (B, C, H, W)
    masked: torch.Tensor  # visible patches, grey elsewhere
    pasted: torch.Tensor  # predictions with the visible patches pasted back
    predicted: torch.Tensor  # predictions only, grey elsewhere
    ids_pred: torch.Tensor  # (B, n)
    ids_visible: torch.Tensor  # (B, n_visible)
    psnr: torch.Tensor  # (B,) on the predicted patches, in dB (inf when exact)


def patch_stats(patches: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-patch mean and std as `norm_pix_loss` computes them (unbiased variance + eps)."""
    return patches.mean(dim=-1, keepdim=True), (patches.var(dim=-1, keepdim=True) + eps).sqrt()


def denormalize_prediction(
    pred: torch.Tensor, target: torch.Tensor, norm_pix_loss: bool
) -> torch.Tensor:
    """Predictions (B, n, P) back to the model's input space.

    A `norm_pix_loss` model predicts each patch standardised by its own mean and unbiased
    variance, so it is mapped back with those statistics of the ground-truth patch `target`.
    """
    if not norm_pix_loss:
        return pred
    mean, std = patch_stats(target)
    return pred * std + mean


def masked_psnr(pred: torch.Tensor, target: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(B,) PSNR in dB of [0, 1] patches (B, L, P) at `ids` (B, n); inf for a perfect match."""
    mse = (gather_tokens(pred, ids) - gather_tokens(target, ids)).pow(2).flatten(1).mean(dim=1)
    return torch.where(mse > 0, -10 * torch.log10(mse), torch.full_like(mse, math.inf))


def paste(base: torch.Tensor, rows: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Copy of patches `base` (B, L, P) with `rows` (B, n, P) written at `ids` (B, n)."""
    return base.scatter(1, ids.unsqueeze(-1).expand_as(rows), rows)


def patch_canvas(model: MaskedAutoencoder, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground-truth patches (B, L, P) and an all-grey canvas in model input space."""
    target = model.patchify(imgs)
    grey = model.patchify(imgs.new_zeros(imgs.shape))  # input space 0 = the dataset mean colour
    return target, grey


def prediction_images(
    model: MaskedAutoencoder,
    imgs: torch.Tensor,
    rows: torch.Tensor,
    ids: torch.Tensor,
    visible: torch.Tensor | None,
) -> torch.Tensor:
    """[0, 1] images of predicted `rows` at `ids`; the patches at `visible` pasted from `imgs`."""
    target, grey = patch_canvas(model, imgs)
    canvas = grey if visible is None else paste(grey, gather_tokens(target, visible), visible)
    pixels = denormalize_prediction(rows, gather_tokens(target, ids), model.config.norm_pix_loss)
    return denormalize(model.unpatchify(paste(canvas, pixels, ids)))


@torch.no_grad()
def reconstruct(trace: DecoderTrace, imgs: torch.Tensor) -> Reconstruction:
    """Pixel-space views of a traced forward pass and its PSNR on the predicted patches."""
    model = trace.model
    ids, visible = trace.ids_pred, trace.masking.ids_visible
    rows = trace.prediction()
    original = denormalize(imgs)
    pasted = prediction_images(model, imgs, rows, ids, visible)
    target, grey = patch_canvas(model, imgs)
    masked = denormalize(model.unpatchify(paste(grey, gather_tokens(target, visible), visible)))
    psnr = masked_psnr(model.patchify(pasted), model.patchify(original), ids)
    return Reconstruction(
        original=original,
        masked=masked,
        pasted=pasted,
        predicted=prediction_images(model, imgs, rows, ids, None),
        ids_pred=ids,
        ids_visible=visible,
        psnr=psnr,
    )


@torch.no_grad()
def zero_prediction_psnr(trace: DecoderTrace, imgs: torch.Tensor) -> torch.Tensor:
    """(B,) PSNR of predicting 0 for every decoded patch, the floor to read a PSNR against.

    For a `norm_pix_loss` model that is each patch's true mean value (its predictions are
    de-normalised with the true patch mean and std); otherwise the data set's mean colour.
    """
    model, ids = trace.model, trace.ids_pred
    zeros = imgs.new_zeros(*ids.shape, model.patchify(imgs).shape[-1])
    filled = prediction_images(model, imgs, zeros, ids, trace.masking.ids_visible)
    return masked_psnr(model.patchify(filled), model.patchify(denormalize(imgs)), ids)


def reconstruction_grid(rec: Reconstruction, padding: int = 1) -> torch.Tensor:
    """(C, H', W') image: one row per image (original, masked, pasted, predicted), e.g. for
    TensorBoard's `add_image` during pretraining."""
    from torchvision.utils import make_grid

    views = torch.stack([rec.original, rec.masked, rec.pasted, rec.predicted], dim=1)
    return make_grid(views.flatten(0, 1), nrow=4, padding=padding, pad_value=1.0)
