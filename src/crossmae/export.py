"""Export to timm: safetensors that `timm.create_model(...)` loads with strict=True.

A pretraining checkpoint gives its encoder (num_classes=0); a fine-tuned classifier (ours
or the authors') gives the whole network with its head, and its class names if known.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from crossmae.errors import CrossMAEError
from crossmae.models.autoencoder import MaskedAutoencoder
from crossmae.models.classifier import ViTArch, timm_spec
from crossmae.serialization import atomic_save_safetensors


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


def export_timm(
    model: nn.Module, output: str | Path, classes: list[str] | None = None
) -> tuple[str, dict[str, Any]]:
    """Write the model as timm safetensors; returns (timm name, create_model kwargs)."""
    if isinstance(model, MaskedAutoencoder):
        name, kwargs = timm_spec(ViTArch.from_config(model.config))
        state = timm_state_dict(model)
    elif isinstance(model, VisionTransformer):
        name, kwargs = timm_spec(ViTArch.from_vit(model), model.num_classes, model.global_pool)
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    else:
        raise CrossMAEError(f"timm export needs a ViT encoder or classifier, not a {type(model)}")
    metadata = {"format": "pt", "timm_model": name, "timm_kwargs": json.dumps(kwargs)}
    if classes is not None:
        metadata["classes"] = json.dumps(classes)
    atomic_save_safetensors(state, output, metadata)
    return name, kwargs


def timm_create_call(name: str, kwargs: dict[str, Any]) -> str:
    extra = "".join(f", {k}={v!r}" for k, v in kwargs.items())
    return f"timm.create_model({name!r}, pretrained=False{extra})"
