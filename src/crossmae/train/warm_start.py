"""`--init-from`: a new run that starts from another pretraining run's weights (continued
pretraining on one's own images from a released MAE / CrossMAE model).

Only the weights carry over; the optimizer, schedule and epochs start afresh (a `--resume`
continues all of them). The objective may change (mask ratio, γ, norm-pix loss), the
architecture may not: every weight must land where it was trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from crossmae.errors import CrossMAEError
from crossmae.models.autoencoder import MaskedAutoencoder
from crossmae.models.checkpoint import read_model
from crossmae.models.config import AutoencoderConfig

# Settings of the objective, not of the weights: a warm start may change them.
OBJECTIVE = ("mask_ratio", "prediction_ratio", "norm_pix_loss")


@dataclass(frozen=True)
class InitialWeights:
    state_dict: dict[str, torch.Tensor]
    description: str  # the file and its format, for the log


def read_initial_weights(path: str | Path, config: AutoencoderConfig) -> InitialWeights:
    """The weights of the pretraining checkpoint at `path` (ours or the authors'), checked
    against the architecture `config` describes: read before the data is opened, so a
    wrong file is refused before a long folder scan."""
    loaded = read_model(path)
    source = loaded.model
    if not isinstance(source, MaskedAutoencoder):
        raise CrossMAEError(
            f"--init-from {path} holds a ViT encoder or classifier, not a pretraining checkpoint "
            "with its decoder; give a MAE or CrossMAE pretraining checkpoint"
        )
    theirs, ours = _architecture(source.config), _architecture(config)
    for key, value in ours.items():
        if key not in OBJECTIVE and theirs.get(key) != value:
            wanted = theirs.get(key)
            fix = (f"add --model-overrides {key}={wanted}" if isinstance(wanted, int | float | str)
                   else "choose the --model and --model-overrides it was built with")  # fmt: skip
            raise CrossMAEError(
                f"--init-from {path} is another architecture ({key} is {wanted!r} there and "
                f"{value!r} here); {fix}"
            )
    return InitialWeights(source.state_dict(), f"{path} ({loaded.origin})")


def _architecture(config: AutoencoderConfig) -> dict[str, Any]:
    """The settings that shape the weights, the fused blocks spelled out (None and [-1]
    both mean every block, as the authors' `--use_fm -1`)."""
    out = config.to_dict()
    out["fusion_layers"] = config.fusion_blocks
    return out
