"""The kNN monitor: a fixed, capped subset of each split, drawn by the run's seed."""

import torch
from torch.utils.data import Dataset

from crossmae.train.online_knn import OnlineKNN


class Numbered(Dataset):
    """Image i is a constant image of value i, labelled i % 2."""

    num_classes = 2

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.full((3, 8, 8), float(i)), i % 2


def drawn(knn: OnlineKNN) -> list[list[int]]:
    return [[int(split[i][0][0, 0, 0]) for i in range(len(split))] for split in knn.splits]


def test_each_split_is_capped_and_fixed_by_the_seed():
    train, evaluate = Numbered(50), Numbered(50)
    first = drawn(OnlineKNN(train, evaluate, max_images=20, seed=1))
    assert [len(ids) for ids in first] == [20, 20]
    assert all(len(set(ids)) == 20 for ids in first)
    assert first[0] != first[1]  # the two splits draw differently
    assert drawn(OnlineKNN(train, evaluate, max_images=20, seed=1)) == first
    assert drawn(OnlineKNN(train, evaluate, max_images=20, seed=2)) != first


def test_a_small_split_is_used_whole():
    knn = OnlineKNN(Numbered(50), Numbered(12), max_images=20)
    assert drawn(knn)[1] == list(range(12))


def test_features_are_computed_in_the_training_precision():
    """On a GPU the monitor runs in the step's bf16, not in fp32 (about 3x slower)."""
    seen = []

    class Encoder(torch.nn.Module):
        def forward_features(self, images):
            seen.append(
                torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
            )
            return torch.stack([images.flatten(1)[:, :4]] * 2, dim=1)

    knn = OnlineKNN(Numbered(6), Numbered(4), k=2)
    bf16 = lambda: torch.autocast("cpu", torch.bfloat16)  # noqa: E731
    knn.accuracy(Encoder(), torch.device("cpu"), bf16)
    assert seen == [torch.bfloat16, torch.bfloat16]
    knn.accuracy(Encoder(), torch.device("cpu"))
    assert seen[2:] == [None, None]
