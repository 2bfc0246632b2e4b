"""RunContext: a resumed run's random streams, per rank."""

import numpy as np
import torch

from crossmae.eval.run import RunContext
from crossmae.train.checkpointing import capture_rng, seed_everything
from crossmae.train.distributed import DistInfo


def _context(rank: int, tmp_path) -> RunContext:
    dist = DistInfo(rank, 2, rank, torch.device("cpu"), rank == 0)
    return RunContext(dist, "fp32", tmp_path, seed=5)


def test_rank_0_continues_its_saved_streams_and_other_ranks_draw_their_own(tmp_path):
    """Only rank 0's state is in the checkpoint; given it, every rank would draw the same
    mixup boxes and augmentations."""
    seed_everything(5)
    saved = capture_rng()
    expected = (torch.rand(3), np.random.rand(3))
    _context(0, tmp_path).resume_rng(saved, epoch=3)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    _context(1, tmp_path).resume_rng(saved, epoch=3)
    other = (torch.rand(3), np.random.rand(3))
    assert not torch.equal(other[0], expected[0])
    assert not np.array_equal(other[1], expected[1])
    _context(1, tmp_path).resume_rng(saved, epoch=3)  # seeded by (seed, rank, epoch)
    assert torch.equal(torch.rand(3), other[0])
    _context(1, tmp_path).resume_rng(saved, epoch=4)
    assert not torch.equal(torch.rand(3), other[0])
