"""Weighted kNN: perfect on separable features, chance on random labels."""

import pytest
import torch

from crossmae.eval.knn import knn_accuracy, knn_predict


def test_separable_features_score_100():
    num_classes, dim = 7, 32
    centers = torch.randn(num_classes, dim) * 5
    train_y = torch.arange(num_classes).repeat_interleave(30)
    test_y = torch.randint(num_classes, (200,))
    train = centers[train_y] + torch.randn(len(train_y), dim) * 0.1
    test = centers[test_y] + torch.randn(len(test_y), dim) * 0.1
    test = test * (torch.rand(len(test_y), 1) * 3 + 0.1)  # cosine: the scale must not matter
    assert knn_accuracy(train, train_y, test, test_y, num_classes, k=20) == 100.0


def test_random_labels_score_chance():
    num_classes = 10
    train, test = torch.randn(4000, 16), torch.randn(2000, 16)
    train_y = torch.randint(num_classes, (4000,))
    test_y = torch.randint(num_classes, (2000,))
    acc = knn_accuracy(train, train_y, test, test_y, num_classes=num_classes)
    assert acc == pytest.approx(100 / num_classes, abs=3.0)


def test_votes_are_exp_similarity_over_temperature():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[2.0, 0.5]])
    scores = knn_predict(train, labels, query, num_classes=3, k=2, temperature=0.5)
    q = query / query.norm()
    sims = torch.nn.functional.normalize(train, dim=1) @ q[0]
    # the two nearest are train[0] (label 0) and train[2] (label 1)
    expected = torch.tensor([[(sims[0] / 0.5).exp(), (sims[2] / 0.5).exp(), 0.0]])
    torch.testing.assert_close(scores, expected)


def test_k_larger_than_the_train_set_and_chunking_agree():
    train, train_y = torch.randn(5, 4), torch.randint(3, (5,))
    query = torch.randn(9, 4)
    whole = knn_predict(train, train_y, query, 3, k=50)
    chunked = knn_predict(train, train_y, query, 3, k=50, chunk_size=2)
    torch.testing.assert_close(whole, chunked)


def test_the_default_temperature_is_dinos_007():
    """The online monitor passes only k: its votes weigh exp(similarity / 0.07)."""
    train = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[0.8, 0.6]])
    sims = torch.nn.functional.normalize(query, dim=1) @ train.T
    votes = (sims / 0.07).exp()[0]
    expected = torch.stack([votes[0], votes[1] + votes[2]])[None]
    torch.testing.assert_close(knn_predict(train, labels, query, 2, k=3), expected)
