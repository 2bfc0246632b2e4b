"""Bytes to a PIL image of the wanted mode, or an `ImageSkipped` that says exactly why not.

Every data set decodes through `decode_image`, so one function holds all the defences:
empty input, undecodable or truncated data, decompression bombs (checked from the header,
before any pixel is decoded) and odd pixel modes (16-bit, CMYK, palette, alpha).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from crossmae.errors import CrossMAEError

# Largest image (in pixels) decoded by default; Pillow's own hard stop at
# 2 * Image.MAX_IMAGE_PIXELS (about 179M pixels) applies as well and counts as "too large".
DEFAULT_MAX_PIXELS = 2**28
# Encoded files larger than this are not even read into memory.
MAX_ENCODED_BYTES = 2**30
# The file types torchvision's ImageFolder accepts.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


class ImageSkipped(Exception):
    """An item that cannot be used; `reason` is one of `crossmae.data.skips.REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def image_mode(in_chans: int) -> str:
    """The PIL mode a model with `in_chans` input channels reads."""
    if in_chans not in (1, 3):
        raise CrossMAEError(
            f"image files give 1 or 3 channels, not in_chans={in_chans}; "
            "multispectral input needs a data set that yields tensors"
        )
    return "L" if in_chans == 1 else "RGB"


def decode_image(
    data: bytes, mode: str = "RGB", max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Decode `data` to a loaded image in `mode` ("RGB" or "L"); raise ImageSkipped otherwise.

    Never raises anything else: Pillow's plugins fail with many exception types on
    damaged input (OSError, SyntaxError, ValueError, struct.error, ...), all meaning
    "corrupt" or "truncated" here.
    """
    if not data:
        raise ImageSkipped("empty")
    with warnings.catch_warnings():
        # Pillow warns about large or odd images; the decision and the count are ours.
        warnings.simplefilter("ignore")
        try:
            img = Image.open(io.BytesIO(data))  # reads the header only
        except Image.DecompressionBombError as err:
            raise ImageSkipped("too large", str(err)) from None
        except Exception as err:
            raise ImageSkipped(_classify(err), _describe(err)) from None
        width, height = img.size
        if width * height > max_pixels:
            raise ImageSkipped("too large", f"{width}x{height} is over {max_pixels:,} pixels")
        try:
            img.load()
            return _convert(img, mode)
        except Exception as err:
            raise ImageSkipped(_classify(err), _describe(err)) from None


def _convert(img: Image.Image, mode: str) -> Image.Image:
    if img.mode in _WIDE_MODES:
        img = _to_8bit(img)
    return img if img.mode == mode else img.convert(mode)


def _to_8bit(img: Image.Image) -> Image.Image:
    """Scale 16-bit / integer / float grey to 8 bits; Pillow's convert clips them at 255."""
    values = np.asarray(img, dtype=np.float64)
    peak = float(values.max(initial=0.0))
    if img.mode == "F" and peak <= 1.0:
        full = 1.0
    elif img.mode.startswith("I;16") or peak > 255:
        full = 65535.0
    else:
        full = 255.0
    scaled = np.clip(np.rint(values * (255.0 / full)), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def _classify(err: BaseException) -> str:
    # Pillow words it "image file is truncated" or "Truncated File Read", by where it ends
    truncated = isinstance(err, EOFError) or "truncated" in str(err).lower()
    return "truncated" if truncated else "corrupt"


def _describe(err: BaseException) -> str:
    if isinstance(err, UnidentifiedImageError):
        return "not a format Pillow can read"
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
