"""`crossmae evaluate`: a classifier's own accuracy, as a plain loop over the images gives it."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from crossmae.cli import main
from crossmae.models.classifier import ViTArch, build_vit, classifier_checkpoint

CLASSES = ["bright", "dark"]  # two_class_tree's folders, in sorted order
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def _run(*args) -> int:
    return main([str(a) for a in args])


def _classifier(outputs: int = 2, bias: list[float] | None = None):
    vit = build_vit(ViTArch((32, 32), 4, 3, 32, 2, 2), outputs, "avg").eval()
    torch.nn.init.normal_(vit.head.weight, std=1.0)  # far from ties, unlike a fresh head
    with torch.no_grad():
        vit.head.bias.copy_(torch.randn(outputs) if bias is None else torch.tensor(bias))
    return vit


def _damaged(**arch) -> dict:
    ckpt = classifier_checkpoint(_classifier(), CLASSES)
    return {**ckpt, "arch": {**ckpt["arch"], **arch}}


def _plain_top1(vit, root) -> tuple[float, dict[str, float]]:
    """Every val image, normalised by hand (32 px: no resize, no crop), one at a time:
    top-1 over all of them, and per class."""
    hits = {}
    for label, name in enumerate(CLASSES):
        for path in sorted((root / "val" / name).iterdir()):
            pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255
            x = torch.from_numpy((pixels - MEAN) / STD).permute(2, 0, 1)[None].float()
            with torch.no_grad():
                hits.setdefault(name, []).append(int(vit(x).argmax(1).item() == label))
    every = [hit for class_hits in hits.values() for hit in class_hits]
    return 100 * sum(every) / len(every), {k: 100 * sum(v) / len(v) for k, v in hits.items()}


def test_top1_is_a_plain_loop_over_the_images_and_ema_takes_the_average(two_class_tree, tmp_path):
    vit = _classifier()
    always_bright = _classifier(bias=[1e4, -1e4])  # the "EMA": class 0 for every image
    ckpt = classifier_checkpoint(vit, CLASSES, ema=always_bright.state_dict())
    torch.save(ckpt, tmp_path / "ft.pth")
    assert _run("evaluate", "--checkpoint", tmp_path / "ft.pth", "--data", two_class_tree,
                "--num-workers", 0, "--batch-size", 7) == 0  # fmt: skip
    results = json.loads((tmp_path / "ft.eval.json").read_text())  # beside the checkpoint
    assert results["eval_images"] == 20 and results["weights"] == "model"
    top1, per_class = _plain_top1(vit, two_class_tree)
    assert results["top1"] == pytest.approx(top1, abs=1e-9)
    assert results["per_class_top1"] == pytest.approx(per_class, abs=1e-9)
    assert results["top5"] == 100.0  # two classes: both are in the top 5
    assert _run("evaluate", "--checkpoint", tmp_path / "ft.pth", "--data", two_class_tree,
                "--num-workers", 0, "--ema", "--output-dir", tmp_path / "ema") == 0  # fmt: skip
    averaged = json.loads((tmp_path / "ema" / "eval-ema.json").read_text())  # beside eval.json
    assert averaged["weights"] == "ema" and averaged["top1"] == 50.0
    assert averaged["per_class_top1"] == {"bright": 100.0, "dark": 0.0}
    assert averaged["lowest_classes"] == "dark 0.0, bright 100.0"


def test_a_timm_export_and_a_new_size_evaluate_too(two_class_tree, tmp_path):
    torch.save(classifier_checkpoint(_classifier(), CLASSES), tmp_path / "ft.pth")
    out = tmp_path / "clf.safetensors"
    assert _run("export", tmp_path / "ft.pth", "--output", out) == 0
    common = ["--data", two_class_tree, "--num-workers", 0]
    assert _run("evaluate", "--checkpoint", tmp_path / "ft.pth", *common) == 0
    assert _run("evaluate", "--checkpoint", out, *common) == 0
    assert _run("evaluate", "--checkpoint", out, "--img-size", 48, *common,
                "--output-dir", tmp_path / "at48") == 0  # fmt: skip
    pth, exported, at48 = (
        json.loads((tmp_path / name).read_text())
        for name in ("ft.eval.json", "clf.eval.json", "at48/eval.json")
    )
    assert exported["classifier"].startswith("ViT classifier (timm export)")
    assert pth["top1"] == exported["top1"] and pth["loss"] == pytest.approx(exported["loss"])
    assert at48["image_size"] == "48x48" and at48["eval_images"] == 20


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (lambda: classifier_checkpoint(_classifier(), ["cat", "dog"]), [],
         "not the ones the classifier was trained on (2: cat, dog)"),
        (lambda: classifier_checkpoint(_classifier(), ["dark", "bright"]), [],  # reordered
         "not the ones the classifier was trained on (2: dark, bright)"),
        (lambda: {**classifier_checkpoint(_classifier(), CLASSES), "model": {
            k: v for k, v in _classifier().state_dict().items() if k != "head.bias"}}, [],
         "has no parameter 'head.bias'"),
        (lambda: {"model": _classifier(3).state_dict()}, [],  # the authors' layout: no names
         "have 2 classes but the classifier has 3 outputs"),
        (lambda: classifier_checkpoint(_classifier(), CLASSES), ["--num-classes", 3],
         "--num-classes is 3 but the classifier has 2"),
        (lambda: classifier_checkpoint(_classifier(), CLASSES), ["--ema"], "has no EMA weights"),
        (lambda: _damaged(depth=3000), [], "its weights do not fit"),  # never built
        (lambda: _damaged(patch_size=-4), [], "positive whole numbers"),
        (lambda: _damaged(img_size=[-32, -32]), [], "positive whole numbers"),
        (lambda: _damaged(mlp_ratio=float("inf")), [], "not a positive number"),
        (lambda: _damaged(num_heads=-2), [], "positive whole numbers"),
        (lambda: {**classifier_checkpoint(_classifier(), CLASSES), "classes": "ab"}, [],
         "not a list of names"),
        (lambda: {"model": _classifier().state_dict()}, ["--ema"], "--ema needs a crossmae"),
    ],
)  # fmt: skip
def test_a_classifier_for_other_classes_is_one_sentence(
    make, extra, message, two_class_tree, tmp_path, capsys
):
    torch.save(make(), tmp_path / "ft.pth")
    assert _run("evaluate", "--checkpoint", tmp_path / "ft.pth", "--data", two_class_tree,
                "--num-workers", 0, *extra) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_a_pretraining_checkpoint_has_no_head_to_evaluate(ours, two_class_tree, capsys):
    assert _run("evaluate", "--checkpoint", ours, "--data", two_class_tree) == 2
    assert "is a pretraining checkpoint, with no classifier head; fine-tune it" in (
        capsys.readouterr().err
    )
    assert not ours.with_name("ours.eval.json").exists()


@pytest.mark.slow
def test_under_torchrun_every_image_is_counted_once(two_class_tree, tmp_path):
    """Two processes each classify half the images; the summed counts are one process's."""
    import os
    import subprocess
    import sys

    torch.save(classifier_checkpoint(_classifier(), CLASSES), tmp_path / "ft.pth")
    args = ["evaluate", "--checkpoint", tmp_path / "ft.pth", "--data", two_class_tree,
            "--num-workers", 0, "--batch-size", 3]  # fmt: skip
    assert _run(*args, "--output-dir", tmp_path / "one") == 0
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node=2", "-m", "crossmae"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*torchrun, *map(str, args), "--output-dir", str(tmp_path / "two")],
                          capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    one, two = (json.loads((tmp_path / d / "eval.json").read_text()) for d in ("one", "two"))
    assert two["eval_images"] == one["eval_images"] == 20
    assert two["top1"] == one["top1"] and two["per_class_top1"] == one["per_class_top1"]
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-6)


