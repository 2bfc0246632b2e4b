"""Data: the built-in demo set, image folders, tar shards, MAE transforms, in-memory sets."""

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
