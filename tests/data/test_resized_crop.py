"""Batched RandomResizedCrop: torchvision's box sampling and bicubic resampling."""

import math

import pytest
import torch
import torch.nn.functional as F
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


def test_whole_image_crop_matches_bicubic_interpolate():
    images = torch.randint(0, 256, (2, 3, 9, 13), dtype=torch.uint8)
    boxes = torch.tensor([[0.0, 0.0, 9.0, 13.0]] * 2)
    out = resized_crop(images, boxes, (18, 26), flip=torch.tensor([False, True]))
    reference = F.interpolate(images.float(), (18, 26), mode="bicubic", align_corners=False)
    reference = reference.clamp(0, 255)
    torch.testing.assert_close(out[0], reference[0], atol=1e-3, rtol=0)
    torch.testing.assert_close(out[1], reference[1].flip(-1), atol=1e-3, rtol=0)


def test_sub_crop_matches_torchvision_away_from_its_edges():
    image = torch.rand(1, 2, 24, 24) * 255
    top, left, h, w = 3, 5, 12, 14
    out = resized_crop(image, torch.tensor([[top, left, h, w]], dtype=torch.float32), (24, 24))
    reference = TF.resized_crop(
        image, top, left, h, w, [24, 24], InterpolationMode.BICUBIC, antialias=False
    )
    middle = (..., slice(6, 18), slice(6, 18))  # bicubic taps stay inside the crop here
    torch.testing.assert_close(out[middle], reference[middle], atol=1e-3, rtol=0)


@pytest.mark.parametrize("size", [(8, 8), (6, 10)])
def test_output_size_dtype_and_range(size):
    images = torch.randint(0, 256, (5, 1, 12, 12), dtype=torch.uint8)
    boxes = sample_resized_crops(5, 12, 12, torch.Generator().manual_seed(3))
    out = resized_crop(images, boxes, size)
    assert out.shape == (5, 1, *size) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 255
    assert not math.isclose(out.std().item(), 0.0)
