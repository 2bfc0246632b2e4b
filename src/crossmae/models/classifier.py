"""The timm ViT an encoder becomes, and the two files that hold one with its head.

`ViTArch` is an encoder's shape and `build_vit` the timm `VisionTransformer` made from it.
A classifier (fine-tuned, or a linear probe with its head folded in) is saved as our .pth
(`classifier_checkpoint`: weights, pooling and class names) or exported as timm
safetensors (`timm_spec` names the timm model, the metadata holds the rest); both files
read back here into the same `VisionTransformer`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from timm.models.vision_transformer import VisionTransformer

from crossmae.data.transforms import size_pair
from crossmae.errors import CrossMAEError
from crossmae.models.config import AutoencoderConfig
from crossmae.serialization import load_state_dict_strict, safe_torch_load

CLASSIFIER_FORMAT = "crossmae-classifier"
Pool = Literal["avg", "token"]

# (width, depth, heads) -> (name, patch) of timm's plain ViTs at 224 px.
_TIMM_VITS: dict[tuple[int, int, int], tuple[str, int]] = {
    (192, 12, 3): ("vit_tiny_patch16_224", 16),
    (384, 12, 6): ("vit_small_patch16_224", 16),
    (768, 12, 12): ("vit_base_patch16_224", 16),
    (1024, 24, 16): ("vit_large_patch16_224", 16),
    (1280, 32, 16): ("vit_huge_patch14_224", 14),
}
_TIMM_NAMES = {name: (key, patch) for key, (name, patch) in _TIMM_VITS.items()}
_TIMM_KWARGS = {"embed_dim", "depth", "num_heads", "img_size", "patch_size", "in_chans",
                "mlp_ratio", "num_classes", "global_pool"}  # fmt: skip


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

    def __post_init__(self) -> None:
        """Positive whole sizes and heads that split the width: files are not trusted."""
        if not isinstance(self.img_size, tuple) or len(self.img_size) != 2:
            raise ValueError(f"img_size {self.img_size!r} is not (height, width)")
        sizes = (*self.img_size, self.patch_size, self.in_chans, self.embed_dim, self.depth,
                 self.num_heads)  # fmt: skip
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sizes):
            raise ValueError("sizes must be positive whole numbers")
        if not isinstance(self.mlp_ratio, int | float) or not 0 < self.mlp_ratio < math.inf:
            raise ValueError(f"mlp_ratio {self.mlp_ratio!r} is not a positive number")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"{self.num_heads} heads do not split width {self.embed_dim}")

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
        img = data["img_size"]  # a list in the file; anything else __post_init__ refuses
        return cls(**{**data, "img_size": tuple(img) if isinstance(img, list) else img})


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


def classifier_checkpoint(
    vit: VisionTransformer, classes: list[str] | None, **extra: Any
) -> dict[str, Any]:
    """Our classifier format (fine-tuned, or a probe's): enough to rebuild the timm ViT
    without guessing.
    `classes` names its outputs; None where the data named none (tar shards' labels)."""
    return {
        "format": CLASSIFIER_FORMAT,
        "arch": ViTArch.from_vit(vit).to_dict(),
        "global_pool": vit.global_pool,
        "classes": None if classes is None else list(classes),
        "num_classes": vit.num_classes,
        "model": vit.state_dict(),
        **extra,
    }


def classifier_from_checkpoint(
    ckpt: dict[str, Any], what: str, weights: str = "model"
) -> tuple[VisionTransformer, list[str] | None]:
    """The classifier in a dict made by `classifier_checkpoint`, with its class names;
    `weights="ema"` takes the moving average a `--ema` fine-tune also kept."""
    if weights == "ema" and ckpt.get("ema") is None:
        raise CrossMAEError(
            f"{what} has no EMA weights (only `crossmae finetune --ema` keeps them)"
        )
    try:
        arch = ViTArch.from_dict(ckpt["arch"])
        names = ckpt["classes"]
        num_classes = ckpt["num_classes"] if "num_classes" in ckpt else len(names)  # older
        classes = _class_names(names, num_classes)
        pool, state = ckpt["global_pool"], ckpt[weights]
    except (KeyError, TypeError, ValueError) as err:
        raise CrossMAEError(f"{what} is a damaged classifier checkpoint ({err})") from None
    return _built(arch, num_classes, pool, state, what), classes


def ema_classifier(path: str | Path) -> tuple[VisionTransformer, list[str] | None]:
    """The moving average a `crossmae finetune --ema` checkpoint kept, as a classifier."""
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CLASSIFIER_FORMAT:
        raise CrossMAEError(f"--ema needs a crossmae finetune checkpoint, not {path}")
    return classifier_from_checkpoint(ckpt, f"checkpoint {path}", "ema")


def _class_names(names: Any, count: Any) -> list[str] | None:
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ValueError(f"a class count of {count!r}")
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError("class names that are not a list of names")
    if len(names) != count:
        raise ValueError(f"{count} outputs but {len(names)} class names")
    return names


def _built(arch: ViTArch, num_classes: int, pool: Any, state: Any, what: str) -> VisionTransformer:
    """The ViT that `arch` describes, loaded strictly from `state`, once the sizes the file
    states are checked against its weights: a width or depth its weights do not have would
    otherwise build (and allocate) a model for nothing, or for hours."""
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise CrossMAEError(f"{what} holds no state dict of tensors")
    height, width = arch.grid_size
    expected = {
        "patch_embed.proj.weight": (arch.embed_dim, arch.in_chans, arch.patch_size,
                                    arch.patch_size),
        "pos_embed": (1, 1 + height * width, arch.embed_dim),
        "blocks.0.mlp.fc1.weight": (int(arch.embed_dim * arch.mlp_ratio), arch.embed_dim),
        "head.weight": (num_classes, arch.embed_dim) if num_classes else None,
    }  # fmt: skip
    found = {k: tuple(state[k].shape) if k in state else None for k in expected}
    blocks = {k.split(".")[1] for k in state if k.startswith("blocks.")}
    if found != expected or len(blocks) != arch.depth:
        raise CrossMAEError(f"{what} describes a ViT that its weights do not fit (damaged?)")
    vit = build_vit(arch, num_classes, pool)
    load_state_dict_strict(vit, state, what)
    return vit


def fold_probe_head(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A linear probe's head, Sequential(BatchNorm1d(affine=False, eps=1e-6), Linear) as
    MAE's main_linprobe.py and `crossmae linprobe` train it, is one Linear in eval mode:
    timm's ViT head. Folded in float64; a state dict without one is returned as it is."""
    if "head.1.weight" not in state_dict:
        return state_dict
    scale = (state_dict["head.0.running_var"].double() + 1e-6).rsqrt()
    weight = state_dict["head.1.weight"].double() * scale
    bias = state_dict["head.1.bias"].double() - weight @ state_dict["head.0.running_mean"].double()
    dtype = state_dict["head.1.weight"].dtype
    out = {k: v for k, v in state_dict.items() if not k.startswith(("head.0.", "head.1."))}
    return out | {"head.weight": weight.to(dtype), "head.bias": bias.to(dtype)}


def timm_spec(
    arch: ViTArch, num_classes: int = 0, global_pool: Pool = "token"
) -> tuple[str, dict[str, Any]]:
    """The timm model name and the `create_model` keyword arguments that differ from it
    (`num_classes` always: 0 for an encoder)."""
    key = (arch.embed_dim, arch.depth, arch.num_heads)
    if key in _TIMM_VITS:
        name, patch = _TIMM_VITS[key]
        kwargs: dict[str, Any] = {}
    else:
        name, patch = "vit_base_patch16_224", 16
        kwargs = {"embed_dim": arch.embed_dim, "depth": arch.depth, "num_heads": arch.num_heads}
    if arch.img_size != (224, 224):
        height, width = arch.img_size
        kwargs["img_size"] = height if height == width else [height, width]
    if arch.patch_size != patch:
        kwargs["patch_size"] = arch.patch_size
    if arch.in_chans != 3:
        kwargs["in_chans"] = arch.in_chans
    if arch.mlp_ratio != 4.0:
        kwargs["mlp_ratio"] = arch.mlp_ratio
    kwargs["num_classes"] = num_classes  # timm's default is ImageNet's 1000
    if global_pool != "token":  # timm's default
        kwargs["global_pool"] = global_pool
    return name, kwargs


def vit_from_timm_export(
    state: dict[str, torch.Tensor], metadata: dict[str, str], what: str
) -> tuple[VisionTransformer, list[str] | None]:
    """The ViT a `crossmae export --format timm` file holds, and its class names if any.

    Only the names and arguments `timm_spec` writes are accepted: the metadata comes from
    the file, and the file may not be ours.
    """
    name = metadata["timm_model"]
    if name not in _TIMM_NAMES:
        raise CrossMAEError(f"{what} is for timm's {name!r}, which crossmae does not export")
    try:
        kwargs = json.loads(metadata.get("timm_kwargs", "{}"))
        names = json.loads(metadata["classes"]) if "classes" in metadata else None
        unknown = sorted(set(kwargs) - _TIMM_KWARGS)
        if unknown:
            raise ValueError(f"unknown arguments {', '.join(map(str, unknown))}")
        (width, depth, heads), patch = _TIMM_NAMES[name]
        img = kwargs.get("img_size", 224)
        arch = ViTArch(
            (img, img) if isinstance(img, int) else tuple(img), kwargs.get("patch_size", patch),
            kwargs.get("in_chans", 3), kwargs.get("embed_dim", width),
            kwargs.get("depth", depth), kwargs.get("num_heads", heads),
            kwargs.get("mlp_ratio", 4.0),
        )  # fmt: skip
        num_classes = kwargs.get("num_classes", 0)
        classes = _class_names(names, num_classes)
    except (json.JSONDecodeError, TypeError, ValueError, AttributeError) as err:
        raise CrossMAEError(f"{what} has damaged timm metadata ({err})") from None
    return _built(arch, num_classes, kwargs.get("global_pool", "token"), state, what), classes