def test_a_classifier_trained_on_tar_shards_evaluates_on_class_folders(
    authors, shard_tree, two_class_tree, tmp_path
):
    """Shards name no classes: the checkpoint keeps only their count, so ImageNet shards'
    model can be checked on ImageNet's val/ folders (no '0', '1', ... names to mismatch)."""
    out = tmp_path / "ft"
    assert _run("finetune", "--checkpoint", authors, "--data", shard_tree, "--num-classes", 2,
                "--samples-per-epoch", 24, "--epochs", 1, "--warmup-epochs", 0, "--batch-size",
                8, "--num-workers", 0, "--output-dir", out) == 0  # fmt: skip
    assert torch.load(out / "checkpoint-best.pth", weights_only=True)["classes"] is None
    assert _run("evaluate", "--checkpoint", out / "checkpoint-best.pth", "--data",
                two_class_tree, "--num-workers", 0) == 0  # fmt: skip
    assert _run("export", out / "checkpoint-best.pth", "--output", tmp_path / "ft.safetensors") == 0
    from crossmae.models.checkpoint import read_model

    again = read_model(tmp_path / "ft.safetensors")
    assert again.classes is None and again.model.num_classes == 2


def test_the_ema_weights_export_too(two_class_tree, tmp_path):
    always_bright = _classifier(bias=[1e4, -1e4])
    torch.save(classifier_checkpoint(_classifier(), CLASSES, ema=always_bright.state_dict()),
               tmp_path / "ft.pth")  # fmt: skip
    out = tmp_path / "ema.safetensors"
    assert _run("export", tmp_path / "ft.pth", "--ema", "--output", out) == 0
    assert _run("evaluate", "--checkpoint", out, "--data", two_class_tree, "--num-workers", 0) == 0
    assert json.loads((tmp_path / "ema.eval.json").read_text())["top1"] == 50.0


def test_a_shard_label_beyond_the_classifiers_outputs_names_the_head(tmp_path, capsys):
    import io
    import tarfile

    png = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 90, dtype=np.uint8)).save(png, "PNG")
    with tarfile.open(tmp_path / "val.tar", "w") as tar:
        for name, payload in (("0.png", png.getvalue()), ("0.cls", b"5")):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    torch.save(classifier_checkpoint(_classifier(), CLASSES), tmp_path / "ft.pth")
    assert _run("evaluate", "--checkpoint", tmp_path / "ft.pth", "--data", tmp_path / "val.tar",
                "--num-workers", 0) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "a label is 5 but there are only 2 classes; as many as the classifier's outputs" in err
