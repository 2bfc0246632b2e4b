import numpy as np
import pytest
import torch
from PIL import Image

from crossmae.errors import CrossMAEError
from crossmae.viz.images import denormalize, load_files, pixel_stats, sample_dataset


def test_denormalize_inverts_the_imagenet_normalisation():
    pixels = torch.rand(2, 3, 8, 8)
    mean, std = pixel_stats(3)
    torch.testing.assert_close(denormalize((pixels - mean) / std), pixels)
    assert denormalize(torch.randn(1, 1, 4, 4) * 10).amin() >= 0  # clamped, grey works


def test_load_files_gives_the_model_resolution(tmp_path):
    arr = np.random.default_rng().integers(0, 256, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "wide.png")
    batch = load_files([tmp_path / "wide.png"], (32, 32), 3)
    assert batch.imgs.shape == (1, 3, 32, 32)
    assert batch.names == [str(tmp_path / "wide.png")]
    grey = load_files([tmp_path / "wide.png"], (16, 16), 1)
    assert grey.imgs.shape == (1, 1, 16, 16)


def test_load_files_reports_unreadable_files(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(CrossMAEError, match="cannot use image"):
        load_files([tmp_path / "bad.png"], (32, 32), 3)


def test_sample_dataset_is_reproducible_per_seed(image_folder):
    a = sample_dataset(str(image_folder), "test", 3, 7, (32, 32), 3)
    b = sample_dataset(str(image_folder), "test", 3, 7, (32, 32), 3)
    assert a.names == b.names and torch.equal(a.imgs, b.imgs)
    assert a.imgs.shape == (3, 3, 32, 32)
    others = {
        tuple(sample_dataset(str(image_folder), "test", 3, s, (32, 32), 3).names) for s in range(8)
    }
    assert len(others) > 1


def test_builtin_demo_set():
    batch = sample_dataset("builtin", "test", 2, 0, (32, 32), 3)
    assert batch.imgs.shape == (2, 3, 32, 32) and batch.imgs.std() > 0.1


def test_sample_dataset_passes_over_bad_images_instead_of_naming_them(tmp_path):
    rng = np.random.default_rng()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png"
        )
        (tmp_path / f"{i}_bad.png").write_bytes(b"not an image")
    batch = sample_dataset(str(tmp_path), "test", 3, 0, (32, 32), 3)
    assert batch.names == [str(tmp_path / f"{i}.png") for i in range(3)]
    assert len(set(map(bytes, (img.numpy().tobytes() for img in batch.imgs)))) == 3  # no repeats
    with pytest.raises(CrossMAEError, match="has only 3 that decode"):
        sample_dataset(str(tmp_path), "test", 4, 0, (32, 32), 3)
