"""Batched RandomResizedCrop: torchvision's box sampling and bicubic resampling."""

import math

import pytest
import torch
from torchvision.transforms import InterpolationMode, RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from crossmae.data.resized_crop import resized_crop, sample_resized_crops


def test_boxes_follow_torchvision_sampling():
    n, height, width = 4000, 20, 30
    boxes = sample_resized_crops(n, height, width, torch.Generator().manual_seed(1))
    top, left, h, w = boxes.unbind(1)
    assert ((top >= 0) & (left >= 0) & (top + h <= height) & (left + w <= width)).all()
    assert (boxes == boxes.round()).all()
    ours = (h * w / (height * width), torch.log(w / h))
    torch.manual_seed(2)
    theirs = torch.tensor([
        RandomResizedCrop.get_params(torch.empty(1, height, width), [0.2, 1.0], [3 / 4, 4 / 3])
        for _ in range(n)
    ], dtype=torch.float32)  # fmt: skip
    ref = (theirs[:, 2] * theirs[:, 3] / (height * width), torch.log(theirs[:, 3] / theirs[:, 2]))
    for mine, reference in zip(ours, ref, strict=True):
        assert abs(mine.mean() - reference.mean()) < 0.02
        assert abs(mine.std() - reference.std()) < 0.02
    for mine, reference in ((top, theirs[:, 0]), (left, theirs[:, 1])):
        assert abs(mine.mean() - reference.mean()) < 0.5
    # The offset is uniform over the free room, both ends included (a centred crop has the
    # same mean offset, and no spread).
    pairs = (((top, h), (theirs[:, 0], theirs[:, 2]), height),
             ((left, w), (theirs[:, 1], theirs[:, 3]), width))  # fmt: skip
    for (offset, size), (their_offset, their_size), full in pairs:
        room, their_room = full - size, full - their_size
        spread = (offset[room > 0] / room[room > 0]).std()
        their_spread = (their_offset[their_room > 0] / their_room[their_room > 0]).std()
        assert abs(spread - their_spread) < 0.03
        assert (offset[room > 0] == room[room > 0]).any() and (offset[room > 0] == 0).any()


def test_impossible_scales_fall_back_like_torchvision():
    boxes = sample_resized_crops(5, 10, 20, torch.Generator().manual_seed(0), scale=(3.0, 4.0))
    expected = RandomResizedCrop.get_params(torch.empty(1, 10, 20), [3.0, 4.0], [3 / 4, 4 / 3])
    assert boxes.tolist() == [list(map(float, expected))] * 5


@pytest.mark.parametrize(
    ("box", "size"),
    [((0, 0, 9, 13), (18, 26)), ((3, 5, 12, 14), (24, 24)), ((2, 1, 7, 12), (5, 5)),
     ((0, 0, 9, 13), (9, 13))],
    ids=["whole, enlarged", "sub-crop, enlarged", "sub-crop, shrunk", "identity"],
)  # fmt: skip
def test_crops_equal_torchvision_s_resize_with_pil_s_kernel(box, size):
    """torchvision's tensor resize with antialias is PIL's bicubic (a = -0.5, widened when
    shrinking), over the crop's own pixels; every output pixel, flipped or not."""
    images = torch.rand(2, 3, 24, 24) * 255
    top, left, h, w = box
    boxes = torch.tensor([box, box], dtype=torch.float32)
    out = resized_crop(images, boxes, size, flip=torch.tensor([False, True]))
    reference = TF.resized_crop(
        images, top, left, h, w, list(size), InterpolationMode.BICUBIC, antialias=True
    )
    torch.testing.assert_close(out[0], reference[0], atol=1e-3, rtol=0)
    torch.testing.assert_close(out[1], reference[1].flip(-1), atol=1e-3, rtol=0)


def test_real_images_match_the_pil_pipeline_of_the_recipe():
    """RandomResizedCrop on PIL images, as MAE pretrains: the same boxes and flips give the
    same pixels up to PIL's rounding to 8 bits between its two passes."""
    import numpy as np
    from torchvision.transforms import functional as PF

    from crossmae.data import open_image_dataset

    demo = open_image_dataset(None, "test")
    pils = [demo[i][0] for i in range(0, 1000, 5)]
    images = torch.stack([torch.from_numpy(np.array(p)).permute(2, 0, 1) for p in pils])
    boxes = sample_resized_crops(len(pils), 32, 32, torch.Generator().manual_seed(0))
    flip = torch.rand(len(pils), generator=torch.Generator().manual_seed(1)) < 0.5
    out = resized_crop(images, boxes, (32, 32), flip)
    reference = []
    for pil, box, flipped in zip(pils, boxes.int().tolist(), flip.tolist(), strict=True):
        crop = PF.resized_crop(pil, *box, [32, 32], InterpolationMode.BICUBIC)
        crop = PF.hflip(crop) if flipped else crop
        reference.append(torch.from_numpy(np.array(crop)).permute(2, 0, 1))
    gap = (out - torch.stack(reference).float()).abs()
    assert gap.mean() < 0.4 and gap.max() < 10  # bicubic a = -0.75 was 1.3 on average


@pytest.mark.parametrize("size", [(8, 8), (6, 10)])
def test_output_size_dtype_and_range(size):
    images = torch.randint(0, 256, (5, 1, 12, 12), dtype=torch.uint8)
    boxes = sample_resized_crops(5, 12, 12, torch.Generator().manual_seed(3))
    out = resized_crop(images, boxes, size)
    assert out.shape == (5, 1, *size) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 255
    assert not math.isclose(out.std().item(), 0.0)
