"""Layer-wise learning-rate decay (BEiT / MAE fine-tuning): deeper layers learn faster."""

from __future__ import annotations

from collections.abc import Callable

from crossmae.errors import CrossMAEError

_EMBEDDINGS = ("cls_token", "pos_embed", "reg_token", "patch_embed")


def layer_id(name: str, depth: int) -> int:
    """Depth of a ViT parameter: 0 for embeddings, i + 1 for block i, depth + 1 for the head.

    Everything after the blocks (final norm, fc_norm, head) shares the top layer, as in
    MAE's `param_groups_lrd`.
    """
    if name.startswith(_EMBEDDINGS):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def layer_decay_scales(depth: int, decay: float) -> Callable[[str], float]:
    """name -> lr multiplier `decay ** (depth + 1 - layer_id)`: 1 for the head, `decay` for
    the last block, `decay ** (depth + 1)` for the embeddings."""
    if not 0.0 < decay <= 1.0:
        raise CrossMAEError(f"layer decay must be in (0, 1], got {decay}")
    top = depth + 1
    return lambda name: decay ** (top - layer_id(name, depth))
