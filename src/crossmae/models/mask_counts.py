"""How many patches a masking draw leaves visible, skips and decodes: Python arithmetic on
the config's numbers, shared by config validation (no torch needed to read a config) and
`masking` (the index tensors' static shapes)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MaskCounts:
    """How many of the L patches fall in each group; the rounding is the reference's."""

    visible: int
    skipped: int
    decoded: int


def mask_counts(num_patches: int, mask_ratio: float, prediction_ratio: float) -> MaskCounts:
    """Counts for L patches: `int(L*(1-p))` visible, `int(L*(p-γ))` skipped, the rest decoded."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {mask_ratio}")
    if not 0.0 <= prediction_ratio <= mask_ratio:
        raise ValueError(
            f"prediction ratio must be in [0, mask ratio {mask_ratio}], got {prediction_ratio}"
        )
    visible = int(num_patches * (1 - mask_ratio))
    skipped = int(num_patches * (mask_ratio - prediction_ratio))
    if visible < 1:
        raise ValueError(f"mask ratio {mask_ratio} leaves no visible patch out of {num_patches}")
    return MaskCounts(visible, skipped, num_patches - visible - skipped)
