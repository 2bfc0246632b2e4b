"""kNN accuracy of the encoder's features during pretraining: a cheap sign of progress.

Features are the mean of the encoder's patch tokens on unmasked images (a fusion CrossMAE
encoder has no final norm; the kNN compares cosine similarities, so no norm is needed).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
from torch.utils.data import DataLoader, Dataset

from crossmae.data.subset import random_subset
from crossmae.errors import CrossMAEError
from crossmae.models.autoencoder import MaskedAutoencoder


class OnlineKNN:
    """A labeled train split (the neighbours) and an eval split (the queries)."""

    def __init__(
        self,
        train: Dataset,
        evaluate: Dataset,
        *,
        k: int = 20,
        max_images: int = 10000,
        batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        self.num_classes = getattr(train, "num_classes", None)
        if not self.num_classes:
            raise CrossMAEError(
                "kNN monitoring needs labeled data (class folders, or shards with .cls labels)"
            )
        if getattr(evaluate, "classes", None) != getattr(train, "classes", None):
            raise CrossMAEError(
                "kNN monitoring needs the same class folders in its train and eval splits "
                "(a label is a class folder's rank, so other folders would mislabel it)"
            )
        self.k = k
        self.splits = [
            random_subset(dataset, max_images, seed + i, f"kNN monitor's {name}")
            for i, (dataset, name) in enumerate(((train, "train"), (evaluate, "eval")))
        ]
        self.loader_options = {"batch_size": batch_size, "num_workers": num_workers}

    @torch.no_grad()
    def features(
        self,
        model: MaskedAutoencoder,
        dataset: Dataset,
        device: torch.device,
        autocast: Callable[[], AbstractContextManager] = nullcontext,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from crossmae.eval.features import extract_features

        def patch_mean(images: torch.Tensor) -> torch.Tensor:
            return model.forward_features(images)[:, 1:].float().mean(dim=1)

        loader = DataLoader(dataset, **self.loader_options, pin_memory=device.type == "cuda")
        # in the training step's precision (bf16 on a GPU), then onto the device for the vote
        feats, labels = extract_features(patch_mean, loader, device, autocast)
        return feats.to(device), labels.to(device)

    def accuracy(
        self,
        model: MaskedAutoencoder,
        device: torch.device,
        autocast: Callable[[], AbstractContextManager] = nullcontext,
    ) -> float:
        """Top-1 accuracy in percent of a weighted k-NN vote on the eval split."""
        from crossmae.eval.knn import knn_accuracy

        was_training = model.training
        model.eval()
        try:
            train_x, train_y = self.features(model, self.splits[0], device, autocast)
            eval_x, eval_y = self.features(model, self.splits[1], device, autocast)
        finally:
            model.train(was_training)
        keep = train_y >= 0
        return knn_accuracy(train_x[keep], train_y[keep], eval_x, eval_y,
                            self.num_classes, k=self.k)  # fmt: skip
