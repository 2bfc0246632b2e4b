"""Run a decoder block by block and keep every residual-stream state.

Everything the figures show (per-block terms, attention maps) is computed from these states
with the decoder's own modules, so it describes exactly the function the model computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from crossmae.models.autoencoder import MaskedAutoencoder
from crossmae.models.masking import Masking


@dataclass
class DecoderTrace:
    """The residual stream of one decoder pass.

    CrossMAE: tokens are the queries of `masking.ids_decoded`. MAE: tokens are [CLS] followed
    by every patch in raster order.
    """

    model: MaskedAutoencoder
    masking: Masking
    states: list[torch.Tensor]  # x_0 (decoder input) ... x_depth, each (B, n, D)
    contexts: list[torch.Tensor] | None  # CrossMAE: the encoder tokens block i reads

    @property
    def ids_pred(self) -> torch.Tensor:
        """(B, n) patch index of each prediction row (the masked patches that were decoded)."""
        return self.masking.ids_decoded

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm + pixel head, keeping only the rows of `ids_pred`."""
        decoder = self.model.decoder
        return self.pred_rows(decoder.pred(decoder.norm(x)))

    def pred_rows(self, per_token: torch.Tensor) -> torch.Tensor:
        """(..., B, n_tokens, P) per decoder token -> (..., B, n, P) rows for `ids_pred`."""
        if self.model.is_cross:
            return per_token
        patches = per_token[..., 1:, :]  # drop [CLS]
        ids = self.ids_pred.unsqueeze(-1).expand(*patches.shape[:-2], -1, patches.shape[-1])
        return torch.gather(patches, -2, ids)

    @torch.no_grad()
    def prediction(self) -> torch.Tensor:
        """(B, n, P) the model's output for `ids_pred`, as its forward pass computes it."""
        return self.head(self.states[-1])


def make_noise(
    batch_size: int, num_patches: int, seed: int, decode: Sequence[int] = ()
) -> torch.Tensor:
    """Masking noise for `seed`; the patches in `decode` are ranked last so they are decoded."""
    noise = torch.rand(batch_size, num_patches, generator=torch.Generator().manual_seed(seed))
    for rank, idx in enumerate(decode):
        noise[:, idx] = 2.0 + rank
    return noise


@torch.no_grad()
def trace_decoder(model: MaskedAutoencoder, imgs: torch.Tensor, masking: Masking) -> DecoderTrace:
    """Encode the visible patches of `imgs` and run the decoder, recording each block's output."""
    encoded = model.encode(imgs, masking)
    decoder = model.decoder
    if model.is_cross:
        x = decoder.queries(masking.ids_decoded)
        contexts = decoder.contexts(encoded)
        states = [x]
        for block, context in zip(decoder.blocks, contexts, strict=True):
            states.append(block(states[-1], context))
        return DecoderTrace(model, masking, states, contexts)
    states = [decoder.tokens(encoded, masking.ids_shuffle)]
    for block in decoder.blocks:
        states.append(block(states[-1]))
    return DecoderTrace(model, masking, states, None)
