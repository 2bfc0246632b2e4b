"""The timm ViT an encoder becomes, and the two files that hold one with its head.

`ViTArch` is an encoder's shape and `build_vit` the timm `VisionTransformer` made from it.
A fine-tuned classifier is saved as our .pth (`classifier_checkpoint`: weights, pooling
and class names) or exported as timm safetensors (`timm_spec` names the timm model, the
metadata holds the rest); both files read back here into the same `VisionTransformer`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from timm.models.vision_transformer import VisionTransformer

from crossmae.data.transforms import size_pair
from crossmae.errors import CrossMAEError
from crossmae.models.config import AutoencoderConfig
from crossmae.serialization import load_state_dict_strict

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
    ckpt: dict[str, Any], what: str, weights: str = "model"
) -> tuple[VisionTransformer, list[str]]:
    """The classifier in a dict made by `classifier_checkpoint`, with its class names;
    `weights="ema"` takes the moving average a `--ema` fine-tune also kept."""
    if weights == "ema" and ckpt.get("ema") is None:
        raise CrossMAEError(f"{what} has no EMA weights (it was fine-tuned without --ema)")
    try:
        arch = ViTArch.from_dict(ckpt["arch"])
        classes = [str(name) for name in ckpt["classes"]]
        vit = build_vit(arch, len(classes), ckpt["global_pool"])
        vit.load_state_dict(ckpt[weights], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CrossMAEError(f"{what} is a damaged classifier checkpoint ({err})") from None
    return vit, classes


def timm_spec(
    arch: ViTArch, num_classes: int = 0, global_pool: Pool = "token"
) -> tuple[str, dict[str, Any]]:
    """The timm model name and the `create_model` keyword arguments that differ from it
    (beside `num_classes`, which an encoder export leaves to the caller as 0)."""
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
    if num_classes:
        kwargs["num_classes"] = num_classes
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
        classes = json.loads(metadata["classes"]) if "classes" in metadata else None
        unknown = sorted(set(kwargs) - _TIMM_KWARGS)
        if unknown:
            raise ValueError(f"unknown arguments {', '.join(map(str, unknown))}")
        (width, depth, heads), patch = _TIMM_NAMES[name]
        arch = ViTArch(
            size_pair(kwargs.get("img_size", 224)), int(kwargs.get("patch_size", patch)),
            int(kwargs.get("in_chans", 3)), int(kwargs.get("embed_dim", width)),
            int(kwargs.get("depth", depth)), int(kwargs.get("num_heads", heads)),
            float(kwargs.get("mlp_ratio", 4.0)),
        )  # fmt: skip
        num_classes = int(kwargs.get("num_classes", 0))
        if classes is not None and (not isinstance(classes, list) or len(classes) != num_classes):
            raise ValueError(f"{num_classes} outputs but class names {classes!r:.60}")
        pool = kwargs.get("global_pool", "token")
        blocks = {k.split(".")[1] for k in state if k.startswith("blocks.")}
        if arch.depth != len(blocks):  # before building: a depth of 10**6 would take hours
            raise ValueError(f"depth {arch.depth} but {len(blocks)} blocks of weights")
        with torch.device("meta"):  # shapes only: a huge width would not fit in memory
            shell = build_vit(arch, num_classes, pool)
    except (json.JSONDecodeError, TypeError, ValueError, AttributeError, AssertionError,
            ZeroDivisionError) as err:  # fmt: skip
        raise CrossMAEError(f"{what} has damaged timm metadata ({err})") from None
    expected = {k: tuple(v.shape) for k, v in shell.state_dict().items()}
    if expected != {k: tuple(v.shape) for k, v in state.items()}:
        raise CrossMAEError(f"{what} holds weights that do not fit its timm metadata")
    vit = build_vit(arch, num_classes, pool)
    load_state_dict_strict(vit, state, what)
    return vit, None if classes is None else [str(c) for c in classes]
