"""CrossMAE and MAE masked autoencoders, numerically faithful to the authors' code.

The names below are imported on first use (`crossmae.lazy`): the CLI answers `--help` and
bad flags without waiting for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from crossmae.errors import CrossMAEError
from crossmae.lazy import lazy_names

if TYPE_CHECKING:
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

_MODULE_OF = {
    **dict.fromkeys(
        ("AutoencoderConfig", "AutoencoderOutput", "MaskedAutoencoder", "create_model",
         "get_config", "list_models"), "crossmae.models"),
    **dict.fromkeys(("LoadedModel", "load_model", "read_model", "save_model"),
                    "crossmae.models.checkpoint"),
    **dict.fromkeys(("convert_official_state_dict", "load_official_checkpoint"),
                    "crossmae.models.official"),
}  # fmt: skip
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
__getattr__, __dir__ = lazy_names(__name__, _MODULE_OF, globals())
