"""Many byte strings in two numpy arrays.

A list of a million Python strings is slowly copied into every forked DataLoader worker
(touching refcounts dirties the pages); two flat arrays are shared for free.
"""

from __future__ import annotations

import numpy as np


class Packed:
    """Byte strings stored back to back; item i is `data[offsets[i]:offsets[i + 1]]`."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray) -> None:
        self.data = data
        self.offsets = offsets

    @classmethod
    def from_list(cls, items: list[bytes]) -> Packed:
        offsets = np.cumsum([0] + [len(item) for item in items], dtype=np.int64)
        return cls(np.frombuffer(b"".join(items), dtype=np.uint8), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> bytes:
        return self.data[self.offsets[index] : self.offsets[index + 1]].tobytes()
