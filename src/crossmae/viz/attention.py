"""Decoder attention probabilities, recomputed from each block's own q/k projections."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from crossmae.models.layers import Block, CrossBlock
from crossmae.viz.trace import DecoderTrace


def softmax_attention(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ / sqrt(d)), the probabilities `scaled_dot_product_attention` uses."""
    return (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(dim=-1)


def cross_attention_probs(
    block: CrossBlock, x: torch.Tensor, context: torch.Tensor
) -> torch.Tensor:
    """(B, heads, n_queries, n_context) attention of the block's queries over `context`."""
    if block.has_self_attn:
        x = x + block.self_attn(block.norm0(x))
    q, k, _ = block.cross_attn.qkv_heads(block.norm1(x), context)
    return softmax_attention(q, k)


def self_attention_probs(block: Block, x: torch.Tensor) -> torch.Tensor:
    """(B, heads, n, n) self-attention of a ViT block on its input `x`."""
    q, k, _ = block.attn.qkv_heads(block.norm1(x))
    return softmax_attention(q, k)


@torch.no_grad()
def cross_attention_maps(trace: DecoderTrace) -> torch.Tensor:
    """(depth, B, n_decoded, 1 + n_visible) head-averaged attention of each decoded patch.

    Key 0 is [CLS]; key j > 0 is the visible patch `trace.masking.ids_visible[:, j - 1]`.
    """
    if trace.contexts is None:
        raise ValueError("cross-attention maps need a CrossMAE decoder")
    blocks = trace.model.decoder.blocks
    return torch.stack(
        [
            cross_attention_probs(block, x, context).mean(dim=1)
            for block, x, context in zip(blocks, trace.states[:-1], trace.contexts, strict=True)
        ]
    )


@dataclass
class AttentionMass:
    """Share of the masked tokens' self-attention per decoder block (paper Table 6)."""

    to_visible: torch.Tensor  # (depth,) onto visible patch tokens
    to_masked: torch.Tensor  # (depth,) onto mask tokens (other masked patches and itself)
    to_cls: torch.Tensor  # (depth,) onto [CLS]


@torch.no_grad()
def mae_attention_mass(trace: DecoderTrace) -> AttentionMass:
    """Where MAE's mask tokens look, averaged over heads, masked queries and images."""
    if trace.contexts is not None:
        raise ValueError("attention mass of mask tokens is defined for the MAE decoder")
    masked = trace.masking.indicator(trace.masking.ids_masked)  # (B, L)
    zero = torch.zeros_like(masked[:, :1])
    groups = torch.stack(
        [  # (3, B, 1 + L) key indicators, [CLS] first
            torch.cat([zero, 1 - masked], dim=1),
            torch.cat([zero, masked], dim=1),
            torch.cat([zero + 1, 0 * masked], dim=1),
        ]
    )
    query_weight = masked / masked.sum()  # average over every masked query of every image
    shares = []
    for block, x in zip(trace.model.decoder.blocks, trace.states[:-1], strict=True):
        probs = self_attention_probs(block, x).mean(dim=1)[:, 1:]  # (B, L queries, 1 + L keys)
        per_query = torch.einsum("bqk,gbk->gbq", probs, groups)
        shares.append((per_query * query_weight).sum(dim=(1, 2)))
    visible, to_masked, cls = torch.stack(shares).unbind(dim=1)
    return AttentionMass(visible, to_masked, cls)
