"""The linear probe's crop: MAE's single draw, clipped to the image (not torchvision's)."""

import math

import torch

from crossmae.eval.augment import OneDrawResizedCrop, probe_transform


def test_a_box_too_wide_for_the_image_is_clipped_not_replaced_by_a_centre_crop():
    torch.manual_seed(0)
    img = torch.empty(3, 100, 100)
    for _ in range(50):
        top, left, h, w = OneDrawResizedCrop.get_params(img, (0.9, 1.0), (3.0, 3.5))
        assert w == 100 and top + h <= 100 and left == 0
        # h from the drawn area and ratio (51-58 px); torchvision falls back to 100 / 3 = 33
        assert round(math.sqrt(9000 / 3.5)) <= h <= round(math.sqrt(10000 / 3.0))


def test_boxes_have_the_drawn_area_and_lie_inside_the_image():
    torch.manual_seed(1)
    img = torch.empty(3, 120, 200)
    offsets = set()
    for _ in range(200):
        top, left, h, w = OneDrawResizedCrop.get_params(img, (0.25, 0.25), (1.0, 1.0))
        assert h == w == round(math.sqrt(0.25 * 120 * 200))
        assert 0 <= top <= 120 - h and 0 <= left <= 200 - w
        offsets.add((top, left))
    assert len(offsets) > 100  # the offset is drawn too


def test_the_probe_recipe_uses_it_at_224_px():
    crop = probe_transform(224).transforms[0]
    assert isinstance(crop, OneDrawResizedCrop) and crop.size == (224, 224)
    assert crop.scale == (0.08, 1.0)  # MAE's main_linprobe.py keeps torchvision's default
