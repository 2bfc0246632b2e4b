"""Small data sets decoded once into a uint8 tensor and augmented batch-wise on the device.

For CIFAR-sized data the PIL pipeline, not the model, limits a GPU; here one epoch costs
one `randperm` and a few random tensors, and each batch is a gather, two batched matrix
products (the crop's bicubic resampling) and a normalisation, with no host synchronisation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset

from crossmae.data.decode import image_mode
from crossmae.data.resized_crop import resized_crop, sample_resized_crops
from crossmae.data.subset import underlying
from crossmae.data.transforms import IMAGENET_MEAN, IMAGENET_STD, channel_stats, size_pair
from crossmae.errors import CrossMAEError


class _ToUint8:
    """Collate (PIL image, label) pairs to a (B, C, H, W) uint8 batch at the stored size."""

    def __init__(self, size: tuple[int, int], mode: str) -> None:
        self.size = size
        self.mode = mode

    def __call__(
        self, items: list[tuple[Image.Image, int] | None]
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The batch without its bad images (None items); None if none was good."""
        items = [item for item in items if item is not None]
        if not items:
            return None
        arrays = [np.asarray(self._fit(img)) for img, _ in items]
        images = torch.from_numpy(np.stack(arrays))
        images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
        return images.contiguous(), torch.tensor([label for _, label in items])

    def _fit(self, img: Image.Image) -> Image.Image:
        """Resize to cover the stored size and centre-crop; images already that size pass."""
        img = img if img.mode == self.mode else img.convert(self.mode)
        height, width = self.size
        if img.size == (width, height):
            return img
        return ImageOps.fit(img, (width, height), method=Image.Resampling.BICUBIC)


class InMemoryImages:
    """Images (N, C, H, W) uint8 and labels (N,) on one device, served as augmented batches."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        classes: list[str] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise CrossMAEError(
                f"images must be uint8 (N, C, H, W), not {images.dtype} {tuple(images.shape)}"
            )
        self.images = images
        self.labels = labels.to(images.device)
        self.classes = classes
        mean, std = channel_stats(mean, std, images.shape[1])
        # (x / 255 - mean) / std as one subtract and one divide on 0-255 values.
        self._shift = torch.tensor(mean, device=images.device).view(1, -1, 1, 1) * 255
        self._scale = torch.tensor(std, device=images.device).view(1, -1, 1, 1) * 255

    @classmethod
    def from_dataset(
        cls,
        dataset: Dataset,
        img_size: int | Sequence[int],
        in_chans: int = 3,
        device: str | torch.device | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        num_workers: int = 0,
    ) -> InMemoryImages:
        """Decode every item of a set without transform (PIL images) once, onto `device`.

        Images not of `img_size` are resized to cover it and centre-cropped; `device`
        defaults to the GPU when there is one.
        """
        if getattr(dataset, "transform", None) is not None:
            raise CrossMAEError("InMemoryImages.from_dataset needs a data set without transform")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        collate = _ToUint8(size_pair(img_size), image_mode(in_chans))
        # its own generator: drawing the workers' seed from the global one would change the
        # model's initial weights with the choice of data path
        loader = DataLoader(dataset, batch_size=256, num_workers=num_workers, collate_fn=collate,
                            generator=torch.Generator())  # fmt: skip
        base = underlying(dataset)
        replaces = getattr(base, "replace_bad", None)
        if replaces:  # a bad image is left out, not held twice (once for its stand-in)
            base.replace_bad = False
        try:
            parts = [part for part in loader if part is not None]
        finally:
            if replaces:
                base.replace_bad = replaces
        if not parts:
            raise CrossMAEError(f"{dataset!r} holds no images")
        images = torch.cat([p[0] for p in parts]).to(device)
        labels = torch.cat([p[1] for p in parts]).to(device)
        return cls(images, labels, getattr(dataset, "classes", None), mean, std)

    @property
    def num_classes(self) -> int | None:
        return None if self.classes is None else len(self.classes)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def __len__(self) -> int:
        return self.images.shape[0]

    def num_batches(self, batch_size: int, drop_last: bool = True, world_size: int = 1) -> int:
        """Batches each rank gets per epoch."""
        per_rank = self._per_rank(drop_last, world_size)
        return per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)

    def _per_rank(self, drop_last: bool, world_size: int) -> int:
        # Without drop_last every rank gets ceil(N / world) images, wrapping around like
        # DistributedSampler, so that all ranks run the same number of steps.
        n = len(self)
        return n // world_size if drop_last else math.ceil(n / world_size)

    def batches(
        self,
        batch_size: int,
        generator: torch.Generator,
        *,
        drop_last: bool = True,
        augment: bool = True,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of `(images float (B, C, H, W) normalised, labels (B,))` for `rank`.

        All of the epoch's randomness (order, crop boxes, flips) is drawn from `generator`
        when this is called, in an order that does not depend on rank, world size or start_batch:
        every rank sees one shard of the same permutation, and a run resumed with
        `start_batch=k` (generator in the same state) gets exactly batches k, k+1, ...
        """
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise CrossMAEError(
                "need batch_size >= 1 and 0 <= rank < world_size, got "
                f"batch_size={batch_size}, rank={rank}, world_size={world_size}"
            )
        steps = self.num_batches(batch_size, drop_last, world_size)
        if steps == 0:
            raise CrossMAEError(
                f"a batch of {batch_size} is more than the {len(self):,} images give each of "
                f"{world_size} rank(s); use a smaller batch or drop_last=False"
            )
        if not 0 <= start_batch <= steps:
            raise CrossMAEError(f"start_batch {start_batch} is outside the epoch's {steps} batches")
        n = len(self)
        order = torch.randperm(n, generator=generator, device=generator.device).to(self.device)
        boxes = flips = None
        if augment:
            _, _, height, width = self.images.shape
            boxes = sample_resized_crops(n, height, width, generator).to(self.device)
            flips = torch.rand(n, generator=generator, device=generator.device) < 0.5
            flips = flips.to(self.device)
        per_rank = self._per_rank(drop_last, world_size)
        slots = (torch.arange(per_rank * world_size, device=self.device) % n)[rank::world_size]
        spans = [slots[i * batch_size : (i + 1) * batch_size] for i in range(start_batch, steps)]
        return self._serve(order, spans, boxes, flips)

    def _serve(
        self,
        order: torch.Tensor,
        spans: list[torch.Tensor],
        boxes: torch.Tensor | None,
        flips: torch.Tensor | None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for pos in spans:
            index = order[pos]
            images = self.images[index]
            if boxes is None:
                images = images.float()
            else:
                images = resized_crop(images, boxes[pos], tuple(images.shape[-2:]), flips[pos])
            yield images.sub_(self._shift).div_(self._scale), self.labels[index]

    def __repr__(self) -> str:
        n, c, h, w = self.images.shape
        return f"InMemoryImages({n:,} x {c}x{h}x{w} uint8 on {self.device})"
