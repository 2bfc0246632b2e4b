"""Which batch source a run reads from: in memory only where that keeps the recipe's crops."""

import pytest
import torch

from crossmae.train.batches import InMemorySource, LoaderSource
from crossmae.train.config import PretrainConfig
from crossmae.train.data import open_training_data
from crossmae.train.distributed import DistInfo
from crossmae.train.options import build_dataclass

CPU = DistInfo(0, 1, 0, torch.device("cpu"), True)
TINY = {"img_size": 16, "embed_dim": 32, "num_heads": 2, "depth": 1, "decoder_dim": 32,
        "decoder_depth": 1, "decoder_heads": 2}  # fmt: skip


def training_data(folder, in_memory=None, **settings):
    cfg = build_dataclass(PretrainConfig, {
        "model": "crossmae_vit_tiny_patch4_32", "model_overrides": TINY, "data": str(folder),
        "in_memory": in_memory, "num_workers": 0, "batch_size": 8, **settings,
    }).validate()  # fmt: skip
    return open_training_data(cfg, cfg.model_config(), CPU)


@pytest.mark.parametrize(("size", "kept"), [(16, True), (20, False)])
def test_auto_keeps_in_memory_only_images_already_at_the_model_s_size(
    write_images, tmp_path, size, kept
):
    """Stored smaller (cover-resized and centre-cropped), the crops would never see the
    images' borders and would be upsampled from the reduced copy."""
    write_images(tmp_path / "train", 24, size=size)
    data = training_data(tmp_path)
    assert isinstance(data.source, InMemorySource if kept else LoaderSource)


def test_in_memory_asked_for_says_when_it_resizes_first(write_images, tmp_path):
    write_images(tmp_path / "train", 24, size=20)
    data = training_data(tmp_path, in_memory=True)
    assert isinstance(data.source, InMemorySource)
    assert "kept in memory at 16x16, resized to cover and cropped" in data.description
    write_images(tmp_path / "same" / "train", 24, size=16)
    assert "resized" not in training_data(tmp_path / "same", in_memory=True).description


def _first_batches(source, epoch: int, count: int = 2) -> torch.Tensor:
    return torch.cat([batch for _, batch in zip(range(count), source.epoch(epoch), strict=False)])


def test_in_memory_epochs_draw_new_orders_and_crops_reproducibly(write_images, tmp_path):
    write_images(tmp_path / "train", 24, size=16)
    source = training_data(tmp_path, in_memory=True).source
    first = _first_batches(source, 0)
    assert torch.equal(_first_batches(source, 0), first)  # an epoch is its seed's
    assert not torch.equal(_first_batches(source, 1), first)


def test_tar_shard_workers_are_reseeded_every_epoch(write_images, tmp_path):
    """Unshuffled shards read in the same order each epoch: only the workers' seeds differ,
    and with them the crops (one seed for every epoch would repeat each epoch's crops)."""
    import tarfile

    from crossmae.data import pretrain_transform
    from crossmae.data.shards import ShardImages
    from crossmae.train.batches import StreamSource

    write_images(tmp_path / "imgs", 16, size=20)
    with tarfile.open(tmp_path / "0.tar", "w") as tar:
        for path in sorted((tmp_path / "imgs").iterdir()):
            tar.add(path, arcname=path.name)
    shards = ShardImages([tmp_path / "0.tar"], transform=pretrain_transform(16), shuffle=False)
    source = StreamSource(shards, 16, 8, 1, seed=3, device=torch.device("cpu"), num_workers=1)
    first = _first_batches(source, 0)
    assert torch.equal(_first_batches(source, 0), first)
    assert not torch.equal(_first_batches(source, 1), first)


def test_an_image_folder_s_batches_are_the_recipe_s_normalised_crops(write_images, tmp_path):
    """Its workers make uint8 crops and the device normalises them: the batches hold what
    the one-piece float transform gives those images, to the bit."""
    from crossmae.data import pretrain_transform
    from crossmae.train.batches import SeededItems

    write_images(tmp_path / "train", 24, size=20)
    source = training_data(tmp_path).source
    assert isinstance(source, LoaderSource)
    batch = next(source.epoch(1))
    items = SeededItems(source.loader.dataset.dataset, 0, pretrain_transform(16))
    source.sampler.set_epoch(1)
    keys = next(iter(source.sampler))
    assert batch.dtype == torch.float32
    assert torch.equal(batch, torch.stack([items[key][0] for key in keys]))


def test_tar_shard_batches_are_the_recipe_s_normalised_crops(tar_shards):
    from crossmae.data import open_image_dataset, pretrain_transform
    from crossmae.train.batches import StreamSource

    source = training_data(tar_shards, samples_per_epoch=24).source
    assert isinstance(source, StreamSource)
    floats = open_image_dataset(tar_shards, transform=pretrain_transform(16), shuffle=True)
    recipe = StreamSource(floats, 24, 8, 1, seed=0, device=torch.device("cpu"), num_workers=0)
    got, expected = _first_batches(source, 2), _first_batches(recipe, 2)
    assert got.dtype == torch.float32 and torch.equal(got, expected)
