"""The linear probe's classifier.pth: the frozen encoder and the trained head as one timm ViT."""

import json

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from crossmae import read_model
from crossmae.cli import main
from crossmae.eval.backbone import load_backbone
from crossmae.eval.features import feature_extractor
from crossmae.eval.probe_head import LinearProbe
from crossmae.models.classifier import fold_probe_head

PROBE = ["--warmup-epochs", 1, "--lr", 5.0, "--num-workers", 0]
SHORT = [*PROBE, "--epochs", 3, "--batch-size", 20]  # 9 steps: trained, not yet accurate


def _run(*args) -> int:
    return main([str(a) for a in args])


@pytest.mark.parametrize(
    ("which", "features", "cached"),
    [("ours", "avg", True), ("authors", "token", True), ("authors", "avg", False)],
)
def test_classifier_is_the_probe_in_float64(which, features, cached, request, two_class_tree,
                                            tmp_path):  # fmt: skip
    checkpoint = request.getfixturevalue(which)
    out = tmp_path / "probe"
    mode = ["--cached"] if cached else []
    assert _run("linprobe", "--checkpoint", checkpoint, "--data", two_class_tree, "--features",
                features, "--output-dir", out, *mode, *SHORT) == 0  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert results["classifier"] == str(out / "classifier.pth")

    loaded = read_model(out / "classifier.pth")
    assert isinstance(loaded.model, VisionTransformer) and loaded.classes == ["bright", "dark"]
    assert loaded.model.global_pool == features
    trained = torch.load(out / "checkpoint-last.pth", weights_only=True)["head"]
    head = LinearProbe(loaded.model.num_features, 2)
    head.load_state_dict(trained)
    assert int(head[0].num_batches_tracked) == 3 * 3  # 60 images / 20 a batch, 3 epochs: trained
    extractor, _ = feature_extractor(load_backbone(checkpoint), features)

    images = torch.randn(
        5, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3)
    )
    probe = head.double().eval()(extractor.double()(images))
    classifier = loaded.model.double().eval()(images)
    # float32 weights: the fold is exact in float64, then rounded once
    torch.testing.assert_close(classifier, probe, rtol=1e-5, atol=1e-6)


def test_evaluate_and_export_read_the_probes_classifier(ours, two_class_tree, tmp_path):
    out = tmp_path / "probe"
    assert _run("linprobe", "--checkpoint", ours, "--data", two_class_tree, "--cached",
                "--output-dir", out, *PROBE, "--epochs", 20, "--batch-size", 60) == 0  # fmt: skip
    probed = json.loads((out / "results.json").read_text())
    assert probed["top1"] > 50  # learnt something: one class for all would give 50
    assert _run("evaluate", "--checkpoint", out / "classifier.pth", "--data", two_class_tree,
                "--num-workers", 0) == 0  # fmt: skip
    evaluated = json.loads((out / "classifier.eval.json").read_text())
    assert evaluated["eval_images"] == probed["eval_images"] == 20
    assert evaluated["top1"] == probed["top1"]  # the same images, the same predictions

    exported = tmp_path / "probe.safetensors"
    assert _run("export", out / "classifier.pth", "--output", exported) == 0
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    logits = [read_model(p).model.eval()(images) for p in (out / "classifier.pth", exported)]
    torch.testing.assert_close(logits[0], logits[1], rtol=0, atol=0)


def test_fused_features_write_no_classifier(authors, tmp_path, capsys):
    out = tmp_path / "probe"
    assert _run("linprobe", "--checkpoint", authors, "--features", "fused", "--cached",
                "--train-images", 40, "--eval-images", 20, "--output-dir", out,
                *SHORT) == 0  # fmt: skip
    assert json.loads((out / "results.json").read_text())["classifier"] is None
    assert not (out / "classifier.pth").exists()
    assert "no classifier file: 'fused' features" in capsys.readouterr().out


def test_a_probe_on_tar_shards_keeps_the_class_count_only(ours, shard_tree, tmp_path):
    out = tmp_path / "probe"
    assert _run("linprobe", "--checkpoint", ours, "--data", shard_tree, "--cached",
                "--num-classes", 2, "--output-dir", out, *PROBE, "--epochs", 1,
                "--batch-size", 8) == 0  # fmt: skip
    loaded = read_model(out / "classifier.pth")
    assert loaded.classes is None and loaded.model.num_classes == 2


def test_fold_probe_head_matches_batchnorm_then_linear_in_float64():
    head = LinearProbe(6, 3).double()
    with torch.no_grad():
        head[0].running_mean.normal_()
        head[0].running_var.uniform_(0.1, 3.0)
        head[1].weight.normal_()
        head[1].bias.normal_()
    folded = fold_probe_head({f"head.{k}": v for k, v in head.state_dict().items()})
    assert set(folded) == {"head.weight", "head.bias"}
    x = torch.randn(8, 6, dtype=torch.float64)
    expected = head.eval()(x)
    torch.testing.assert_close(F.linear(x, folded["head.weight"], folded["head.bias"]), expected,
                               rtol=0, atol=1e-12)  # fmt: skip
