"""Small models, checkpoints and image folders for the visualisation tests."""

import numpy as np
import pytest
from PIL import Image

import crossmae

TINY = {"depth": 2, "decoder_depth": 3}


def tiny_model(name: str = "crossmae_vit_tiny_patch4_32", **overrides):
    return crossmae.create_model(name, **(TINY | overrides)).eval()


@pytest.fixture
def tiny():
    """Factory of tiny eval-mode models: tiny(name="crossmae_vit_tiny_patch4_32", **overrides)."""
    return tiny_model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """name -> path of a freshly initialised tiny checkpoint in our format."""
    root = tmp_path_factory.mktemp("ckpt")
    models = {
        "cross": tiny_model(),
        "mae": tiny_model("mae_vit_tiny_patch4_32"),
        "cross_nofusion": tiny_model(fusion=False, norm_pix_loss=False),
    }
    paths = {}
    for key, model in models.items():
        paths[key] = root / f"{key}.pth"
        crossmae.save_model(paths[key], model)
    return paths


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """ROOT/test/<class>/*.png with random 32x32 (and one 40x48) RGB images."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng()
    for cls in ("a", "b"):
        folder = root / "test" / cls
        folder.mkdir(parents=True)
        for i in range(3):
            shape = (40, 48, 3) if (cls, i) == ("b", 2) else (32, 32, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"{i}.png")
    return root
