"""One dataclass describes every model: encoder, decoder kind, fusion and loss settings."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Literal

from crossmae.errors import CrossMAEError
from crossmae.models.mask_counts import mask_counts


def _pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if _is_int(size):
        return size, size
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(map(_is_int, size)):
        return size[0], size[1]
    raise CrossMAEError(f"img_size must be an int or (height, width) ints, got {size!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_INTS = ("patch_size", "in_chans", "embed_dim", "depth", "num_heads", "decoder_dim",
         "decoder_depth", "decoder_heads")  # fmt: skip
_FLOATS = ("mlp_ratio", "mask_ratio", "prediction_ratio")
_BOOLS = ("norm_pix_loss", "fusion", "fusion_input", "fusion_project", "decoder_self_attn")
_CHOICES = {"decoder": ("cross", "mae"), "fusion_weights": ("linear", "softmax")}


@dataclass
class AutoencoderConfig:
    """Architecture and objective of a MAE or CrossMAE model.

    `decoder="cross"` is CrossMAE: cross-attention decoder, partial reconstruction of a
    fraction `prediction_ratio` of all patches, inter-block feature fusion when `fusion`.
    `decoder="mae"` is the MAE baseline: self-attention over all L positions.
    """

    decoder: Literal["cross", "mae"] = "cross"
    img_size: int | tuple[int, int] = 224
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    decoder_dim: int = 512
    decoder_depth: int = 12
    decoder_heads: int = 16
    mask_ratio: float = 0.75
    prediction_ratio: float = 0.75
    norm_pix_loss: bool = True
    fusion: bool = True
    # Encoder blocks (0-based, negative from the end) the fusion reads; None means all, and
    # so does [-1] alone, as the authors' `--use_fm -1` (the last block alone is [depth - 1]).
    fusion_layers: list[int] | None = None
    fusion_input: bool = True
    fusion_weights: Literal["linear", "softmax"] = "linear"
    fusion_project: bool = False
    decoder_self_attn: bool = False

    @property
    def grid_size(self) -> tuple[int, int]:
        h, w = _pair(self.img_size)
        return h // self.patch_size, w // self.patch_size

    @property
    def num_patches(self) -> int:
        gh, gw = self.grid_size
        return gh * gw

    @property
    def uses_fusion(self) -> bool:
        return self.decoder == "cross" and self.fusion

    @property
    def encoder_final_norm(self) -> bool:
        """Fusion models normalise each decoder block's input instead of the encoder output."""
        return not self.uses_fusion

    @property
    def fusion_blocks(self) -> list[int]:
        """Sorted, non-negative encoder block indices the fusion reads."""
        layers = self.fusion_layers
        if layers is None or list(layers) == [-1]:
            return list(range(self.depth))
        return sorted({i if i >= 0 else self.depth + i for i in layers})

    def validate(self) -> AutoencoderConfig:
        """Raise CrossMAEError naming the first impossible setting."""
        self._check_types()
        for name in _INTS:
            if getattr(self, name) < 1:
                raise CrossMAEError(f"{name} must be at least 1, got {getattr(self, name)}")
        h, w = _pair(self.img_size)
        if h < 1 or w < 1:
            raise CrossMAEError(f"image size must be positive, got {h}x{w}")
        if self.mlp_ratio <= 0:
            raise CrossMAEError(f"mlp_ratio must be positive, got {self.mlp_ratio}")
        if int(min(self.embed_dim, self.decoder_dim) * self.mlp_ratio) < 1:
            raise CrossMAEError(f"mlp_ratio {self.mlp_ratio} leaves an MLP with no hidden unit")
        if h % self.patch_size or w % self.patch_size:
            raise CrossMAEError(
                f"image size {h}x{w} is not divisible by the patch size {self.patch_size}"
            )
        if not 0.0 < self.mask_ratio < 1.0:
            raise CrossMAEError(f"mask ratio must be between 0 and 1, got {self.mask_ratio}")
        if self.decoder == "cross" and not 0.0 < self.prediction_ratio <= self.mask_ratio:
            raise CrossMAEError(
                f"prediction ratio must be in (0, mask ratio {self.mask_ratio}], "
                f"got {self.prediction_ratio}"
            )
        for width, heads, what in (
            (self.embed_dim, self.num_heads, "encoder"),
            (self.decoder_dim, self.decoder_heads, "decoder"),
        ):
            if width % heads:
                raise CrossMAEError(f"{what} width {width} is not divisible by {heads} heads")
        if self.embed_dim % 4 or self.decoder_dim % 4:
            raise CrossMAEError("encoder and decoder widths must be divisible by 4")
        if self.norm_pix_loss and self.patch_size**2 * self.in_chans < 2:
            raise CrossMAEError(
                "norm_pix_loss normalises each patch by its spread, which one value per patch "
                "does not have; use a larger patch or norm_pix_loss=False"
            )
        if self.uses_fusion and any(
            not -self.depth <= i < self.depth for i in self.fusion_layers or []
        ):
            raise CrossMAEError(
                f"fusion layers {self.fusion_layers} are outside the {self.depth} encoder blocks"
            )
        if self.uses_fusion and not self.fusion_blocks and not self.fusion_input:
            raise CrossMAEError(
                "fusion over no layer: give fusion_layers an encoder block or set fusion_input"
            )
        self.ratios()
        return self

    def _check_types(self) -> None:
        """Settings from Python are not parsed: "64" would be read as a 6x4 image, "false" as
        true and a misspelt fusion_weights as the linear fusion."""
        for name in _INTS:
            if not _is_int(getattr(self, name)):
                raise CrossMAEError(f"{name} must be an int, got {getattr(self, name)!r}")
        for name in _FLOATS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise CrossMAEError(f"{name} must be a number, got {value!r}")
        for name in _BOOLS:
            if not isinstance(getattr(self, name), bool):
                raise CrossMAEError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                allowed = " or ".join(repr(c) for c in choices)
                raise CrossMAEError(f"{name} must be {allowed}, got {getattr(self, name)!r}")
        layers = self.fusion_layers
        if layers is not None and not (
            isinstance(layers, (list, tuple)) and all(map(_is_int, layers))
        ):
            raise CrossMAEError(f"fusion_layers must be a list of block indices, got {layers!r}")

    def ratios(
        self, mask_ratio: float | None = None, prediction_ratio: float | None = None
    ) -> tuple[float, float]:
        """(p, γ) for one forward pass: the config's unless overridden. MAE decodes every
        masked patch (γ = p); overriding CrossMAE's p alone caps its γ at the new p. Refused
        in one sentence when they leave no patch visible or none to decode and score."""
        p = self.mask_ratio if mask_ratio is None else mask_ratio
        if self.decoder != "cross":
            if prediction_ratio is not None and prediction_ratio != p:
                raise CrossMAEError(
                    "MAE decodes every masked patch; prediction_ratio is CrossMAE's setting"
                )
            gamma = p
        elif prediction_ratio is not None:
            gamma = prediction_ratio
        else:
            gamma = min(self.prediction_ratio, p)
        try:
            counts = mask_counts(self.num_patches, p, gamma)
        except ValueError as err:
            raise CrossMAEError(str(err)) from None
        if counts.decoded < 1:
            raise CrossMAEError(
                f"mask ratio {p} and prediction ratio {gamma} decode no patch out of "
                f"{self.num_patches}, so there is nothing to score (forward_features gives "
                "the tokens of the unmasked image)"
            )
        return p, gamma

    def replace(self, **changes: Any) -> AutoencoderConfig:
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise CrossMAEError(_unknown(unknown))
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if isinstance(out["img_size"], tuple):
            out["img_size"] = list(out["img_size"])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AutoencoderConfig:
        if not isinstance(data, dict):
            raise CrossMAEError(f"a model config is a dict, not a {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise CrossMAEError(_unknown(unknown))
        data = dict(data)
        if isinstance(data.get("img_size"), list):
            data["img_size"] = tuple(data["img_size"])
        return cls(**data)


def _unknown(names: set[str]) -> str:
    """Name the unknown settings, and the known one each was probably meant to be."""
    known = [f.name for f in dataclasses.fields(AutoencoderConfig)]
    guesses = {n: difflib.get_close_matches(n, known, n=1, cutoff=0.6) for n in sorted(names)}
    hints = [f"{n} (did you mean {g[0]}?)" if g else n for n, g in guesses.items()]
    return f"unknown model setting(s): {', '.join(hints)}"
