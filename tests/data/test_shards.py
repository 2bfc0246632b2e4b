"""Tar shards: grouping by key, splitting over workers and ranks, hostile members."""

import io
import tarfile
from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from crossmae.data import eval_transform, open_image_dataset
from crossmae.data import shards as shards_module
from crossmae.data.shards import ShardImages, expand_shards


def add(tar: tarfile.TarFile, name: str, data: bytes = b"", **fields) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if data else None)


def write_shards(folder: Path, jpegs: list[bytes], shards: int, per_shard: int) -> list[Path]:
    """Shards of samples `s<global index>.jpg` + `.cls` (label = global index) + `.json`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(shards):
        path = folder / f"shard-{s:03d}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(s * per_shard, (s + 1) * per_shard):
                add(tar, f"s{i:04d}.jpg", jpegs[i % len(jpegs)])
                add(tar, f"s{i:04d}.cls", str(i).encode())
                add(tar, f"s{i:04d}.json", b"{}")
        paths.append(path)
    return paths


@pytest.fixture
def jpegs(real_jpegs):
    return [data for data, _ in real_jpegs]


def labels_of(dataset, **loader) -> list[int]:
    return [int(label) for _, label in DataLoader(dataset, batch_size=None, **loader)]


def test_pattern_folder_and_single_file(tmp_path, jpegs):
    paths = write_shards(tmp_path / "train", jpegs, shards=3, per_shard=5)
    for spec in (
        f"{tmp_path}/train/shard-{{000..002}}.tar",
        f"{tmp_path}/train/shard-*.tar",
        tmp_path / "train",
        tmp_path,  # PATH/<split>/*.tar
    ):
        ds = open_image_dataset(spec, transform=eval_transform(32))
        assert isinstance(ds, ShardImages)
        items = list(ds)
        assert [label for _, label in items] == list(range(15))
        assert items[0][0].shape == (3, 32, 32)
        assert ds.classes is None and ds.report() is None
    single = open_image_dataset(paths[1])
    assert [label for _, label in single] == list(range(5, 10))
    assert expand_shards(f"{tmp_path}/train/shard-{{000,002}}.tar") == [paths[0], paths[2]]


@pytest.mark.parametrize(("shards", "workers"), [(4, 2), (1, 2)])
def test_workers_and_ranks_read_disjoint_parts_that_cover_all(
    tmp_path, jpegs, monkeypatch, shards, workers
):
    write_shards(tmp_path, jpegs, shards=shards, per_shard=12 // shards)
    ds = open_image_dataset(tmp_path)
    assert sorted(labels_of(ds, num_workers=workers)) == list(range(12))
    monkeypatch.setattr(shards_module.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(shards_module.dist, "get_world_size", lambda group=None: 2)
    seen = []
    for rank in range(2):
        monkeypatch.setattr(shards_module.dist, "get_rank", lambda group=None, rank=rank: rank)
        seen.append(labels_of(ds, num_workers=workers))
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(12))
    assert len(seen[0]) == len(seen[1]) == 6


def test_shuffle_is_seeded_by_epoch(tmp_path, jpegs):
    write_shards(tmp_path, jpegs, shards=4, per_shard=8)
    ds = open_image_dataset(tmp_path, shuffle=True, seed=3)
    ds.shuffle_buffer = 10
    first = [label for _, label in ds]
    assert [label for _, label in ds] == first
    ds.set_epoch(1)
    second = [label for _, label in ds]
    assert second != first and sorted(second) == sorted(first) == list(range(32))


def tree(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*")}


def test_hostile_members_are_skipped_and_nothing_is_written(tmp_path, jpegs, monkeypatch):
    shard = tmp_path / "evil" / "shard.tar"
    shard.parent.mkdir()
    with tarfile.open(shard, "w") as tar:
        add(tar, "good0.jpg", jpegs[0])
        add(tar, "/tmp/abs_evil.jpg", jpegs[1])
        add(tar, "../escape.jpg", jpegs[2])
        add(tar, "a/../../escape2.jpg", jpegs[3])
        add(tar, "link.jpg", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        add(tar, "hard.jpg", type=tarfile.LNKTYPE, linkname="good0.jpg")
        add(tar, "dev.jpg", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
        add(tar, "fifo.jpg", type=tarfile.FIFOTYPE)
        add(tar, "dir", type=tarfile.DIRTYPE)
        add(tar, "nolabel.cls", b"3")  # a sample with no image
        add(tar, "badlabel.jpg", jpegs[4])
        add(tar, "badlabel.cls", b"cat")
        add(tar, "huge.jpg", jpegs[4])
        add(tar, "huge.cls", b"99999999999999999999999")  # an int64 label tensor cannot hold it
        add(tar, "negative.jpg", jpegs[4])
        add(tar, "negative.cls", b"-5")
        add(tar, "good1.jpg", jpegs[5])
        add(tar, "good1.cls", b"7")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    before = tree(tmp_path)
    ds = open_image_dataset(shard)
    expected = "skipped 11 of 13 samples: 7 unsafe member, 1 no image, 3 bad label"
    assert [label for _, label in ds] == [-1, 7]
    assert ds.report() == expected
    ds.set_epoch(1)
    assert sorted(labels_of(ds, num_workers=2)) == [-1, 7]
    assert ds.report() == expected  # counted by the workers, for the new epoch only
    assert tree(tmp_path) == before  # holds the working and the shard's folders
    assert not Path("/tmp/abs_evil.jpg").exists()


def test_broken_shards_are_counted_and_the_rest_is_read(tmp_path, jpegs, rng):
    good = write_shards(tmp_path, jpegs, shards=3, per_shard=4)
    data = good[1].read_bytes()
    good[1].write_bytes(data[: len(data) // 2])  # truncated mid-stream
    (tmp_path / "shard-003.tar").write_bytes(rng.bytes(3000))  # not a tar at all
    ds = open_image_dataset(tmp_path)
    good[2].unlink()  # gone after the data set was opened
    labels = [label for _, label in ds]
    assert labels[:4] == [0, 1, 2, 3] and 4 in labels and 8 not in labels
    assert ds.report() == f"skipped 3 of {len(labels) + 3} samples: 2 corrupt, 1 unreadable"


@pytest.mark.parametrize("extra", [0, 100])  # at a member's header, and inside one
def test_a_shard_cut_at_a_header_is_reported_not_silently_shorter(tmp_path, jpegs, extra):
    """Stream mode reads a tar cut at a header as a clean end: the shard's missing end
    marker is what tells that samples were lost."""
    (path,) = write_shards(tmp_path, jpegs, shards=1, per_shard=6)
    with tarfile.open(path) as tar:
        cut = tar.getmembers()[9].offset + extra  # sample 3's .jpg header: 3 samples whole
    path.write_bytes(path.read_bytes()[:cut])
    ds = open_image_dataset(path)
    labels = [label for _, label in ds]
    assert labels == [0, 1, 2]
    assert ds.report() == "skipped 1 of 4 samples: 1 truncated"


def test_a_whole_shard_and_a_compressed_one_are_not_called_cut(tmp_path, jpegs):
    (path,) = write_shards(tmp_path, jpegs, shards=1, per_shard=3)
    with tarfile.open(tmp_path / "z.tar.gz", "w:gz") as packed:
        packed.add(path, arcname="inner.tar")  # any gzip stream: its magic is what counts
    assert not shards_module._cut_short(path)
    assert not shards_module._cut_short(tmp_path / "z.tar.gz")
    ds = open_image_dataset(path)
    assert [label for _, label in ds] == [0, 1, 2] and ds.report() is None


def test_a_shard_pattern_starting_with_a_tilde_is_read_from_home(tmp_path, jpegs, monkeypatch):
    write_shards(tmp_path / "train", jpegs, shards=2, per_shard=3)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert len(list(open_image_dataset("~/train/shard-{000..001}.tar"))) == 6
