"""The recipes in configs/ load as settings and say what the paper says."""

from pathlib import Path

import pytest

from crossmae.eval.settings import FinetuneSettings, LinprobeSettings
from crossmae.train.options import build_dataclass, read_yaml

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RECIPES = sorted(CONFIGS.glob("finetune_*.yaml")) + sorted(CONFIGS.glob("linprobe_*.yaml"))


def _load(path: Path, **given: str):
    cls = FinetuneSettings if path.name.startswith("finetune") else LinprobeSettings
    return build_dataclass(cls, read_yaml(path), {"checkpoint": "x.pth", **given},
                           source=str(path))  # fmt: skip


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_is_valid(path, tmp_path):
    assert _load(path).data is not None  # a placeholder the user replaces
    (checkpoint := tmp_path / "x.pth").touch()  # validation checks only that paths exist
    _load(path, checkpoint=str(checkpoint), data=str(tmp_path)).validate()


def test_paper_settings():
    base = _load(CONFIGS / "finetune_vit_base.yaml")
    assert (base.blr, base.layer_decay, base.drop_path, base.epochs) == (5e-4, 0.65, 0.1, 100)
    assert (base.mixup, base.cutmix, base.smoothing, base.reprob) == (0.8, 1.0, 0.1, 0.25)
    assert base.global_pool == "avg" and base.batch_size * 8 == 1024
    large = _load(CONFIGS / "finetune_vit_large.yaml")
    assert (large.blr, large.layer_decay, large.drop_path, large.epochs) == (1e-3, 0.75, 0.2, 50)
    probe = _load(CONFIGS / "linprobe_vit.yaml")
    assert (probe.blr, probe.weight_decay, probe.epochs, probe.warmup_epochs) == (0.1, 0, 90, 10)
    assert probe.batch_size * 32 == 16384
    assert _load(CONFIGS / "finetune_vit_base_448.yaml").image_size() == (448, 448)
