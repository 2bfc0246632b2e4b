"""The reconstruction split into one additive term per decoder block (paper Fig. 5).

The decoder output is `head(LN(x_0 + Δ_1 + ... + Δ_N))`, Δ_i being block i's residual
update. With the LayerNorm statistics (each token's mean and std) frozen at the final state,
LN is affine, so the head output is a sum: a base term (the input queries, LN bias and head
bias) plus `W_head (γ ⊙ (Δ_i - mean(Δ_i)) / σ)` per block. The terms add up to the
reconstruction exactly (up to float rounding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from crossmae.models.masking import gather_tokens
from crossmae.viz.images import pixel_stats
from crossmae.viz.reconstruction import paste, patch_stats, prediction_images
from crossmae.viz.trace import DecoderTrace


@dataclass
class BlockTerms:
    """Prediction rows (B, n, P) for `ids_pred`, decomposed per decoder block."""

    base: torch.Tensor  # (B, n, P): input tokens + LayerNorm bias + head bias
    terms: torch.Tensor  # (depth, B, n, P): block i's residual update through the head

    def cumulative(self) -> torch.Tensor:
        """(depth + 1, B, n, P): base, then the reconstruction after each block."""
        return torch.cat([self.base[None], self.base + self.terms.cumsum(dim=0)])

    @property
    def reconstruction(self) -> torch.Tensor:
        return self.base + self.terms.sum(dim=0)


@torch.no_grad()
def block_terms(trace: DecoderTrace) -> BlockTerms:
    """Decompose the traced prediction into per-block terms that sum to it."""
    decoder = trace.model.decoder
    norm, head = decoder.norm, decoder.pred
    final = trace.states[-1]
    sigma = (final.var(dim=-1, unbiased=False, keepdim=True) + norm.eps).sqrt()

    def scaled(x: torch.Tensor) -> torch.Tensor:
        """The LayerNorm's linear part with the final state's statistics."""
        return norm.weight * (x - x.mean(dim=-1, keepdim=True)) / sigma

    deltas = torch.stack(trace.states).diff(dim=0)
    base = trace.pred_rows(head(scaled(trace.states[0]) + norm.bias))
    terms = trace.pred_rows(F.linear(scaled(deltas), head.weight))
    return BlockTerms(base, terms)


@torch.no_grad()
def term_pixels(trace: DecoderTrace, imgs: torch.Tensor, terms: torch.Tensor) -> torch.Tensor:
    """(K, B, C, H, W) the signed change in input-space pixels that each term (K, B, n, P) makes.

    Scaled like a prediction (by the ground-truth patch std for `norm_pix_loss` models) but
    without any offset, so 0 means "this block changes nothing here".
    """
    model = trace.model
    target = gather_tokens(model.patchify(imgs), trace.ids_pred)
    scale = patch_stats(target)[1] if model.config.norm_pix_loss else 1.0
    canvas = torch.zeros_like(model.patchify(imgs))
    _, std = pixel_stats(imgs.shape[1])
    return torch.stack(
        [
            model.unpatchify(paste(canvas, term * scale, trace.ids_pred)) * std.to(imgs)
            for term in terms
        ]
    )


@torch.no_grad()
def per_block_images(trace: DecoderTrace, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What the per-block figure shows, each (depth + 1, B, C, H, W): the [0, 1]
    reconstruction (visible patches pasted) after the base term and after each block, and
    the signed pixel change of the base term and of each block."""
    terms = block_terms(trace)
    visible = trace.masking.ids_visible
    cumulative = torch.stack(
        [
            prediction_images(trace.model, imgs, rows, trace.ids_pred, visible)
            for rows in terms.cumulative()
        ]
    )
    return cumulative, term_pixels(trace, imgs, torch.cat([terms.base[None], terms.terms]))
