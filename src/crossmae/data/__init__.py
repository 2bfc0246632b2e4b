"""Data: the built-in demo set, image folders, tar shards, MAE transforms, in-memory sets.

The names below are imported on first use (`crossmae.lazy`), so that `data.paths` checks a
--data path without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from crossmae.lazy import lazy_names

if TYPE_CHECKING:
    from crossmae.data.decode import DEFAULT_MAX_PIXELS, ImageSkipped, decode_image
    from crossmae.data.in_memory import InMemoryImages
    from crossmae.data.open_dataset import open_image_dataset
    from crossmae.data.transforms import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        eval_transform,
        model_input,
        pretrain_transform,
    )

_MODULE_OF = {
    **dict.fromkeys(("DEFAULT_MAX_PIXELS", "ImageSkipped", "decode_image"), "crossmae.data.decode"),
    "InMemoryImages": "crossmae.data.in_memory",
    "open_image_dataset": "crossmae.data.open_dataset",
    **dict.fromkeys(("IMAGENET_MEAN", "IMAGENET_STD", "eval_transform", "model_input",
                     "pretrain_transform"), "crossmae.data.transforms"),
}  # fmt: skip
__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageSkipped",
    "InMemoryImages",
    "decode_image",
    "eval_transform",
    "model_input",
    "open_image_dataset",
    "pretrain_transform",
]
__getattr__, __dir__ = lazy_names(__name__, _MODULE_OF, globals())
