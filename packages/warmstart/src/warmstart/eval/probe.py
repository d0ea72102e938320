"""Frozen-feature evaluation: a linear probe (multinomial logistic regression) and DINO's weighted kNN.

Seed papers: the linear-probe protocol of "A Simple Framework for Contrastive Learning of Visual
Representations" (SimCLR, arXiv 2002.05709) and CLIP (arXiv 2103.00020, L-BFGS logistic regression on frozen
features); the kNN classifier of "Emerging Properties in Self-Supervised Vision Transformers" (DINO, arXiv
2104.14294: cosine similarity, top-k neighbours, votes weighted by exp(sim / T), T = 0.07), which Corley et
al. (arXiv 2305.13456) recommend for remote sensing with k = 5. Written in torch (no sklearn dependency in
the core). Left out: hyper-parameter sweeps of the probe's weight decay (pass ``weight_decay``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F


@dataclass
class ProbeResult:
    accuracy: float
    """Top-1 accuracy on the test features."""
    train_accuracy: float
    weight: torch.Tensor
    """(C, D) on the standardised features."""
    bias: torch.Tensor
    mean: torch.Tensor
    """Feature mean used for standardisation (D,)."""
    std: torch.Tensor

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        z = (features.float() - self.mean) / self.std
        return (z @ self.weight.T + self.bias).argmax(-1)


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    num_classes: int | None = None,
    weight_decay: float = 1e-4,
    optimizer: Literal["lbfgs", "adam"] = "lbfgs",
    max_iter: int = 200,
    lr: float = 1e-2,
    standardize: bool = True,
    seed: int = 0,
) -> ProbeResult:
    """Fit softmax regression on frozen (N, D) features, full batch; report test accuracy.

    Features are standardised with the training mean/std (if ``standardize``). ``lbfgs`` (default) runs
    ``max_iter`` L-BFGS iterations with a strong-Wolfe line search; ``adam`` runs ``max_iter`` full-batch
    steps at ``lr``. The L2 penalty ``weight_decay · ‖W‖²`` excludes the bias.
    """
    x = train_features.detach().float()
    y = train_labels.detach().long()
    c = num_classes if num_classes is not None else int(max(y.max(), test_labels.max())) + 1
    mean = x.mean(0) if standardize else torch.zeros(x.shape[1])
    std = x.std(0).clamp_min(1e-6) if standardize and x.shape[0] > 1 else torch.ones(x.shape[1])
    z = (x - mean) / std  # (N, D)
    g = torch.Generator().manual_seed(seed)
    weight = (torch.randn(c, x.shape[1], generator=g) * 0.01).requires_grad_(True)
    bias = torch.zeros(c, requires_grad=True)

    def objective() -> torch.Tensor:
        return F.cross_entropy(z @ weight.T + bias, y) + weight_decay * weight.pow(2).sum()

    if optimizer == "lbfgs":
        lbfgs = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            lbfgs.zero_grad()
            loss = objective()
            loss.backward()
            return loss

        lbfgs.step(closure)
    else:
        adam = torch.optim.Adam([weight, bias], lr=lr)
        for _ in range(max_iter):
            adam.zero_grad()
            objective().backward()
            adam.step()
    result = ProbeResult(0.0, 0.0, weight.detach(), bias.detach(), mean, std)
    result.train_accuracy = float((result.predict(x) == y).float().mean())
    result.accuracy = float((result.predict(test_features) == test_labels.long()).float().mean())
    return result


@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    batch_size: int = 1024,
) -> torch.Tensor:
    """DINO's weighted kNN: class scores = Σ over the k nearest (cosine) neighbours of exp(sim / T).

    Returns class scores (M, C); ``argmax(-1)`` is the prediction. Test features are processed in chunks of
    ``batch_size``.
    """
    train = F.normalize(train_features.float(), dim=-1)  # (N, D)
    labels = train_labels.long()
    c = num_classes if num_classes is not None else int(labels.max()) + 1
    k = min(k, train.shape[0])
    out = []
    for start in range(0, test_features.shape[0], batch_size):
        q = F.normalize(test_features[start : start + batch_size].float(), dim=-1)  # (m, D)
        sims, idx = (q @ train.T).topk(k, dim=1)  # (m, k)
        weights = (sims / temperature).exp()
        votes = torch.zeros(q.shape[0], c)
        votes.scatter_add_(1, labels[idx], weights)
        out.append(votes)
    return torch.cat(out)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
) -> float:
    """Top-1 accuracy of :func:`knn_predict`."""
    scores = knn_predict(
        train_features, train_labels, test_features, k=k, temperature=temperature, num_classes=num_classes
    )
    return float((scores.argmax(-1) == test_labels.long()).float().mean())
