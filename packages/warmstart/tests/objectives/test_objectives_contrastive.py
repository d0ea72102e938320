"""InfoNCE/CLIP equal their cross-entropy definitions; soft labels reduce to InfoNCE for one-hot targets."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from warmstart.objectives import ClipLoss, info_nce, label_similarity, nt_xent, soft_contrastive_loss


def test_info_nce_matches_definition_and_is_minimised_by_alignment() -> None:
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    logits = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).T / 0.1
    row = -torch.diag(F.log_softmax(logits, 1)).mean()
    col = -torch.diag(F.log_softmax(logits.T, 1)).mean()
    assert torch.allclose(info_nce(q, k, temperature=0.1), row)
    assert torch.allclose(info_nce(q, k, temperature=0.1, symmetric=True), (row + col) / 2)
    # orthonormal aligned pairs at low temperature: loss → 0
    eye = torch.eye(6)
    assert float(info_nce(eye, eye, temperature=0.01)) < 1e-6


def test_clip_loss_temperature_is_learnable_and_clamped() -> None:
    crit = ClipLoss(init_temperature=0.07)
    assert math.isclose(float(crit.temperature.detach()), 0.07, rel_tol=1e-5)
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    crit(a, b).backward()
    assert crit.logit_scale.grad is not None and crit.logit_scale.grad.abs() > 0
    with torch.no_grad():
        crit.logit_scale.fill_(10.0)
    assert math.isclose(float(crit.temperature.detach()), 0.01, rel_tol=1e-6)


def test_label_similarity_jaccard_and_cosine() -> None:
    labels = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]])
    j = label_similarity(labels)
    assert torch.allclose(j[0, 1], torch.tensor(1 / 3))
    assert float(j[0, 0]) == 1.0 and float(j[2, 2]) == 1.0 and float(j[0, 2]) == 0.0
    c = label_similarity(labels, kind="cosine")
    assert torch.allclose(c[0, 1], torch.tensor(0.5))


def test_soft_contrastive_with_identity_targets_equals_info_nce() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    for sym in (False, True):
        assert torch.allclose(
            soft_contrastive_loss(a, b, torch.eye(5), temperature=0.2, symmetric=sym),
            info_nce(a, b, temperature=0.2, symmetric=sym),
        )


def test_soft_contrastive_prefers_label_consistent_embeddings() -> None:
    labels = torch.tensor([[1, 0], [1, 0], [0, 1], [0, 1]])
    targets = label_similarity(labels)
    by_label = labels.float() * 5  # samples sharing labels share embeddings
    shuffled = by_label[[2, 3, 0, 1]]
    assert soft_contrastive_loss(by_label, by_label, targets) < soft_contrastive_loss(
        shuffled, by_label, targets
    )


def test_nt_xent_is_simclr_loss_with_same_view_negatives() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    z = F.normalize(torch.cat([a, b]), dim=-1)
    sim = z @ z.T / 0.1
    terms = []
    for i in range(8):  # SimCLR's l(i, j): -log exp(s_ij) / sum_{k != i} exp(s_ik)
        j = (i + 4) % 8
        others = torch.cat([sim[i, :i], sim[i, i + 1 :]])
        terms.append(-(sim[i, j] - torch.logsumexp(others, 0)))
    assert torch.allclose(nt_xent(a, b, 0.1), torch.stack(terms).mean(), atol=1e-5)
    assert float(nt_xent(a, a + 1e-3 * b, 0.05)) < float(nt_xent(a, b, 0.05))  # aligned pairs lower it
    # unlike the symmetric CLIP loss, same-view negatives count: the two differ
    assert not torch.allclose(nt_xent(a, b, 0.1), info_nce(a, b, temperature=0.1, symmetric=True))
