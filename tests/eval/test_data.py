"""Training batches cut into epochs of a known number of steps."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from crossmae.errors import CrossMAEError
from crossmae.eval.data import EpochBatches, make_loader
from crossmae.train.distributed import DistInfo


def _loader(n: int) -> DataLoader:
    data = TensorDataset(torch.randn(n, 3, 4, 4), torch.randint(0, 2, (n,)))
    return DataLoader(data, batch_size=4, shuffle=True, drop_last=True)


def test_an_epoch_longer_than_the_data_goes_round_again():
    """12 images, --samples-per-epoch 28: 7 steps, not the 3 one pass gives (the schedule
    counts on 7, and under torchrun a rank stopping early hangs the others)."""
    batches = EpochBatches(_loader(12), num_classes=2, samples_per_epoch=28, global_batch=4)
    assert batches.steps_per_epoch == 7
    assert len(list(batches.epoch(0))) == 7


def test_data_without_a_full_batch_is_one_sentence():
    batches = EpochBatches(_loader(3), num_classes=2, samples_per_epoch=8, global_batch=4)
    with pytest.raises(CrossMAEError, match="no full batch of 4 images to each process"):
        list(batches.epoch(0))


def test_no_more_workers_than_cores(monkeypatch):
    """More only queue up for the cores this process may use (and torch warns about each
    loader): 2 here, of however many the machine has."""
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)  # taskset
    monkeypatch.setattr("os.cpu_count", lambda: 2)  # where there is no affinity
    dataset = TensorDataset(torch.randn(8, 3), torch.arange(8))
    cpu = DistInfo(0, 1, 0, torch.device("cpu"), True)
    assert make_loader(dataset, 4, cpu, train=True, num_workers=4).num_workers == 2
    assert make_loader(dataset, 4, cpu, train=False, num_workers=1).num_workers == 1
