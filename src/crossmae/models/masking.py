"""Random masking as index tensors: visible / masked-not-decoded / decoded patches.

Pure functions with static output shapes (the counts depend only on Python numbers), so a
training step compiles into one graph and never waits on the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from crossmae.models.mask_counts import mask_counts


@dataclass
class Masking:
    """Patch indices of one masking draw; every patch is in exactly one of the three groups."""

    ids_visible: torch.Tensor  # (B, n_visible), in noise order (the order the encoder sees)
    ids_skipped: torch.Tensor  # (B, n_skipped), masked but not reconstructed
    ids_decoded: torch.Tensor  # (B, n_decoded), ascending (raster order)
    ids_shuffle: torch.Tensor  # (B, L), patches ranked by ascending noise
    num_patches: int

    @property
    def ids_masked(self) -> torch.Tensor:
        """(B, n_skipped + n_decoded) masked patches in noise order."""
        return self.ids_shuffle[:, self.ids_visible.shape[1] :]

    def indicator(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) float mask with 1 at `ids`."""
        out = torch.zeros(ids.shape[0], self.num_patches, device=ids.device)
        return out.scatter_(1, ids, 1.0)


def random_masking(
    noise: torch.Tensor, mask_ratio: float, prediction_ratio: float | None = None
) -> Masking:
    """Rank patches by ascending `noise` (B, L): the lowest are visible, the highest decoded.

    `prediction_ratio` (γ, the reference's `kept_mask_ratio`) is the fraction of ALL patches
    to reconstruct; `None` means every masked patch (γ = mask ratio, as MAE).
    """
    length = noise.shape[1]
    gamma = mask_ratio if prediction_ratio is None else prediction_ratio
    counts = mask_counts(length, mask_ratio, gamma)
    ids_shuffle = torch.argsort(noise, dim=1)
    start_decoded = counts.visible + counts.skipped
    ids_decoded, _ = torch.sort(ids_shuffle[:, start_decoded:], dim=1)
    return Masking(
        ids_visible=ids_shuffle[:, : counts.visible],
        ids_skipped=ids_shuffle[:, counts.visible : start_decoded],
        ids_decoded=ids_decoded,
        ids_shuffle=ids_shuffle,
        num_patches=length,
    )


def gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """x (B, L, D) at ids (B, n) -> (B, n, D)."""
    return torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
