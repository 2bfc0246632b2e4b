"""Models: masking, encoder, decoders, the autoencoder, named configs, foreign checkpoints.

The names below are imported on first use (`crossmae.lazy`), so that the registry's names
and configs are read without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from crossmae.lazy import lazy_names

if TYPE_CHECKING:
    from crossmae.models.autoencoder import AutoencoderOutput, MaskedAutoencoder
    from crossmae.models.config import AutoencoderConfig
    from crossmae.models.registry import create_model, get_config, list_models

_MODULE_OF = {
    "AutoencoderOutput": "crossmae.models.autoencoder",
    "MaskedAutoencoder": "crossmae.models.autoencoder",
    "AutoencoderConfig": "crossmae.models.config",
    **dict.fromkeys(("create_model", "get_config", "list_models"), "crossmae.models.registry"),
}
__all__ = [
    "AutoencoderConfig",
    "AutoencoderOutput",
    "MaskedAutoencoder",
    "create_model",
    "get_config",
    "list_models",
]
__getattr__, __dir__ = lazy_names(__name__, _MODULE_OF, globals())
