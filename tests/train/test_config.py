"""PretrainConfig: the demo layer, validation, and every recipe in configs/ stays valid."""

from pathlib import Path

import pytest
import torch

from crossmae.errors import CrossMAEError
from crossmae.models import list_models
from crossmae.models.autoencoder import MaskedAutoencoder
from crossmae.train.config import DEMO, PretrainConfig, with_demo
from crossmae.train.options import build_dataclass, read_yaml

# Pretraining recipes name a registered autoencoder (fine-tuning ones share the folder).
CONFIGS = [
    path
    for path in sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))
    if read_yaml(path).get("model") in list_models()
]


def test_demo_settings_apply_only_without_a_model():
    demo = build_dataclass(PretrainConfig, *with_demo({"epochs": 2}))
    assert demo.model == DEMO["model"] and demo.epochs == 2
    assert demo.batch_size == DEMO["batch_size"]
    assert demo.model_config().depth == DEMO["model_overrides"]["depth"]
    chosen = build_dataclass(PretrainConfig, *with_demo({}, {"model": "mae_vit_base_patch16"}))
    assert chosen.epochs == 800 and chosen.blr == 1.5e-4 and chosen.model_overrides == {}


def test_there_is_a_recipe_for_every_paper_setting():
    names = {p.stem for p in CONFIGS}
    assert len(names) == 16
    for size in ("small", "base", "large", "huge"):
        assert {f"crossmae_vit_{size}_gamma025", f"crossmae_vit_{size}_gamma075"} <= names
    assert {"mae_vit_base", "mae_vit_large", "mae_vit_huge", "crossmae_vit_base_448_gamma025",
            "crossmae_vit_small_1gpu", "cifar10_crossmae_vit_tiny_gamma025",
            "cifar10_crossmae_vit_tiny_gamma075", "cifar10_mae_vit_tiny"} <= names  # fmt: skip


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_recipe_is_valid_and_builds(path, tmp_path):
    recipe = read_yaml(path)  # its data path is a placeholder the user replaces
    cfg = build_dataclass(PretrainConfig, recipe, {"data": str(tmp_path)}, source=str(path))
    model_cfg = cfg.validate().model_config()
    with torch.device("meta"):
        model = MaskedAutoencoder(model_cfg)
    assert sum(p.numel() for p in model.parameters()) > 1e6
    if "imagenet" in recipe["data"]:  # paper recipes: effective batch 4096 on 16 GPUs
        assert cfg.batch_size * cfg.accum_iter * (16 if "1gpu" not in path.stem else 1) == 4096
    gamma = path.stem.partition("gamma")[2]
    if gamma:
        assert model_cfg.prediction_ratio == int(gamma) / 100


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mask_ratio": 1.2}, "mask ratio must be between 0 and 1, got 1.2"),
        ({"prediction_ratio": 0.0}, r"prediction ratio must be in \(0, mask ratio 0.75\]"),
        ({"prediction_ratio": 0.9}, r"prediction ratio must be in \(0, mask ratio 0.75\], got 0.9"),
        ({"img_size": 30}, "image size 30x30 is not divisible by the patch size 4"),
        ({"model": "vit_giant"}, "unknown model 'vit_giant'"),
        ({"batch_size": 0}, "--batch-size must be at least 1"),
        ({"warmup_epochs": 5, "epochs": 2}, "--warmup-epochs must be between 0 and --epochs 2"),
        ({"betas": [0.9]}, "--betas must be two numbers"),
        # Model overrides are typed and sized like every other setting.
        ({"model_overrides": "depth=abc"}, "--model-overrides depth is not a valid N, got 'abc'"),
        ({"model_overrides": {"depth": [2]}}, r"--model-overrides depth is not a valid N"),
        ({"model_overrides": "fusion=maybe"}, "--model-overrides fusion must be true or false"),
        ({"model_overrides": "img_size=[16,24,3]"}, "--model-overrides img_size is not a valid"),
        ({"model_overrides": "decoder_depth=-1"}, "decoder_depth must be at least 1, got -1"),
        ({"model_overrides": "patch_size=0"}, "patch_size must be at least 1, got 0"),
        ({"model_overrides": "num_heads=0"}, "num_heads must be at least 1, got 0"),
        ({"model_overrides": "mlp_ratio=0"}, "mlp_ratio must be positive, got 0.0"),
        ({"model_overrides": "nonsense=1"}, "unknown model setting"),
    ],
)
def test_invalid_settings_name_the_problem(changes, message):
    cfg = build_dataclass(PretrainConfig, *with_demo(changes))
    with pytest.raises(CrossMAEError, match=message):
        cfg.validate()


def test_model_overrides_change_the_keys_they_name_and_keep_the_others():
    cfg = build_dataclass(PretrainConfig, *with_demo({"model_overrides": ["decoder_depth=3"]}))
    model = cfg.validate().model_config()
    demo = DEMO["model_overrides"]
    assert (model.embed_dim, model.depth, model.decoder_depth) == (
        demo["embed_dim"],
        demo["depth"],
        3,
    )
    recipe = {"model": "mae_vit_base_patch16", "model_overrides": {"depth": 6, "img_size": 64}}
    cfg = build_dataclass(PretrainConfig, recipe, {"model_overrides": ["depth=4"]})
    assert cfg.model_overrides == {"depth": 4, "img_size": 64}


def test_model_overrides_from_flags_take_the_config_s_types():
    cfg = build_dataclass(PretrainConfig, *with_demo({"model_overrides": [
        "img_size=[16,24]", "fusion=false", "fusion_layers=[0,-1]", "mlp_ratio=2"]}))  # fmt: skip
    model = cfg.validate().model_config()
    assert model.img_size == (16, 24) and model.fusion is False
    assert model.fusion_layers == [0, -1] and model.mlp_ratio == 2.0
