"""InMemoryImages: decoding once, and deterministic, resumable, sharded augmented epochs."""

import numpy as np
import pytest
import torch

from crossmae.data import IMAGENET_MEAN, IMAGENET_STD, InMemoryImages, open_image_dataset
from crossmae.errors import CrossMAEError

N = 37


@pytest.fixture
def images():
    """37 random 8x8 images; the label of each is its own index, to trace it through batches."""
    pixels = torch.randint(0, 256, (N, 3, 8, 8), dtype=torch.uint8)
    return InMemoryImages(pixels, torch.arange(N))


def epoch(data: InMemoryImages, seed: int, **options) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(data.batches(generator=torch.Generator().manual_seed(seed), **options))


def test_from_dataset_decodes_once_exactly():
    demo = open_image_dataset(None, "test")
    data = InMemoryImages.from_dataset(demo, 32, device="cpu")
    assert data.images.shape == (1000, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.labels.tolist() == demo.labels.tolist()
    assert data.classes == demo.classes and data.num_classes == 10
    for i in (0, 999):
        assert np.array_equal(data.images[i].permute(1, 2, 0).numpy(), np.asarray(demo[i][0]))


def test_from_dataset_leaves_the_global_generator_alone():
    """Pretraining seeds, loads the data, then builds the model: a draw here changed the
    initial weights with the data path (in memory or not)."""
    torch.manual_seed(0)
    InMemoryImages.from_dataset(open_image_dataset(None, "test"), 8, device="cpu")
    after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(3))


def test_from_dataset_fits_other_sizes_and_grey(tmp_path, random_image, encode):
    for i, (h, w) in enumerate([(40, 24), (24, 40), (16, 16)]):
        (tmp_path / f"{i}.png").write_bytes(encode(random_image(h, w), "PNG"))
    data = InMemoryImages.from_dataset(open_image_dataset(tmp_path), (16, 12), in_chans=1)
    assert data.images.shape == (3, 1, 16, 12)
    assert data.labels.tolist() == [-1, -1, -1] and data.classes is None
    x, _ = next(data.batches(2, torch.Generator().manual_seed(0)))
    assert x.shape == (2, 1, 16, 12)


def test_bad_files_are_left_out_not_held_twice(tmp_path, random_image, encode):
    """Training replaces a bad image by the next good one; held in memory, that stand-in
    would be a second copy of its neighbour for the whole run."""
    good = [random_image(16, 16) for _ in range(4)]
    for i, img in enumerate(good):
        (tmp_path / f"{i}a.png").write_bytes(encode(img, "PNG"))
    (tmp_path / "0b.png").write_bytes(b"not an image")
    (tmp_path / "2b.png").write_bytes(b"")
    dataset = open_image_dataset(tmp_path)
    data = InMemoryImages.from_dataset(dataset, 16, device="cpu")
    assert data.images.shape[0] == 4 and len(set(map(bytes, data.images.numpy()))) == 4
    assert "skipped 2 of 6 files" in dataset.report() and dataset.replace_bad  # as it was


def test_batches_are_deterministic_normalised_and_augmented(images):
    first, again, other = (epoch(images, seed, batch_size=8) for seed in (5, 5, 6))
    assert len(first) == images.num_batches(8) == 4
    for (x, y), (x2, y2) in zip(first, again, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(first[0][0], other[0][0])
    x, y = first[0]
    assert x.shape == (8, 3, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert (x >= -mean / std - 1e-5).all() and (x <= (1 - mean) / std + 1e-5).all()
    plain = (images.images[y].float() / 255 - mean) / std
    assert not torch.allclose(x, plain, atol=1e-3)  # cropped, resized and flipped
    x, y = epoch(images, 5, batch_size=8, augment=False)[0]
    torch.testing.assert_close(x, (images.images[y].float() / 255 - mean) / std)


def test_each_image_once_per_epoch(images):
    batches = epoch(images, 0, batch_size=8, drop_last=False)
    assert [len(y) for _, y in batches] == [8, 8, 8, 8, 5]
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == list(range(N))
    kept = torch.cat([y for _, y in epoch(images, 0, batch_size=8)])
    assert len(kept) == 32 and len(set(kept.tolist())) == 32


def test_start_batch_continues_the_epoch_exactly(images):
    full = epoch(images, 11, batch_size=5)
    resumed = epoch(images, 11, batch_size=5, start_batch=3)
    assert len(resumed) == len(full) - 3
    for (x, y), (x2, y2) in zip(full[3:], resumed, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)


@pytest.mark.parametrize("drop_last", [True, False])
def test_ranks_get_disjoint_shards_of_one_permutation(images, drop_last):
    world = 3
    per_rank = [
        torch.cat(
            [
                y
                for _, y in epoch(
                    images, 4, batch_size=4, rank=r, world_size=world, drop_last=drop_last
                )
            ]
        )
        for r in range(world)
    ]
    steps = images.num_batches(4, drop_last, world)
    assert all(len(y) == (steps * 4 if drop_last else 13) for y in per_rank)
    seen = torch.cat(per_rank).tolist()
    if drop_last:
        assert len(set(seen)) == len(seen) == world * steps * 4  # disjoint
    else:
        assert set(seen) == set(range(N)) and len(seen) == 39  # two wrap around, as in DDP


def test_from_dataset_wants_pil_images():
    with pytest.raises(CrossMAEError, match="without transform"):
        InMemoryImages.from_dataset(open_image_dataset(None, "test", transform=np.asarray), 32)


def test_bad_batching_is_a_clear_error(images):
    generator = torch.Generator()
    with pytest.raises(CrossMAEError, match="smaller batch"):
        images.batches(64, generator)  # raised at the call, not at the first batch
    with pytest.raises(CrossMAEError, match="start_batch"):
        images.batches(8, generator, start_batch=5)
    with pytest.raises(CrossMAEError, match="rank"):
        images.batches(8, generator, rank=2, world_size=2)
    with pytest.raises(CrossMAEError, match="batch_size"):
        images.batches(0, generator)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_batches_do_not_sync_with_the_host():
    pixels = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8, device="cuda")
    data = InMemoryImages(pixels, torch.arange(64, device="cuda"))
    batches = data.batches(16, torch.Generator("cuda").manual_seed(0))
    first = next(batches)  # the epoch's set-up may synchronise once
    torch.cuda.set_sync_debug_mode("error")
    try:
        rest = list(batches)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert first[0].is_cuda and len(rest) == 3


def test_half_the_augmented_images_are_flipped():
    """Ramps brightening to the right: after any crop and resize they still brighten to the
    right, unless flipped."""
    ramp = torch.linspace(0, 255, 16).round().to(torch.uint8).expand(3, 16, 16)
    data = InMemoryImages(ramp.expand(2000, -1, -1, -1).contiguous(), torch.zeros(2000))
    x = torch.cat([x for x, _ in epoch(data, 3, batch_size=500)])
    flipped = (x[..., 0].mean((1, 2)) > x[..., -1].mean((1, 2))).float()
    assert 0.46 < flipped.mean().item() < 0.54
