"""`random_subset`: a fixed draw by seed that keeps what the data set says about itself."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset, IterableDataset

from crossmae.data.subset import ImageSubset, random_subset
from crossmae.errors import CrossMAEError


class Numbers(Dataset):
    def __init__(self) -> None:
        self.classes = ["even", "odd"]
        self.description = "numbers"

    def __len__(self) -> int:
        return 100

    def __getitem__(self, i: int) -> tuple[int, int]:
        return i, i % 2

    def report(self) -> str:
        return "nothing skipped"


def test_subset_is_fixed_by_seed_and_in_file_order():
    first = random_subset(Numbers(), 10, seed=3, what="train")
    again = random_subset(Numbers(), 10, seed=3, what="train")
    other = random_subset(Numbers(), 10, seed=4, what="train")
    items = [first[i][0] for i in range(len(first))]
    assert len(first) == 10 and items == sorted(items) and len(set(items)) == 10
    assert items == [again[i][0] for i in range(10)]
    assert items != [other[i][0] for i in range(10)]


def test_subset_keeps_classes_description_and_report():
    subset = random_subset(Numbers(), 10, seed=0, what="train")
    assert isinstance(subset, ImageSubset)
    assert subset.classes == ["even", "odd"] and subset.description == "numbers"
    assert subset.report() == "nothing skipped"
    assert getattr(subset, "transform", None) is None


def test_no_count_or_a_count_past_the_end_keeps_everything():
    numbers = Numbers()
    assert random_subset(numbers, None, 0, "train") is numbers
    assert random_subset(numbers, 500, 0, "train") is numbers


def test_impossible_subsets_say_why():
    with pytest.raises(CrossMAEError, match="at least one image, got 0"):
        random_subset(Numbers(), 0, 0, "train")

    class Stream(IterableDataset):
        def __iter__(self):
            yield torch.zeros(1)

    with pytest.raises(CrossMAEError, match="needs a folder data set, not shards"):
        random_subset(Stream(), 5, 0, "train")


def test_asking_for_more_images_than_there_are_uses_all_and_says_so(caplog):
    with caplog.at_level("WARNING"):
        assert isinstance(random_subset(Numbers(), 100, 0, "train", "--train-images"), Numbers)
    assert caplog.text == ""  # exactly all of them: nothing to say
    with caplog.at_level("WARNING"):
        everything = random_subset(Numbers(), 999_999, 0, "train", "--train-images")
    assert isinstance(everything, Numbers) and len(everything) == 100
    assert "--train-images 999,999 is more than the 100 train images there" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        random_subset(Numbers(), 999_999, 0, "kNN monitor's train")  # a cap, not a request
    assert caplog.text == ""
