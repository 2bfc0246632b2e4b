"""open_image_dataset: folder trees, flat folders, the built-in set, and its user errors."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crossmae.data import open_image_dataset, pretrain_transform
from crossmae.errors import CrossMAEError

CIFAR_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"
]  # fmt: skip


def write_classes(root: Path, files: list[tuple[bytes, int]], per_class: int) -> dict[str, int]:
    """root/<class>/<n>.jpg for the first `per_class` files of each label; {name: label}."""
    written: Counter[int] = Counter()
    for data, label in files:
        if written[label] < per_class:
            folder = root / CIFAR_CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{written[label]:04d}.jpg").write_bytes(data)
            written[label] += 1
    return {CIFAR_CLASSES[label]: written[label] for label in written}


def test_folder_tree_with_splits_and_val_test_aliases(tmp_path, real_jpegs):
    write_classes(tmp_path / "train", real_jpegs, per_class=4)
    write_classes(tmp_path / "val", real_jpegs, per_class=2)
    train = open_image_dataset(tmp_path, "train")
    test = open_image_dataset(tmp_path, "test")  # no test/ folder: val/ stands in
    assert (len(train), len(test)) == (40, 20)
    assert train.classes == test.classes == CIFAR_CLASSES
    assert train.num_classes == 10
    assert Counter(train.labels.tolist()) == dict.fromkeys(range(10), 4)
    for i in (0, 17, 39):
        img, label = train[i]
        assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (32, 32)
        assert Path(train.name(i)).parent.name == CIFAR_CLASSES[label]
    assert train.report() is None


def test_class_folders_directly_with_transform(tmp_path, real_jpegs):
    expected = write_classes(tmp_path, real_jpegs[::3], per_class=3)
    ds = open_image_dataset(tmp_path, transform=pretrain_transform(16))
    assert ds.classes == sorted(expected)
    assert len(ds) == sum(expected.values())
    for i in range(len(ds)):
        x, label = ds[i]
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32
        assert ds.classes[label] == Path(ds.name(i)).parent.name


def test_nested_files_belong_to_their_class_folder(tmp_path, random_image, encode):
    (tmp_path / "cat" / "deep" / "deeper").mkdir(parents=True)
    (tmp_path / "dog").mkdir()
    (tmp_path / "cat" / "deep" / "deeper" / "a.png").write_bytes(encode(random_image(), "PNG"))
    (tmp_path / "dog" / "b.JPG").write_bytes(encode(random_image(), "JPEG"))
    ds = open_image_dataset(tmp_path)
    assert ds.classes == ["cat", "dog"]
    assert [ds[i][1] for i in range(len(ds))] == [0, 1]


def test_flat_folder_is_unlabeled(tmp_path, real_jpegs):
    for i, (data, _) in enumerate(real_jpegs[:7]):
        (tmp_path / f"img{i}.jpg").write_bytes(data)
    ds = open_image_dataset(tmp_path)
    assert len(ds) == 7
    assert ds.classes is None and ds.num_classes is None
    assert all(ds[i][1] == -1 for i in range(7))


def test_a_home_folder_named_like_a_pattern_is_a_folder(tmp_path, real_jpegs, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for i, (data, _) in enumerate(real_jpegs[:3]):
        (tmp_path / "imgs [v2]").mkdir(exist_ok=True)
        (tmp_path / "imgs [v2]" / f"img{i}.jpg").write_bytes(data)
    assert len(open_image_dataset("~/imgs [v2]")) == 3  # not a glob of shards


def test_builtin_names_the_demo_set_unless_a_folder_has_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    named = open_image_dataset("builtin", "val")
    assert len(named) == 1000 and named.description == open_image_dataset(None, "val").description
    (tmp_path / "builtin" / "cat").mkdir(parents=True)
    Image.fromarray(np.random.default_rng().integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
        tmp_path / "builtin" / "cat" / "a.png"
    )
    assert len(open_image_dataset("builtin", "val")) == 1  # the user's folder wins


def test_builtin_demo_set():
    train, test, val = (open_image_dataset(None, split) for split in ("train", "test", "val"))
    assert (len(train), len(test), len(val)) == (5000, 1000, 1000)
    assert train.classes == test.classes == CIFAR_CLASSES
    assert np.bincount(train.labels).tolist() == [500] * 10
    assert np.bincount(test.labels).tolist() == [100] * 10
    # Official CIFAR-10 order: the first training images are a frog and two trucks.
    assert train.labels[:3].tolist() == [6, 9, 9]
    assert np.array_equal(test.labels, val.labels)
    img, label = train[4999]
    assert img.size == (32, 32) and img.mode == "RGB" and 0 <= label < 10
    # Real photos, not noise or constants: neighbouring pixels are strongly correlated.
    pixels = np.asarray(train[0][0], dtype=np.float64)
    assert pixels.std() > 10
    assert np.corrcoef(pixels[:, :-1].ravel(), pixels[:, 1:].ravel())[0, 1] > 0.5


def test_grey_input_channel(tmp_path, random_image, encode):
    (tmp_path / "a.png").write_bytes(encode(random_image(), "PNG"))
    ds = open_image_dataset(tmp_path, in_chans=1, transform=pretrain_transform(8, in_chans=1))
    assert ds[0][0].shape == (1, 8, 8)
    assert open_image_dataset(tmp_path, in_chans=1)[0][0].mode == "L"


@pytest.mark.parametrize(
    ("make", "kwargs", "message"),
    [
        (lambda root: root / "missing", {}, "does not exist"),
        (lambda root: root, {}, "found no images"),
        (lambda root: (root / "notes.txt").write_text("x") and root, {}, "found no images"),
        (lambda root: (root / "train" / "cat").mkdir(parents=True) or root, {"split": "val"},
         "split 'val' not found"),
        (lambda root: (root / "x.zip").write_bytes(b"PK") and root / "x.zip", {}, "is a file"),
        (lambda root: None, {"split": "holdout"}, "splits train and test"),
        (lambda root: None, {"in_chans": 4}, "multispectral"),
        (lambda root: f"{root}/shard-{{0..3}}.tar", {}, "does not exist"),
        (lambda root: f"{root}/*.tar", {}, "no shard matches"),
        (lambda root: f"{root}/shard-{{3..0}}.tar", {}, r"names no shard \(is a range reversed"),
        (lambda root: (root / "a.png").write_bytes(b"x") and f"{root}/*.png", {},
         "a.png, which is not a .tar file"),
    ],
)  # fmt: skip
def test_bad_input_is_one_clear_error(tmp_path, make, kwargs, message):
    with pytest.raises(CrossMAEError, match=message):
        open_image_dataset(make(tmp_path), **kwargs)


CIFAR_JPEG = Path("/work/shared/data/cifar-10-images-jpeg")


@pytest.mark.skipif(not (CIFAR_JPEG / "official_order.csv").is_file(), reason="needs CIFAR-10")
def test_builtin_files_are_the_original_cifar_jpegs():
    for split, per_class in (("train", 500), ("test", 100)):
        demo = open_image_dataset(None, split)
        rows = (CIFAR_JPEG / "official_order.csv").read_text().splitlines()[1:]
        paths = [
            path
            for kind, _, _, path in (row.split(",") for row in rows)
            if kind == split and int(Path(path).stem) < per_class
        ]
        assert len(paths) == len(demo)
        for i, path in enumerate(paths):
            assert demo.read(i) == (CIFAR_JPEG / path).read_bytes(), path
            assert demo.classes[demo.labels[i]] == Path(path).parent.name


def test_hidden_folders_and_files_are_neither_classes_nor_images(tmp_path):
    """Jupyter's .ipynb_checkpoints (or a .Trash) would shift every label after it."""
    rng = np.random.default_rng()
    for folder in ("cat", "dog", ".ipynb_checkpoints"):
        (tmp_path / folder).mkdir()
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
            tmp_path / folder / "a.png"
        )
    (tmp_path / "cat" / ".b.png").write_bytes((tmp_path / "cat" / "a.png").read_bytes())
    dataset = open_image_dataset(tmp_path)
    assert dataset.classes == ["cat", "dog"] and len(dataset) == 2


def test_a_folder_without_splits_is_said_once_it_holds_images(tmp_path, real_jpegs, caplog):
    """No val/: all of it is the val split, noted; an empty folder gets its error alone."""
    write_classes(tmp_path / "flat", real_jpegs, per_class=1)
    with caplog.at_level("WARNING"):
        assert len(open_image_dataset(tmp_path / "flat", "val")) == 10
    assert "has no 'val' folder; using all of it as the val split" in caplog.text
    caplog.clear()
    (tmp_path / "empty").mkdir()
    with caplog.at_level("WARNING"), pytest.raises(CrossMAEError, match="found no images"):
        open_image_dataset(tmp_path / "empty", "val")
    assert caplog.text == ""
