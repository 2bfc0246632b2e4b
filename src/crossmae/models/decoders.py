"""The two decoders: MAE's self-attention over all positions, CrossMAE's cross-attention."""

from __future__ import annotations

import torch
from torch import nn

from crossmae.models.encoder import EncoderOutput
from crossmae.models.fusion import FeatureFusion
from crossmae.models.layers import Block, CrossBlock, layer_norm, run_block
from crossmae.models.masking import gather_tokens
from crossmae.models.pos_embed import sincos_2d_pos_embed


class CrossDecoder(nn.Module):
    """Each decoded patch is a query `mask_token + pos[patch]` that only reads encoder tokens.

    Queries never attend to each other (unless `self_attn`, the paper's ablation), so any
    subset of patches can be decoded, at training or at inference.
    """

    def __init__(
        self,
        grid_size: tuple[int, int],
        encoder_dim: int,
        decoder_dim: int,
        depth: int,
        num_heads: int,
        patch_dim: int,
        mlp_ratio: float = 4.0,
        fusion: FeatureFusion | None = None,
        self_attn: bool = False,
    ) -> None:
        super().__init__()
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer(
            "pos_embed", sincos_2d_pos_embed(decoder_dim, grid_size, cls_token=True)
        )
        self.fusion = fusion
        self.blocks = nn.ModuleList(
            CrossBlock(encoder_dim, decoder_dim, num_heads, mlp_ratio, self_attn)
            for _ in range(depth)
        )
        self.norm = layer_norm(decoder_dim)
        self.pred = nn.Linear(decoder_dim, patch_dim)
        self.grad_checkpointing = False  # recompute each block in the backward

    def queries(self, ids_decoded: torch.Tensor) -> torch.Tensor:
        """(B, n) patch indices -> (B, n, decoder_dim) query tokens."""
        pos = self.pos_embed[:, 1:].expand(ids_decoded.shape[0], -1, -1)
        return gather_tokens(pos, ids_decoded) + self.mask_token

    def contexts(self, encoded: EncoderOutput) -> list[torch.Tensor]:
        """The encoder tokens each decoder block attends to."""
        if self.fusion is not None:
            return self.fusion(encoded.intermediates)
        return [encoded.tokens] * len(self.blocks)

    def forward(self, encoded: EncoderOutput, ids_decoded: torch.Tensor) -> torch.Tensor:
        """-> (B, n, patch_dim) pixel predictions for `ids_decoded`."""
        x = self.queries(ids_decoded)
        for block, context in zip(self.blocks, self.contexts(encoded), strict=True):
            x = run_block(block, x, context, checkpointed=self.grad_checkpointing)
        return self.pred(self.norm(x))


class MAEDecoder(nn.Module):
    """MAE baseline: embed visible tokens, fill every masked position with the mask token,
    restore the raster order, and run self-attention blocks over all L + 1 tokens."""

    def __init__(
        self,
        grid_size: tuple[int, int],
        encoder_dim: int,
        decoder_dim: int,
        depth: int,
        num_heads: int,
        patch_dim: int,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(encoder_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer(
            "pos_embed", sincos_2d_pos_embed(decoder_dim, grid_size, cls_token=True)
        )
        self.blocks = nn.ModuleList(Block(decoder_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = layer_norm(decoder_dim)
        self.pred = nn.Linear(decoder_dim, patch_dim)
        self.grad_checkpointing = False  # recompute each block in the backward

    def tokens(self, encoded: EncoderOutput, ids_shuffle: torch.Tensor) -> torch.Tensor:
        """(B, 1 + L, decoder_dim): [CLS], then every patch in raster order, plus positions."""
        x = self.embed(encoded.tokens)
        b, length = ids_shuffle.shape
        masked = self.mask_token.expand(b, length + 1 - x.shape[1], -1)
        patches = torch.cat([x[:, 1:], masked], dim=1)
        patches = gather_tokens(patches, torch.argsort(ids_shuffle, dim=1))
        return torch.cat([x[:, :1], patches], dim=1) + self.pos_embed

    def forward(self, encoded: EncoderOutput, ids_shuffle: torch.Tensor) -> torch.Tensor:
        """-> (B, L, patch_dim) pixel predictions for every patch."""
        x = self.tokens(encoded, ids_shuffle)
        for block in self.blocks:
            x = run_block(block, x, checkpointed=self.grad_checkpointing)
        return self.pred(self.norm(x))[:, 1:]
