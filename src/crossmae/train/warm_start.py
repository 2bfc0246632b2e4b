"""`--init-from`: a new run that starts from another model's weights (continued pretraining
on one's own images from a released MAE / CrossMAE model, or a CrossMAE decoder trained on
a released MAE encoder).

Only the weights carry over; the optimizer, schedule and epochs start afresh (a `--resume`
continues all of them). From a pretraining checkpoint every weight carries over: the
objective may change (mask ratio, γ, norm-pix loss), the architecture may not. From a ViT
(an encoder such as MAE's `mae_pretrain_vit_base.pth`, a timm export, a classifier) the
encoder's weights do, and the decoder starts fresh.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer

from crossmae.data.transforms import size_pair
from crossmae.errors import CrossMAEError
from crossmae.models.autoencoder import MaskedAutoencoder
from crossmae.models.checkpoint import read_model
from crossmae.models.classifier import ViTArch
from crossmae.models.config import AutoencoderConfig

# Settings of the objective, not of the weights: a warm start may change them.
OBJECTIVE = ("mask_ratio", "prediction_ratio", "norm_pix_loss")
# A ViT's weights that no autoencoder encoder has: a classifier's pooling norm and head.
_NOT_ENCODER = ("encoder.head.", "encoder.fc_norm.")


@dataclass(frozen=True)
class InitialWeights:
    """Weights to copy into a new model: all of them, or (`fresh`) all but these."""

    state_dict: dict[str, torch.Tensor]
    description: str  # the file, its format and what starts fresh, for the log
    fresh: tuple[str, ...] = ()  # prefixes of the model's weights left as initialised

    def load_into(self, model: MaskedAutoencoder) -> None:
        missing, unexpected = model.load_state_dict(self.state_dict, strict=False)
        left = [k for k in missing if not k.startswith(self.fresh)]
        if left or unexpected:  # the architecture was checked: a bug, not a user's file
            raise RuntimeError(f"initial weights do not fit: missing {left}, extra {unexpected}")


def read_initial_weights(path: str | Path, config: AutoencoderConfig) -> InitialWeights:
    """The weights in `path` (any checkpoint `read_model` reads) for a model of `config`,
    checked against its architecture: read before the data is opened, so a wrong file is
    refused before a long folder scan."""
    loaded = read_model(path)
    source = loaded.model
    where = f"{path} ({loaded.origin})"
    if isinstance(source, VisionTransformer):
        return _encoder_weights(source, config, path, where)
    if not isinstance(source, MaskedAutoencoder):
        raise CrossMAEError(f"--init-from {path} holds a {type(source).__name__}, not a model")
    _check_same(_architecture(source.config), _architecture(config), path)
    return InitialWeights(source.state_dict(), where)


def _encoder_weights(
    vit: VisionTransformer, config: AutoencoderConfig, path: str | Path, where: str
) -> InitialWeights:
    theirs, ours = ViTArch.from_vit(vit).to_dict(), ViTArch.from_config(config).to_dict()
    _check_same(theirs, ours, path)
    state = {f"encoder.{k}": v for k, v in vit.state_dict().items()}
    unused = sorted({k.split(".")[1] for k in state if k.startswith(_NOT_ENCODER)})
    fresh = ["decoder"]
    if "encoder.norm.weight" not in state and config.encoder_final_norm:
        fresh.append("encoder.norm")  # the source was fusion-trained, or pools with fc_norm
    if "encoder.norm.weight" in state and not config.encoder_final_norm:
        unused.append("norm")  # fusion reads the blocks, not a final norm
    state = {k: v for k, v in state.items()
             if not k.startswith(_NOT_ENCODER) and k.split(".")[1] not in unused}  # fmt: skip
    said = f"{where}: the encoder; fresh: {', '.join(fresh)}"
    said += f"; not used: {', '.join(unused)}" if unused else ""
    return InitialWeights(state, said, tuple(f"{p}." for p in fresh))


def _check_same(theirs: dict[str, Any], ours: dict[str, Any], path: str | Path) -> None:
    for key, value in ours.items():
        if key not in OBJECTIVE and theirs.get(key) != value:
            wanted = theirs.get(key)
            fix = "choose the --model and --model-overrides it was built with"
            if key == "img_size":  # --img-size overrides --model-overrides
                fix = f"pass --img-size {wanted[0]}" if wanted[0] == wanted[1] else fix
            elif isinstance(wanted, int | float | str):
                fix = f"add --model-overrides {key}={wanted}"
            raise CrossMAEError(
                f"--init-from {path} is another architecture ({key} is {wanted!r} there and "
                f"{value!r} here); {fix}"
            )


def _architecture(config: AutoencoderConfig) -> dict[str, Any]:
    """The settings that shape the weights, spelled one way: the image size as a pair, the
    fused blocks listed (None and [-1] both mean every block, as the authors' `--use_fm
    -1`), and the fusion and self-attention settings only where the decoder has them."""
    out = config.to_dict()
    out["img_size"] = list(size_pair(config.img_size))
    out["fusion"] = config.uses_fusion
    if config.uses_fusion:
        out["fusion_layers"] = config.fusion_blocks
    else:
        for key in ("fusion_layers", "fusion_input", "fusion_weights", "fusion_project"):
            del out[key]
    if config.decoder == "mae":
        del out["decoder_self_attn"]
    return out
