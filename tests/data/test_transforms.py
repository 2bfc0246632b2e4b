"""pretrain_transform / eval_transform: shapes, channels and the normalisation."""

import numpy as np
import pytest
import torch

from crossmae.data import IMAGENET_MEAN, IMAGENET_STD, eval_transform, pretrain_transform
from crossmae.data.transforms import model_input
from crossmae.errors import CrossMAEError
from crossmae.eval.augment import probe_transform


@pytest.mark.parametrize("size", [32, (24, 40), (40, 24)])
@pytest.mark.parametrize("in_chans", [1, 3])
def test_pretrain_transform_shapes(random_image, size, in_chans):
    height, width = (size, size) if isinstance(size, int) else size
    x = pretrain_transform(size, in_chans)(random_image(50, 70))
    assert x.shape == (in_chans, height, width) and x.dtype == torch.float32


RECIPES = {
    "pretrain": lambda size, chans, **kw: pretrain_transform(size, chans, **kw),
    "eval": lambda size, chans, **kw: eval_transform(size, chans, **kw),
    "probe, 224 px": lambda size, chans, **kw: probe_transform(224, chans, **kw),
    "probe, small": lambda size, chans, **kw: probe_transform(size, chans, **kw),
}


@pytest.mark.parametrize("recipe", list(RECIPES))
@pytest.mark.parametrize("in_chans", [1, 3])
def test_uint8_images_normalised_on_the_device_are_the_recipe_to_the_bit(
    random_image, recipe, in_chans
):
    """The loaders ship uint8 crops and the device normalises the batch: the values must be
    exactly those of the float transform, image for image (same random draws)."""
    make = RECIPES[recipe]
    for seed, image in enumerate([random_image(250, 300), random_image(280, 236)]):
        torch.manual_seed(seed)
        expected = make((24, 40), in_chans)(image)
        torch.manual_seed(seed)
        crop = make((24, 40), in_chans, uint8=True)(image)
        assert crop.dtype == torch.uint8 and crop.shape == expected.shape
        got = model_input(torch.stack([crop, crop]), torch.device("cpu"))
        assert got.dtype == torch.float32
        assert torch.equal(got[0], expected) and torch.equal(got[1], expected)


def test_model_input_passes_float_batches_through_and_refuses_other_stats(random_image):
    floats = torch.randn(2, 3, 8, 8)
    assert model_input(floats, torch.device("cpu")) is floats
    with pytest.raises(CrossMAEError, match="ImageNet's mean and std"):
        eval_transform(32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), uint8=True)


@pytest.mark.parametrize(
    ("size", "source"), [(224, (300, 400)), ((224, 320), (260, 250)), (32, (20, 48))]
)
def test_eval_transform_shapes(random_image, size, source):
    height, width = (size, size) if isinstance(size, int) else size
    assert eval_transform(size)(random_image(*source)).shape == (3, height, width)
    assert eval_transform(size, in_chans=1)(random_image(*source)).shape == (1, height, width)


def test_eval_transform_keeps_small_images_intact(random_image):
    img = random_image(32, 32)
    expected = (np.asarray(img) / 255 - IMAGENET_MEAN) / IMAGENET_STD
    out = eval_transform(32)(img).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize(("size", "resized"), [(224, 256), (448, 448), (384, 384), (64, 64)])
def test_eval_resize_is_maes_crop_pct(size, resized):
    """MAE: crop_pct = 224 / 256 up to 224 px and 1 above (util/datasets.py); below 224 px
    no margin here (a 32-px image would lose an eighth)."""
    resize = eval_transform(size).transforms[0]
    assert resize.size == resized and eval_transform(size).transforms[1].size == (size, size)


def test_grey_uses_the_mean_statistics(random_image):
    img = random_image(32, 32, mode="L")
    expected = (np.asarray(img) / 255 - np.mean(IMAGENET_MEAN)) / np.mean(IMAGENET_STD)
    np.testing.assert_allclose(eval_transform(32, in_chans=1)(img)[0].numpy(), expected, atol=1e-5)


def test_mismatched_statistics_are_a_clear_error():
    with pytest.raises(CrossMAEError, match="4 mean and std values"):
        pretrain_transform(32, in_chans=4)


def test_pretrain_transform_is_the_papers_recipe():
    """RandomResizedCrop(224, scale 0.2-1, bicubic) + flip + ImageNet mean/std, as MAE."""
    import torchvision.transforms as T

    crop, flip, _, normalize = pretrain_transform(224).transforms
    assert isinstance(crop, T.RandomResizedCrop) and crop.size == (224, 224)
    assert crop.scale == (0.2, 1.0) and crop.ratio == pytest.approx((3 / 4, 4 / 3))
    assert crop.interpolation == T.InterpolationMode.BICUBIC
    assert isinstance(flip, T.RandomHorizontalFlip) and flip.p == 0.5
    assert tuple(normalize.mean) == pytest.approx((0.485, 0.456, 0.406))
    assert tuple(normalize.std) == pytest.approx((0.229, 0.224, 0.225))


@pytest.mark.parametrize("size", [(32, 16), (16, 32)])
def test_a_non_square_eval_crop_is_cut_from_the_image_never_padded(random_image, size):
    """The short side goes to the longer target side, so the crop always fits inside."""
    out = eval_transform(size)(random_image(20, 20))
    black = torch.tensor([(0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)])
    rows_or_cols = [out[:, 0], out[:, -1], out[:, :, 0], out[:, :, -1]]
    assert not any(torch.allclose(edge, black.view(3, 1).expand_as(edge)) for edge in rows_or_cols)
