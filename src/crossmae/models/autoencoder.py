"""MAE and CrossMAE: masking -> encoder on visible tokens -> decoder -> loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from crossmae.errors import CrossMAEError
from crossmae.models.config import AutoencoderConfig
from crossmae.models.decoders import CrossDecoder, MAEDecoder
from crossmae.models.encoder import EncoderOutput, ViTEncoder
from crossmae.models.fusion import FeatureFusion
from crossmae.models.loss import reconstruction_loss
from crossmae.models.masking import Masking, gather_tokens, random_masking
from crossmae.models.patchify import patchify, unpatchify


@dataclass
class AutoencoderOutput:
    """What one forward pass produced; every index is a patch index in raster order."""

    loss: torch.Tensor  # scalar
    pred: torch.Tensor  # (B, n_pred, p*p*C): row r predicts patch ids_pred[:, r]
    mask: torch.Tensor  # (B, L): 1 = decoded (CrossMAE) / masked (MAE), 0 elsewhere
    ids_pred: torch.Tensor  # (B, n_pred), ascending
    masking: Masking

    @property
    def ids_visible(self) -> torch.Tensor:
        return self.masking.ids_visible


class MaskedAutoencoder(nn.Module):
    """A ViT masked autoencoder with either decoder; build one with `crossmae.create_model`."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config.validate()
        c = config
        grid = c.grid_size
        self.patch_size = c.patch_size
        self.encoder = ViTEncoder(
            grid, c.patch_size, c.in_chans, c.embed_dim, c.depth, c.num_heads, c.mlp_ratio,
            final_norm=c.encoder_final_norm,
        )  # fmt: skip
        patch_dim = c.patch_size**2 * c.in_chans
        if c.decoder == "mae":
            self.decoder: CrossDecoder | MAEDecoder = MAEDecoder(
                grid, c.embed_dim, c.decoder_dim, c.decoder_depth, c.decoder_heads, patch_dim,
                c.mlp_ratio,
            )  # fmt: skip
        else:
            fusion = None
            if c.uses_fusion:
                k = len(c.fusion_blocks) + int(c.fusion_input)
                fusion = FeatureFusion(
                    k, c.decoder_depth, c.embed_dim, c.fusion_weights, c.fusion_project
                )
            self.decoder = CrossDecoder(
                grid, c.embed_dim, c.decoder_dim, c.decoder_depth, c.decoder_heads, patch_dim,
                c.mlp_ratio, fusion, c.decoder_self_attn,
            )  # fmt: skip
        self.reset_parameters()

    @property
    def is_cross(self) -> bool:
        return self.config.decoder == "cross"

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute every encoder and decoder block in the backward instead of keeping its
        activations (timm's name for it): for models or batches that do not fit otherwise."""
        self.encoder.grad_checkpointing = self.decoder.grad_checkpointing = enable

    def reset_parameters(self) -> None:
        """MAE's init: xavier-uniform linears (patch conv as a linear), N(0, .02) tokens."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.encoder.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.encoder.cls_token, std=0.02)
        nn.init.normal_(self.decoder.mask_token, std=0.02)

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        return patchify(imgs, self.patch_size)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        return unpatchify(patches, self.patch_size, self.config.grid_size)

    def mask(
        self,
        batch_size: int,
        device: torch.device,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        prediction_ratio: float | None = None,
    ) -> Masking:
        """Draw (or, given `noise` (B, L), compute) the masking for one batch."""
        p, gamma = self.config.ratios(mask_ratio, prediction_ratio)
        shape = (batch_size, self.config.num_patches)
        if noise is None:
            noise = torch.rand(shape, device=device)
        elif tuple(noise.shape) != shape:  # gather would quietly use part of the batch
            raise CrossMAEError(
                f"noise must have shape {shape} (batch, patches), got {tuple(noise.shape)}"
            )
        return random_masking(noise, p, gamma)

    def encode(self, imgs: torch.Tensor, masking: Masking) -> EncoderOutput:
        c = self.config
        blocks = c.fusion_blocks if c.uses_fusion else ()
        return self.encoder(
            imgs, masking.ids_visible, return_blocks=blocks,
            return_input=c.uses_fusion and c.fusion_input,
        )  # fmt: skip

    def forward(
        self,
        imgs: torch.Tensor,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        prediction_ratio: float | None = None,
    ) -> AutoencoderOutput:
        """Mask, encode, decode, score.

        `noise` (B, L) fixes the masking (patches ranked by ascending noise are visible, then
        skipped, then decoded); `mask_ratio` / `prediction_ratio` override the config for
        this call (e.g. `prediction_ratio=mask_ratio` decodes every masked patch).
        """
        masking = self.mask(imgs.shape[0], imgs.device, noise, mask_ratio, prediction_ratio)
        encoded = self.encode(imgs, masking)
        target = self.patchify(imgs)
        if self.is_cross:
            ids_pred = masking.ids_decoded
            pred = self.decoder(encoded, ids_pred)
            mask = masking.indicator(ids_pred)
            loss = reconstruction_loss(
                pred, gather_tokens(target, ids_pred), self.config.norm_pix_loss
            )
        else:
            pred = self.decoder(encoded, masking.ids_shuffle)
            ids_pred = torch.arange(pred.shape[1], device=imgs.device).expand(pred.shape[0], -1)
            mask = masking.indicator(masking.ids_masked)
            loss = reconstruction_loss(pred, target, self.config.norm_pix_loss, weight=mask)
        return AutoencoderOutput(loss, pred, mask, ids_pred, masking)

    def forward_features(self, imgs: torch.Tensor) -> torch.Tensor:
        """(B, 1 + L, D) tokens of the unmasked image (mask ratio 0), for feature extraction."""
        return self.encoder(imgs).tokens
