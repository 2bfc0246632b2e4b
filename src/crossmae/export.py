"""Encoder export to timm (safetensors that `timm.create_model(...)` loads with strict=True)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crossmae.errors import CrossMAEError
from crossmae.models.autoencoder import MaskedAutoencoder
from crossmae.models.config import AutoencoderConfig
from crossmae.serialization import atomic_save_safetensors

# (patch, width, depth, heads) of timm's plain ViTs at 224 px.
_TIMM_VITS: dict[tuple[int, int, int], tuple[str, int]] = {
    (192, 12, 3): ("vit_tiny_patch16_224", 16),
    (384, 12, 6): ("vit_small_patch16_224", 16),
    (768, 12, 12): ("vit_base_patch16_224", 16),
    (1024, 24, 16): ("vit_large_patch16_224", 16),
    (1280, 32, 16): ("vit_huge_patch14_224", 14),
}


def timm_spec(config: AutoencoderConfig) -> tuple[str, dict[str, Any]]:
    """The timm model name and the `create_model` keyword arguments that differ from it."""
    key = (config.embed_dim, config.depth, config.num_heads)
    if key in _TIMM_VITS:
        name, patch = _TIMM_VITS[key]
        kwargs: dict[str, Any] = {}
    else:
        name, patch = "vit_base_patch16_224", 16
        kwargs = {
            "embed_dim": config.embed_dim,
            "depth": config.depth,
            "num_heads": config.num_heads,
        }
    img = config.img_size if isinstance(config.img_size, int) else list(config.img_size)
    if img != 224:
        kwargs["img_size"] = img
    if config.patch_size != patch:
        kwargs["patch_size"] = config.patch_size
    if config.in_chans != 3:
        kwargs["in_chans"] = config.in_chans
    if config.mlp_ratio != 4.0:
        kwargs["mlp_ratio"] = config.mlp_ratio
    return name, kwargs


def timm_state_dict(model: MaskedAutoencoder) -> dict[str, torch.Tensor]:
    """Encoder weights under timm's names.

    Fusion-trained CrossMAE encoders have no final LayerNorm; timm's ViT always applies
    one, so it gets an identity affine (weight 1, bias 0): a plain standardisation.
    """
    state = {k: v.detach().contiguous().clone() for k, v in model.encoder.state_dict().items()}
    if "norm.weight" not in state:
        state["norm.weight"] = torch.ones(model.config.embed_dim)
        state["norm.bias"] = torch.zeros(model.config.embed_dim)
    return state


def export_timm(model: nn.Module, output: str | Path) -> tuple[str, dict[str, Any]]:
    """Write the encoder as timm safetensors; returns (timm name, create_model kwargs)."""
    if not isinstance(model, MaskedAutoencoder):
        raise CrossMAEError("timm export needs a pretraining checkpoint (MAE or CrossMAE)")
    name, kwargs = timm_spec(model.config)
    metadata = {"format": "pt", "timm_model": name, "timm_kwargs": json.dumps(kwargs)}
    atomic_save_safetensors(timm_state_dict(model), output, metadata)
    return name, kwargs


def timm_create_call(name: str, kwargs: dict[str, Any]) -> str:
    extra = "".join(f", {k}={v!r}" for k, v in kwargs.items())
    return f"timm.create_model({name!r}, pretrained=False, num_classes=0{extra})"
