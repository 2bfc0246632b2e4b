"""The probe's and fine-tuning's augmentations: MAE's single-draw crop, clipped to the image
(not torchvision's), RandAugment, and random erasing on the device for uint8 crops."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

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


def test_probe_images_are_normalised_with_the_imagenet_statistics():
    """An image of the ImageNet mean colour comes out zero, at both recipes' sizes."""
    from PIL import Image

    mean_colour = Image.new("RGB", (40, 40), (124, 116, 104))  # 0.485, 0.456, 0.406 of 255
    for size in (32, 224):
        out = probe_transform(size)(mean_colour)
        assert out.shape == (3, size, size) and out.abs().max() < 0.01


def test_posterize_to_one_bit_keeps_the_bright_half():
    from PIL import Image

    from crossmae.eval.augment import _posterize

    img = Image.new("RGB", (4, 4), (200, 90, 130))
    assert _posterize(img, 1).getpixel((0, 0)) == (128, 0, 128)
    assert _posterize(img, 0).getpixel((0, 0)) == (0, 0, 0)  # what older Pillow gave


def test_small_images_take_a_reflect_padded_crop_shifted_by_up_to_an_eighth():
    """At 32 px each probe crop is the image reflect-padded by 4 px, cut at a shift within
    ±4 (every shift reached), perhaps flipped; never resized, never a zero border."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(3).integers(50, 200, (32, 32, 3), dtype=np.uint8)
    image = torch.from_numpy(pixels).permute(2, 0, 1).double()
    padded = torch.nn.functional.pad(image[None], (4, 4, 4, 4), mode="reflect")[0]
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(3, 1, 1)
    transform = probe_transform(32)
    shifts, flips = set(), set()
    for _ in range(60):
        out = (transform(Image.fromarray(pixels)).double() * std + mean) * 255
        found = [
            (dy, dx, flip)
            for dy in range(9)
            for dx in range(9)
            for flip in (False, True)
            for crop in [padded[:, dy : dy + 32, dx : dx + 32]]
            if (out - (crop.flip(2) if flip else crop)).abs().max() < 0.01
        ]
        assert found, "a crop that is no shift of the reflect-padded image"
        dy, dx, flip = found[0]
        shifts.add(max(abs(dy - 4), abs(dx - 4)))
        flips.add(flip)
    assert max(shifts) == 4 and flips == {False, True}


def test_small_image_randaugment_translates_by_045_of_the_side_as_timm_does_at_224():
    from crossmae.eval.augment import finetune_transform

    (augment,) = [t for t in finetune_transform(32).transforms if hasattr(t, "ops")]
    translates = [op for op in augment.ops if op.name.startswith("Translate")]
    assert translates and all(op.hparams["translate_const"] == 14 for op in translates)


@pytest.mark.parametrize("size", [32, 224])
@pytest.mark.parametrize("in_chans", [1, 3])
def test_uint8_fine_tuning_crops_normalised_on_the_device_are_the_recipe_to_the_bit(size, in_chans):
    """RandAugment included (it draws from Python's, NumPy's and torch's generators)."""
    from crossmae.data import model_input
    from crossmae.eval.augment import finetune_transform
    from crossmae.train.checkpointing import seed_everything

    rng = np.random.default_rng(size + in_chans)
    image = Image.fromarray(rng.integers(0, 256, (size + 9, size + 21, 3), dtype=np.uint8))
    floats = finetune_transform(size, in_chans, re_prob=0)
    crops = finetune_transform(size, in_chans, re_prob=0, uint8=True)
    for seed in range(4):
        seed_everything(seed)
        expected = floats(image)
        seed_everything(seed)
        crop = crops(image)
        assert crop.dtype == torch.uint8
        assert torch.equal(model_input(crop[None], torch.device("cpu"))[0], expected)


def test_random_erasing_is_left_to_the_device_only_for_uint8_crops():
    from timm.data.random_erasing import RandomErasing

    from crossmae.eval.augment import finetune_transform

    for size in (32, 224):
        assert isinstance(finetune_transform(size).transforms[-1], RandomErasing)
        crops = finetune_transform(size, uint8=True).transforms
        assert not any(isinstance(step, RandomErasing) for step in crops)


def test_device_erasing_puts_one_box_of_noise_into_each_image_it_erases():
    from crossmae.eval.augment import device_erasing

    assert device_erasing(0.0, torch.device("cpu")) is None
    batch = torch.full((6, 3, 16, 16), 7.0)
    erased = device_erasing(1.0, torch.device("cpu"))(batch.clone())
    for image in erased:
        changed = (image != 7.0).any(dim=0)
        rows, cols = changed.any(dim=1).nonzero()[:, 0], changed.any(dim=0).nonzero()[:, 0]
        assert changed.sum() > 0  # every image: probability 1
        box = changed[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all() and changed.sum() == box.numel()  # one filled rectangle
        assert image[:, changed].std() > 0.5  # per-pixel normal noise, not a colour
