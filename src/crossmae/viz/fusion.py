"""The learned inter-block fusion weights of a CrossMAE model, labelled by encoder layer."""

from __future__ import annotations

import torch

from crossmae.errors import CrossMAEError
from crossmae.models.autoencoder import MaskedAutoencoder


def fusion_weights(model: MaskedAutoencoder) -> tuple[torch.Tensor, list[str]]:
    """(decoder_depth, k) applied mixing weights and a label per column ("input", then the
    1-based encoder block), in the order the fusion reads them."""
    c = model.config
    if not c.uses_fusion:
        raise CrossMAEError(
            "this model has no feature fusion (MAE decoder or fusion=False); "
            "--fusion-weights needs a CrossMAE model trained with fusion"
        )
    columns = ["input"] if c.fusion_input else []
    columns += [str(i + 1) for i in c.fusion_blocks]
    return model.decoder.fusion.mixing_matrix().detach(), columns
