"""ViT encoder that sees only the visible patches and can hand out every block's output."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from crossmae.errors import CrossMAEError
from crossmae.models.layers import Block, PatchEmbed, layer_norm, run_block
from crossmae.models.masking import gather_tokens
from crossmae.models.pos_embed import sincos_2d_pos_embed


@dataclass
class EncoderOutput:
    tokens: torch.Tensor  # (B, 1 + n, D): [CLS] + visible tokens after the last block (and norm)
    intermediates: list[torch.Tensor] = field(default_factory=list)  # requested layers, in order


class ViTEncoder(nn.Module):
    """Conv patch embedding, fixed sin-cos positions, [CLS], pre-norm blocks; timm's names."""

    def __init__(
        self,
        grid_size: tuple[int, int],
        patch_size: int,
        in_chans: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        final_norm: bool = True,
    ) -> None:
        super().__init__()
        self.grid_size = grid_size
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.register_buffer("pos_embed", sincos_2d_pos_embed(embed_dim, grid_size, cls_token=True))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = layer_norm(embed_dim) if final_norm else nn.Identity()
        self.grad_checkpointing = False  # recompute each block in the backward

    def embed_patches(self, imgs: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, L, D) patch tokens with their position embedding."""
        expected = (self.patch_embed.proj.in_channels,
                    *(g * self.patch_embed.patch_size for g in self.grid_size))  # fmt: skip
        if imgs.ndim != 4 or tuple(imgs.shape[1:]) != expected or not imgs.is_floating_point():
            raise CrossMAEError(
                f"expected a float batch of shape (B, {', '.join(map(str, expected))}), got "
                f"{imgs.dtype} {tuple(imgs.shape)}"
            )
        if imgs.shape[0] == 0:
            raise CrossMAEError("the batch holds no image")
        return self.patch_embed(imgs) + self.pos_embed[:, 1:]

    def forward(
        self,
        imgs: torch.Tensor,
        ids_visible: torch.Tensor | None = None,
        return_blocks: Sequence[int] = (),
        return_input: bool = False,
    ) -> EncoderOutput:
        """Encode the patches at `ids_visible` (all patches when None).

        `return_blocks` (0-based block indices) and `return_input` select the intermediate
        token sets to return, input first, each with the [CLS] token.
        """
        x = self.embed_patches(imgs)
        if ids_visible is not None:
            x = gather_tokens(x, ids_visible)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        wanted = set(return_blocks)
        intermediates = [x] if return_input else []
        for i, block in enumerate(self.blocks):
            x = run_block(block, x, checkpointed=self.grad_checkpointing)
            if i in wanted:
                intermediates.append(x)
        return EncoderOutput(self.norm(x), intermediates)
