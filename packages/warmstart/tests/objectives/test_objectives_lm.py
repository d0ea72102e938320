"""CLM/MLM/UL2: losses equal their definitions, masking follows 80/10/10, span corruption is invertible."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from warmstart.objectives import (
    Denoiser,
    UL2Mixture,
    clm_loss,
    denoise,
    mlm_loss,
    mlm_mask,
    random_spans_noise_mask,
    span_corrupt,
    span_uncorrupt,
    ul2_default_denoisers,
)


def test_clm_loss_is_shifted_token_mean_with_ignore_and_mask() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g)
    labels = torch.randint(7, (2, 5), generator=g)
    labels[1, 3] = -100
    mask = torch.ones(2, 5)
    mask[0, 2] = 0
    # brute force: every (b, t) with t >= 1 whose label is not ignored and whose mask is 1
    terms = []
    for b in range(2):
        for t in range(1, 5):
            if labels[b, t] != -100 and mask[b, t] == 1:
                terms.append(-F.log_softmax(logits[b, t - 1], -1)[labels[b, t]])
    expected = torch.stack(terms).mean()
    assert torch.allclose(clm_loss(logits, labels, loss_mask=mask), expected, atol=1e-6)
    assert torch.allclose(clm_loss(logits, labels, loss_mask=mask, reduction="sum"), expected * len(terms))
    assert clm_loss(logits, labels, reduction="none").shape == (2, 4)


def test_clm_uniform_logits_give_log_vocab() -> None:
    logits = torch.zeros(3, 6, 11)
    labels = torch.randint(11, (3, 6))
    assert math.isclose(float(clm_loss(logits, labels)), math.log(11), rel_tol=1e-6)


def test_mlm_mask_80_10_10_and_specials() -> None:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 1000, (64, 256), generator=g)
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = True
    masked, labels = mlm_mask(ids, mask_token_id=3, vocab_size=1000, special_tokens_mask=special, generator=g)
    chosen = labels != -100
    assert not chosen[:, 0].any()
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(masked[~chosen], ids[~chosen])  # unchosen tokens untouched
    frac = chosen.float().mean().item()
    assert abs(frac - 0.15 * 255 / 256) < 0.01
    n = chosen.sum().item()
    mask_frac = (masked[chosen] == 3).sum().item() / n
    kept_frac = (masked[chosen] == ids[chosen]).sum().item() / n
    assert abs(mask_frac - 0.8) < 0.02
    assert abs(kept_frac - 0.1) < 0.02  # random replacements rarely hit the original id (1 / 1000)


def test_mlm_loss_only_counts_chosen_positions() -> None:
    logits = torch.randn(2, 4, 9)
    labels = torch.full((2, 4), -100)
    labels[0, 1] = 5
    expected = -F.log_softmax(logits[0, 1], -1)[5]
    assert torch.allclose(mlm_loss(logits, labels), expected)


@settings(max_examples=40, deadline=None)
@given(
    length=st.integers(4, 300),
    density=st.floats(0.05, 0.6),
    mean_span=st.floats(1.0, 40.0),
    seed=st.integers(0, 10_000),
)
def test_span_corruption_roundtrip_and_density(
    length: int, density: float, mean_span: float, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    mask = random_spans_noise_mask(length, density, mean_span, generator=g)
    num_noise = min(max(round(length * density), 1), length - 1)
    assert int(mask.sum()) == num_noise
    tokens = list(range(1000, 1000 + length))
    sentinels = list(range(300))
    inputs, targets = span_corrupt(tokens, mask, sentinels)
    assert span_uncorrupt(inputs, targets, sentinels) == tokens
    spans = int((mask[1:] & ~mask[:-1]).sum()) + int(mask[0])
    assert sum(t in set(sentinels) for t in inputs) == spans
    assert len(inputs) == length - num_noise + spans


def test_s_denoiser_is_prefix_lm_and_mode_tokens() -> None:
    ex = denoise(list(range(20)), Denoiser("S", noise_density=0.25, mode_token_id=-7), sentinel_ids=[])
    assert ex.inputs == [-7] + list(range(15))
    assert ex.targets == list(range(15, 20))
    ids, loss_mask = ex.as_decoder_only()
    assert ids[sum(1 for m in loss_mask if m == 0) :] == ex.targets


def test_ul2_mixture_frequencies_and_resume() -> None:
    denoisers, weights = ul2_default_denoisers()
    sentinels = list(range(10_000, 10_200))
    ul2 = UL2Mixture(denoisers, weights, sentinel_ids=sentinels, seed=3)
    counts = torch.zeros(len(denoisers))
    for _ in range(1400):
        counts[ul2(list(range(128))).denoiser] += 1
    freq = counts / counts.sum()
    assert torch.allclose(freq, torch.tensor(weights, dtype=torch.float32), atol=0.04)
    # resumable: the same call index gives the same example
    state = ul2.state_dict()
    a = ul2(list(range(64)))
    ul2.load_state_dict(state)
    b = ul2(list(range(64)))
    assert a == b


def test_too_few_sentinels_raises() -> None:
    mask = torch.tensor([False, True, False, True, False])
    with pytest.raises(ValueError, match="sentinel"):
        span_corrupt([1, 2, 3, 4, 5], mask, [99])
