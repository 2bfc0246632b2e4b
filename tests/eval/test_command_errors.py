"""Mistakes users make get one sentence and exit status 2, never a traceback."""

import errno
import os

import numpy as np
import pytest
import torch
from PIL import Image

from crossmae.cli import main
from crossmae.serialization import safe_torch_load


def _fails(capsys, *args) -> str:
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    return err


def test_wrong_checkpoint(capsys, tmp_path, two_class_tree):
    torch.save({"format": "crossmae-linprobe", "head": {}}, tmp_path / "probe.pth")
    err = _fails(capsys, "knn", "--checkpoint", tmp_path / "probe.pth", "--data", two_class_tree)
    assert "not a model to load or evaluate" in err
    (tmp_path / "text.pth").write_text("not a checkpoint")
    err = _fails(capsys, "finetune", "--checkpoint", tmp_path / "text.pth")
    assert "text.pth" in err  # unreadable: named, no traceback
    assert "--checkpoint is required" in _fails(capsys, "linprobe")


def test_data_without_labels(capsys, authors, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(3):
        pixels = np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(flat / f"{i}.png")
    err = _fails(capsys, "knn", "--checkpoint", authors, "--data", flat, "--eval-data", flat)
    assert "no labels" in err


def test_unknown_or_wrong_class_count(capsys, authors, shard_tree, two_class_tree):
    err = _fails(capsys, "linprobe", "--checkpoint", authors, "--data", shard_tree, "--cached")
    assert "give --num-classes" in err
    err = _fails(capsys, "knn", "--checkpoint", authors, "--data", two_class_tree,
                 "--num-classes", 3)  # fmt: skip
    assert "has 2 classes" in err


def test_shards_with_a_class_count_work(authors, shard_tree, tmp_path):
    out = tmp_path / "knn"
    args = ["knn", "--checkpoint", authors, "--data", shard_tree, "--num-classes", 2, "--k", 3,
            "--output-dir", out, "--num-workers", 0]  # fmt: skip
    assert main([str(a) for a in args]) == 0
    assert (out / "knn.json").is_file()


@pytest.mark.parametrize(
    ("command", "settings", "lr"),
    [("finetune", ["--blr", 1e-6], "5e-07"), ("linprobe", ["--cached", "--blr", 1e-4], "0.0002")],
)
def test_min_lr_above_the_scaled_lr_is_refused_before_any_work(
    command, settings, lr, capsys, authors, two_class_tree, monkeypatch
):
    """The cosine would rise from the scaled lr to --min-lr (it did, silently, before)."""
    monkeypatch.setattr("crossmae.eval.backbone.read_model", None)  # never reached
    err = _fails(capsys, command, "--checkpoint", authors, "--data", two_class_tree,
                 *settings, "--min-lr", 1e-3)  # fmt: skip
    assert f"--min-lr 0.001 is above the learning rate {lr}" in err


def test_bad_settings(capsys, authors, tmp_path):
    err = _fails(capsys, "finetune", "--checkpoint", authors, "--batch-size", 7)
    assert "even --batch-size" in err
    err = _fails(capsys, "knn", "--checkpoint", authors, "--features", "fused", "--img-size", 64)
    assert "pretraining image size" in err
    err = _fails(capsys, "knn", "--checkpoint", authors, "--img-size", 30)  # timm would crop
    assert "image size 30x30 is not divisible by the encoder's patch size" in err
    config = tmp_path / "bad.yaml"
    config.write_text("layer_decy: 0.7\n")
    err = _fails(capsys, "finetune", "--config", config, "--checkpoint", authors)
    assert "unknown setting 'layer_decy'" in err
    for policy in ("foo", "rand-m9-x5"):  # timm asserts on both
        err = _fails(capsys, "finetune", "--checkpoint", authors, "--auto-augment", policy)
        assert f"--auto-augment '{policy}' is not a timm RandAugment policy" in err


@pytest.mark.parametrize("command", ["finetune", "linprobe"])
def test_resume_from_a_missing_file(capsys, command, authors, tmp_path):
    err = _fails(capsys, command, "--checkpoint", authors, "--resume", tmp_path / "nope.pth",
                 "--output-dir", tmp_path / "out", "--train-images", 20, "--eval-images", 10,
                 "--num-workers", 0, "--warmup-epochs", 0, "--batch-size", 10)  # fmt: skip
    assert "does not exist" in err


def test_data_without_an_evaluation_split(capsys, authors, two_class_tree):
    train_only = two_class_tree / "train"  # class folders, but no val/ or test/ beside them
    err = _fails(capsys, "knn", "--checkpoint", authors, "--data", train_only)
    assert "no val/ or test/ split" in err and "--eval-data" in err


def test_resume_with_another_layer_decay_is_one_sentence(capsys, authors, two_class_tree, tmp_path):
    """Another --layer-decay can change the optimizer's parameter groups."""
    common = ["finetune", "--checkpoint", authors, "--data", two_class_tree, "--output-dir",
              tmp_path / "ft", "--warmup-epochs", 0, "--num-workers", 0, "--batch-size", 20,
              "--resume", "auto"]  # fmt: skip
    assert main([str(a) for a in [*common, "--epochs", 1]]) == 0
    capsys.readouterr()
    err = _fails(capsys, *common, "--epochs", 2, "--layer-decay", 1.0)
    assert "was fine-tuned with other optimizer groups (another --layer-decay" in err


@pytest.mark.parametrize("command", ["finetune", "linprobe"])
def test_a_full_disk_is_one_sentence(capsys, command, authors, two_class_tree, tmp_path,
                                     monkeypatch):  # fmt: skip
    def full_disk(obj, f) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    out = tmp_path / "out"
    err = _fails(capsys, command, "--checkpoint", authors, "--data", two_class_tree,
                 "--output-dir", out, "--epochs", 1, "--warmup-epochs", 0, "--batch-size", 10,
                 "--num-workers", 0)  # fmt: skip
    assert (
        err
        == f"crossmae {command}: error: cannot write {out}/"
        + ("checkpoint-best.pth" if command == "finetune" else "checkpoint-last.pth")
        + ": No space left on device"
    )


def test_a_disk_that_fills_later_leaves_the_last_epoch(capsys, authors, two_class_tree, tmp_path,
                                                       monkeypatch):  # fmt: skip
    real_save, saves = torch.save, []

    def fills_at_the_second(obj, f) -> None:
        saves.append(obj)
        if len(saves) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(obj, f)

    monkeypatch.setattr(torch, "save", fills_at_the_second)
    out = tmp_path / "out"
    err = _fails(capsys, "linprobe", "--checkpoint", authors, "--data", two_class_tree,
                 "--output-dir", out, "--epochs", 2, "--warmup-epochs", 0, "--batch-size", 10,
                 "--num-workers", 0)  # fmt: skip
    assert err == (f"crossmae linprobe: error: cannot write {out}/checkpoint-last.pth: No space "
                   "left on device; its previous version is intact")  # fmt: skip
    assert safe_torch_load(out / "checkpoint-last.pth")["epoch"] == 1
