"""Any checkpoint (ours or the authors', pretraining or fine-tuned) as a timm ViT's encoder.

Every protocol starts here: `load_backbone` reads the checkpoint once and keeps the
encoder weights under timm's names; `build_vit` (models/classifier.py) makes the timm
`VisionTransformer` (any pooling, class count, resolution, drop path) and `load_encoder`
fills it, resampling the position embedding when the patch grid changed and saying what
was left fresh.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from crossmae.errors import CrossMAEError
from crossmae.eval.pos_embed import resample_pos_embed
from crossmae.models.autoencoder import MaskedAutoencoder
from crossmae.models.checkpoint import read_model
from crossmae.models.classifier import ViTArch
from crossmae.models.config import AutoencoderConfig

# Parameters a new classifier may initialise itself or drop from the checkpoint: the task
# head and whichever of the final norm / fc_norm its pooling does not use.
_HEAD_PREFIXES = ("head.", "fc_norm.", "norm.")


@dataclass
class Backbone:
    """A loaded checkpoint's encoder: architecture, timm-named weights and the model itself."""

    arch: ViTArch
    state_dict: dict[str, torch.Tensor]
    model: nn.Module  # MaskedAutoencoder (pretraining) or VisionTransformer (classifier)
    description: str
    classes: list[str] | None = None  # a fine-tuned classifier's, where the file names them

    @property
    def autoencoder(self) -> MaskedAutoencoder | None:
        return self.model if isinstance(self.model, MaskedAutoencoder) else None


def _describe_autoencoder(config: AutoencoderConfig, origin: str) -> str:
    if config.decoder == "mae":
        method = "MAE"
    else:
        fusion = "fusion" if config.uses_fusion else "no fusion"
        method = f"CrossMAE ({fusion}, prediction ratio {config.prediction_ratio:g})"
    return f"{method} pretraining checkpoint ({origin})"


def _describe_arch(arch: ViTArch) -> str:
    h, w = arch.img_size
    return f"ViT {arch.embed_dim}-d x {arch.depth} blocks, {h}x{w} px, patch {arch.patch_size}"


def _backbone_from_module(
    model: nn.Module, origin: str, path: Path, classes: list[str] | None = None
) -> Backbone:
    if isinstance(model, MaskedAutoencoder):
        arch = ViTArch.from_config(model.config)
        what = _describe_autoencoder(model.config, origin)
        # The encoder already uses timm's names; unlike `export.timm_state_dict` this adds
        # no identity final norm to fusion encoders, so reports say that none was trained.
        state = {k: v.detach() for k, v in model.encoder.state_dict().items()}
        return Backbone(arch, state, model, f"{what}, {_describe_arch(arch)}")
    if isinstance(model, VisionTransformer):
        arch = ViTArch.from_vit(model)
        state = {k: v.detach() for k, v in model.state_dict().items()}
        kind = "ViT classifier" if model.num_classes else "ViT encoder"
        what = f"{kind} ({origin}), {_describe_arch(arch)}"
        return Backbone(arch, state, model, what, classes)
    raise CrossMAEError(f"{path} holds a {type(model).__name__}, not a ViT encoder")


def load_backbone(path: str | Path) -> Backbone:
    """Read a checkpoint of ours (pretraining, fine-tuned, exported) or of the authors'."""
    loaded = read_model(path)
    return _backbone_from_module(loaded.model, loaded.origin, Path(path), loaded.classes)


@dataclass
class LoadReport:
    """What `load_encoder` did besides copying weights one to one."""

    fresh: list[str]  # in the classifier, not in the checkpoint: initialised fresh
    unused: list[str]  # in the checkpoint, not used by this classifier
    resampled: str = ""  # e.g. "pos_embed 8x8 -> 16x16"

    def lines(self) -> list[str]:
        out = []
        if self.fresh:
            out.append(f"initialised fresh: {', '.join(self.fresh)}")
        if self.unused:
            out.append(f"not used from the checkpoint: {', '.join(self.unused)}")
        if self.resampled:
            out.append(f"resampled {self.resampled}")
        return out


def load_encoder(vit: VisionTransformer, backbone: Backbone) -> LoadReport:
    """Copy the backbone's weights into `vit`; only the head, fc_norm and norm may differ.

    A different patch grid resamples the position embedding (bicubic, MAE's); any other
    missing or mis-shaped weight means the checkpoint is not this encoder, and raises.
    """
    report = LoadReport([], [])
    state = {}
    for name, tensor in backbone.state_dict.items():
        if name.startswith("head."):  # another task's classes: a new task gets a new head
            report.unused.append(name)
        else:
            state[name] = tensor
    new_grid = tuple(vit.patch_embed.grid_size)
    if new_grid != backbone.arch.grid_size and "pos_embed" in state:
        state["pos_embed"] = resample_pos_embed(
            state["pos_embed"], backbone.arch.grid_size, new_grid, vit.num_prefix_tokens
        )
        old = backbone.arch.grid_size
        report.resampled = f"pos_embed {old[0]}x{old[1]} -> {new_grid[0]}x{new_grid[1]}"
    target = vit.state_dict()
    for name, tensor in target.items():
        if name not in state:
            if not name.startswith(_HEAD_PREFIXES):
                raise CrossMAEError(f"the checkpoint has no encoder weight {name!r}")
            report.fresh.append(name)
        elif tuple(state[name].shape) != tuple(tensor.shape):
            raise CrossMAEError(
                f"the checkpoint's {name!r} has shape {tuple(state[name].shape)} but the "
                f"classifier needs {tuple(tensor.shape)}"
            )
    for name in sorted(set(state) - set(target)):
        if not name.startswith(_HEAD_PREFIXES):
            raise CrossMAEError(f"the checkpoint has a weight {name!r} that a ViT does not have")
        report.unused.append(name)
        del state[name]
    vit.load_state_dict(state, strict=False)
    return report
