"""Counting skipped items across DataLoader workers, and summarising them in one sentence.

Workers are separate processes, so their findings live in shared-memory tensors that the
main process reads in `report()`; a bad item is counted, never raised mid-epoch.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

import torch

from crossmae.data.decode import ImageSkipped

log = logging.getLogger("crossmae.data")

# Every reason an item can be skipped for, in the order reports list them.
REASONS = (
    "corrupt",
    "truncated",
    "empty",
    "too large",
    "unreadable",
    "not an image",
    "unsafe member",
    "no image",
    "bad label",
)


class ItemStatus:
    """One byte per item of a map-style set: 0 = not known bad, else 1 + reason index.

    A worker that finds item i bad marks it; every process then skips i without decoding
    it again, and epochs do not count it twice.
    """

    def __init__(self, size: int) -> None:
        self.codes = torch.zeros(size, dtype=torch.uint8).share_memory_()

    def mark(self, index: int, reason: str) -> None:
        self.codes[index] = REASONS.index(reason) + 1

    def is_bad(self, index: int) -> bool:
        return bool(self.codes[index])

    def merge(self, reduce_max: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Take in what other processes found (`reduce_max`: an all-reduce over ranks)."""
        self.codes.copy_(reduce_max(self.codes.int()).to(torch.uint8).cpu())

    def counts(self) -> Counter[str]:
        found = torch.bincount(self.codes.long(), minlength=len(REASONS) + 1).tolist()
        return Counter({reason: n for reason, n in zip(REASONS, found[1:], strict=True) if n})


class SlotCounts:
    """Items seen and skipped per reading slot (a shard, or a worker), in shared memory.

    Each slot is written by one process at a time. Rows are tagged with the epoch they
    count: the first write in a new epoch clears the row, and totals cover the newest
    epoch only (every pass, if the epoch never changes).
    """

    def __init__(self, slots: int) -> None:
        # Columns: epoch + 1 (0 = never written), items seen, one per reason.
        self.table = torch.zeros(slots, 2 + len(REASONS), dtype=torch.int64).share_memory_()

    def open(self, slot: int, epoch: int) -> None:
        if int(self.table[slot, 0]) != epoch + 1:
            self.table[slot].zero_()
            self.table[slot, 0] = epoch + 1

    def seen(self, slot: int) -> None:
        self.table[slot, 1] += 1

    def skip(self, slot: int, reason: str) -> None:
        self.table[slot, 2 + REASONS.index(reason)] += 1

    def totals(self) -> tuple[int, Counter[str]]:
        """(items seen, skips by reason) in the newest epoch any slot has counted."""
        newest = self.table[:, 0].max()
        rows = self.table[(self.table[:, 0] == newest) & (newest > 0)]
        sums = rows[:, 1:].sum(0).tolist()
        return sums[0], Counter({r: n for r, n in zip(REASONS, sums[1:], strict=True) if n})


class WarnOnce:
    """Logs the first skip of each reason in each process (main or worker); later ones are
    only counted, so a bad data set costs a few log lines, not one per file."""

    def __init__(self) -> None:
        self._warned: set[tuple[int, str]] = set()

    def __call__(self, what: str, name: str, skip: ImageSkipped) -> None:
        key = (os.getpid(), skip.reason)
        if key not in self._warned:
            self._warned.add(key)
            log.warning(
                "%s: skipped %s (%s); further %r skips in this process are only counted, "
                "see dataset.report()", what, name, skip, skip.reason,
            )  # fmt: skip


def format_report(
    counts: Mapping[str, int], total: int, unit: str = "files", notes: Iterable[str] = ()
) -> str | None:
    """'skipped 3 of 1,000 files: 1 corrupt, 1 truncated, 1 empty', or None if all is well."""
    parts = []
    skipped = sum(counts.values())
    if skipped:
        reasons = ", ".join(f"{counts[r]:,} {r}" for r in REASONS if counts.get(r))
        parts.append(f"skipped {skipped:,} of {total:,} {unit}: {reasons}")
    parts.extend(notes)
    return "; ".join(parts) or None
