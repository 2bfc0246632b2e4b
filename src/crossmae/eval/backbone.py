"""Any checkpoint (ours or the authors', pretraining or fine-tuned) as a timm ViT classifier.

Every protocol starts here: `load_backbone` reads the checkpoint once and keeps the
encoder weights under timm's names; `build_vit` makes the timm `VisionTransformer` (any
pooling, class count, resolution, drop path) and `load_encoder` fills it, resampling the
position embedding when the patch grid changed and saying what was left fresh.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from crossmae.data.transforms import size_pair
from crossmae.errors import CrossMAEError
from crossmae.eval.pos_embed import resample_pos_embed
from crossmae.models.autoencoder import MaskedAutoencoder
from crossmae.models.checkpoint import FORMAT as AUTOENCODER_FORMAT
from crossmae.models.checkpoint import load_model, model_from_checkpoint
from crossmae.models.config import AutoencoderConfig
from crossmae.models.official import load_official_checkpoint
from crossmae.serialization import safe_torch_load

CLASSIFIER_FORMAT = "crossmae-classifier"
Pool = Literal["avg", "token"]
# Parameters a new classifier may initialise itself or drop from the checkpoint: the task
# head and whichever of the final norm / fc_norm its pooling does not use.
_HEAD_PREFIXES = ("head.", "fc_norm.", "norm.")


@dataclass(frozen=True)
class ViTArch:
    """The encoder's shape, enough to rebuild it as a timm `VisionTransformer`."""

    img_size: tuple[int, int]
    patch_size: int
    in_chans: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size

    @classmethod
    def from_config(cls, config: AutoencoderConfig) -> ViTArch:
        return cls(
            size_pair(config.img_size), config.patch_size, config.in_chans, config.embed_dim,
            config.depth, config.num_heads, config.mlp_ratio,
        )  # fmt: skip

    @classmethod
    def from_vit(cls, vit: VisionTransformer) -> ViTArch:
        block = vit.blocks[0]
        return cls(
            img_size=size_pair(vit.patch_embed.img_size),
            patch_size=size_pair(vit.patch_embed.patch_size)[0],
            in_chans=vit.patch_embed.proj.in_channels,
            embed_dim=vit.embed_dim,
            depth=len(vit.blocks),
            num_heads=block.attn.num_heads,
            mlp_ratio=block.mlp.fc1.out_features / vit.embed_dim,
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["img_size"] = list(self.img_size)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ViTArch:
        return cls(**{**data, "img_size": size_pair(data["img_size"])})


@dataclass
class Backbone:
    """A loaded checkpoint's encoder: architecture, timm-named weights and the model itself."""

    arch: ViTArch
    state_dict: dict[str, torch.Tensor]
    model: nn.Module  # MaskedAutoencoder (pretraining) or VisionTransformer (classifier)
    description: str
    classes: list[str] = field(default_factory=list)  # for fine-tuned classifiers, if known

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


def _backbone_from_module(model: nn.Module, origin: str, path: Path) -> Backbone:
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
        what = f"fine-tuned ViT classifier ({origin}), {_describe_arch(arch)}"
        return Backbone(arch, state, model, what)
    raise CrossMAEError(f"{path} holds a {type(model).__name__}, not a ViT encoder")


def load_backbone(path: str | Path) -> Backbone:
    """Read a checkpoint of ours (pretraining or fine-tuned) or of the authors' (MAE, CrossMAE)."""
    path = Path(path)
    if path.suffix == ".safetensors" or path.is_dir():  # ours, or the authors' hub release
        return _backbone_from_module(load_model(path), "safetensors", path)
    ckpt = safe_torch_load(path)
    fmt = ckpt.get("format") if isinstance(ckpt, dict) else None
    if fmt == CLASSIFIER_FORMAT:
        vit, classes = classifier_from_checkpoint(ckpt, f"checkpoint {path}")
        backbone = _backbone_from_module(vit, "crossmae format", path)
        backbone.classes = classes
        return backbone
    if fmt == AUTOENCODER_FORMAT:
        if "model_config" not in ckpt or "model" not in ckpt:
            raise CrossMAEError(f"{path} is a crossmae checkpoint without a model")
        return _backbone_from_module(
            model_from_checkpoint(ckpt, f"checkpoint {path}"), "crossmae format", path
        )
    if isinstance(ckpt, dict) and fmt is not None:
        raise CrossMAEError(f"{path} is a {fmt!r} checkpoint, not a model to evaluate")
    return _backbone_from_module(load_official_checkpoint(path), "authors' format", path)


def build_vit(
    arch: ViTArch,
    num_classes: int,
    global_pool: Pool = "avg",
    img_size: int | tuple[int, int] | None = None,
    drop_path_rate: float = 0.0,
) -> VisionTransformer:
    """timm's ViT with this encoder's shape; `avg` pooling brings MAE's fc_norm (no final norm)."""
    if global_pool not in ("avg", "token"):
        raise CrossMAEError(f"pooling must be 'avg' or 'token', got {global_pool!r}")
    height, width = size_pair(img_size) if img_size is not None else size_pair(arch.img_size)
    if height % arch.patch_size or width % arch.patch_size:  # timm would drop the remainder
        raise CrossMAEError(
            f"image size {height}x{width} is not divisible by the encoder's patch size "
            f"{arch.patch_size}"
        )
    return VisionTransformer(
        img_size=(height, width),
        patch_size=arch.patch_size, in_chans=arch.in_chans, num_classes=num_classes,
        global_pool=global_pool, embed_dim=arch.embed_dim, depth=arch.depth,
        num_heads=arch.num_heads, mlp_ratio=arch.mlp_ratio, drop_path_rate=drop_path_rate,
    )  # fmt: skip


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

    A different patch grid resamples the position embedding (bicubic, timm's); any other
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


def classifier_checkpoint(
    vit: VisionTransformer, classes: list[str], **extra: Any
) -> dict[str, Any]:
    """Our fine-tuned classifier format: enough to rebuild the timm ViT without guessing."""
    return {
        "format": CLASSIFIER_FORMAT,
        "arch": ViTArch.from_vit(vit).to_dict(),
        "global_pool": vit.global_pool,
        "classes": list(classes),
        "model": vit.state_dict(),
        **extra,
    }


def classifier_from_checkpoint(
    ckpt: dict[str, Any], what: str
) -> tuple[VisionTransformer, list[str]]:
    try:
        arch = ViTArch.from_dict(ckpt["arch"])
        classes = list(ckpt["classes"])
        vit = build_vit(arch, len(classes), ckpt["global_pool"])
        vit.load_state_dict(ckpt["model"], strict=True)
    except (KeyError, TypeError, RuntimeError) as err:
        raise CrossMAEError(f"{what} is a damaged classifier checkpoint ({err})") from None
    return vit, classes
