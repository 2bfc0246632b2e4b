"""CrossMAE and MAE masked autoencoders, numerically faithful to the authors' code."""

from crossmae.errors import CrossMAEError
from crossmae.models import (
    AutoencoderConfig,
    AutoencoderOutput,
    MaskedAutoencoder,
    create_model,
    get_config,
    list_models,
)
from crossmae.models.checkpoint import LoadedModel, load_model, read_model, save_model
from crossmae.models.official import convert_official_state_dict, load_official_checkpoint

__version__ = "0.1.0"

__all__ = [
    "AutoencoderConfig",
    "AutoencoderOutput",
    "CrossMAEError",
    "LoadedModel",
    "MaskedAutoencoder",
    "convert_official_state_dict",
    "create_model",
    "get_config",
    "list_models",
    "load_model",
    "load_official_checkpoint",
    "read_model",
    "save_model",
]
