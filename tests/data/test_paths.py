"""`check_data_path`: what a --data path names, judged without opening it."""

import re

import pytest

from crossmae.data.paths import check_data_path
from crossmae.errors import CrossMAEError


def test_paths_that_can_hold_images_pass(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no folder named "builtin" here
    (tmp_path / "a.tar").touch()
    for path in (None, "builtin", tmp_path, tmp_path / "a.tar", "shards-{000..009}.tar",
                 str(tmp_path / "*.tar")):  # fmt: skip
        check_data_path(path)


def test_paths_that_cannot_hold_images_are_one_sentence(tmp_path):
    missing = re.escape(str(tmp_path / "nope"))
    with pytest.raises(CrossMAEError, match=f"^data path {missing} does not exist$"):
        check_data_path(tmp_path / "nope")
    with pytest.raises(CrossMAEError, match=r"^--eval-data .*nope does not exist$"):
        check_data_path(tmp_path / "nope", "--eval-data")
    (image := tmp_path / "cat.jpg").touch()
    with pytest.raises(CrossMAEError, match=r"cat\.jpg is a file; give an image folder or \.tar"):
        check_data_path(image)
