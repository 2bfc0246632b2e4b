"""Named model configs (the paper's and small-image ones), registered by name as in timm."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from crossmae.errors import CrossMAEError
from crossmae.models.config import AutoencoderConfig

if TYPE_CHECKING:
    from crossmae.models.autoencoder import MaskedAutoencoder

_REGISTRY: dict[str, Callable[[], AutoencoderConfig]] = {}

# Encoder sizes: (patch, width, depth, heads).
VIT_SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (16, 192, 12, 3),
    "small": (16, 384, 12, 6),
    "base": (16, 768, 12, 12),
    "large": (16, 1024, 24, 16),
    "huge": (14, 1280, 32, 16),
}


def register(
    name: str,
) -> Callable[[Callable[[], AutoencoderConfig]], Callable[[], AutoencoderConfig]]:
    def wrap(fn: Callable[[], AutoencoderConfig]) -> Callable[[], AutoencoderConfig]:
        _REGISTRY[name] = fn
        return fn

    return wrap


def list_models(pattern: str = "") -> list[str]:
    return sorted(n for n in _REGISTRY if pattern in n)


def get_config(name: str, **overrides: Any) -> AutoencoderConfig:
    if name not in _REGISTRY:
        raise CrossMAEError(f"unknown model {name!r}; `crossmae models` lists the known ones")
    return _REGISTRY[name]().replace(**overrides).validate()


def create_model(name: str, **overrides: Any) -> MaskedAutoencoder:
    """Build a named model; keyword overrides change any `AutoencoderConfig` field."""
    from crossmae.models.autoencoder import MaskedAutoencoder  # torch: not for listing names

    return MaskedAutoencoder(get_config(name, **overrides))


def _encoder(size: str, **kw: Any) -> dict[str, Any]:
    patch, dim, depth, heads = VIT_SIZES[size]
    return {"patch_size": patch, "embed_dim": dim, "depth": depth, "num_heads": heads} | kw


def _register_paper_models() -> None:
    """CrossMAE: decoder 12 x 512 (256 and 8 heads for ViT-S), fusion over input + all blocks.
    MAE: decoder 8 x 512. Released CrossMAE S/B/L use γ = 0.75, H uses γ = 0.25."""
    for size in ("small", "base", "large", "huge"):
        patch = VIT_SIZES[size][0]
        dec_dim, dec_heads = (256, 8) if size == "small" else (512, 16)
        gamma = 0.25 if size == "huge" else 0.75
        cross = _encoder(size, decoder="cross", decoder_dim=dec_dim, decoder_heads=dec_heads,
                         prediction_ratio=gamma)  # fmt: skip
        _add(f"crossmae_vit_{size}_patch{patch}", cross | {"decoder_depth": 12})
        _add(f"crossmae_vit_{size}_patch{patch}_dec8", cross | {"decoder_depth": 8})
        _add(f"mae_vit_{size}_patch{patch}", _encoder(
            size, decoder="mae", decoder_dim=512, decoder_depth=8, decoder_heads=16
        ))  # fmt: skip
    base = _encoder("base", decoder="cross", prediction_ratio=0.25)
    _add("crossmae_vit_base_patch16_448", base | {"img_size": 448, "decoder_depth": 12})


def _register_small_image_models() -> None:
    """ViT-Tiny / ViT-Small on 32-px images (CIFAR): patch 4 (64 tokens) or 2 (256 tokens)."""
    for size in ("tiny", "small"):
        _, dim, depth, heads = VIT_SIZES[size]
        for patch in (4, 2):
            enc = {"img_size": 32, "patch_size": patch, "embed_dim": dim, "depth": depth,
                   "num_heads": heads}  # fmt: skip
            dec = {"decoder_dim": 128 if size == "tiny" else 256, "decoder_heads": 4}
            _add(
                f"crossmae_vit_{size}_patch{patch}_32",
                enc | dec | {"decoder": "cross", "decoder_depth": 12, "prediction_ratio": 0.25},
            )
            _add(f"mae_vit_{size}_patch{patch}_32",
                 enc | dec | {"decoder": "mae", "decoder_depth": 8})  # fmt: skip


def _add(name: str, fields: dict[str, Any]) -> None:
    register(name)(lambda: AutoencoderConfig(**fields))


_register_paper_models()
_register_small_image_models()
