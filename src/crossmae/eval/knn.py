"""Weighted k-nearest-neighbour classification on frozen features (as in DINO)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """(Q, C) class scores: each of the k most cosine-similar training samples votes for its
    label with weight exp(similarity / temperature).

    Queries go through in chunks so a (Q, N) similarity matrix never has to fit in memory.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    train = F.normalize(train_features.float(), dim=1)
    labels = train_labels.to(train.device)
    k = min(k, train.shape[0])
    scores = []
    for queries in query_features.float().split(chunk_size):
        sims = F.normalize(queries.to(train.device), dim=1) @ train.T
        top_sims, top_idx = sims.topk(k, dim=1)
        votes = torch.zeros(queries.shape[0], num_classes, device=train.device)
        votes.scatter_add_(1, labels[top_idx], (top_sims / temperature).exp())
        scores.append(votes)
    return torch.cat(scores)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Top-1 accuracy in percent of `knn_predict` on the test set."""
    scores = knn_predict(train_features, train_labels, test_features, num_classes, k, temperature)
    correct = int((scores.argmax(1).cpu() == test_labels.cpu()).sum())
    return 100.0 * correct / len(test_labels)
