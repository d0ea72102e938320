"""Linear probe and DINO-style weighted kNN on frozen features."""

from __future__ import annotations

import pytest
import torch

from warmstart.eval import knn_accuracy, knn_predict, linear_probe


def _clusters(seed: int, n: int, classes: int = 3, dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99)) * 4
    y = torch.arange(n) % classes
    return centers[y] + torch.randn(n, dim, generator=g), y


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_linear_probe_separates_clusters(optimizer: str) -> None:
    xtr, ytr = _clusters(0, 150)
    xte, yte = _clusters(1, 90)
    res = linear_probe(xtr, ytr, xte, yte, optimizer=optimizer, max_iter=100 if optimizer == "lbfgs" else 300)
    assert res.accuracy >= 0.95 and res.train_accuracy >= 0.95
    assert torch.equal(res.predict(xte), (res.predict(xte)))


def test_linear_probe_random_labels_is_near_chance() -> None:
    g = torch.Generator().manual_seed(3)
    xtr, xte = torch.randn(200, 5, generator=g), torch.randn(400, 5, generator=g)
    ytr, yte = torch.randint(2, (200,), generator=g), torch.randint(2, (400,), generator=g)
    res = linear_probe(xtr, ytr, xte, yte, weight_decay=1e-2)
    assert 0.4 < res.accuracy < 0.6


def test_knn_weighted_vote_differs_from_majority() -> None:
    # one very close class-1 neighbour outweighs two farther class-0 neighbours at T = 0.07
    query = torch.tensor([[1.0, 0.0]])
    train = torch.tensor([[0.99, 0.141], [0.5, 0.866], [0.5, -0.866]])
    labels = torch.tensor([1, 0, 0])
    scores = knn_predict(train, labels, query, k=3, temperature=0.07)
    sims = torch.nn.functional.normalize(train, dim=-1) @ torch.nn.functional.normalize(query, dim=-1).T
    expected1 = float(torch.exp(sims[0] / 0.07))
    expected0 = float(torch.exp(sims[1] / 0.07) + torch.exp(sims[2] / 0.07))
    assert torch.allclose(scores[0], torch.tensor([expected0, expected1]), rtol=1e-5)
    assert int(scores.argmax()) == 1
    # with a high temperature the vote approaches the majority
    assert int(knn_predict(train, labels, query, k=3, temperature=100.0).argmax()) == 0


def test_knn_accuracy_on_clusters() -> None:
    xtr, ytr = _clusters(0, 150)
    xte, yte = _clusters(1, 60)
    assert knn_accuracy(xtr, ytr, xte, yte, k=5) >= 0.95
