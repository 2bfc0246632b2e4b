"""Models: masking, encoder, decoders, the autoencoder, named configs, foreign checkpoints."""

from crossmae.models.autoencoder import AutoencoderOutput, MaskedAutoencoder
from crossmae.models.config import AutoencoderConfig
from crossmae.models.registry import create_model, get_config, list_models

__all__ = [
    "AutoencoderConfig",
    "AutoencoderOutput",
    "MaskedAutoencoder",
    "create_model",
    "get_config",
    "list_models",
]
