"""Language-modelling objectives: causal LM, BERT-style masked LM, and UL2's mixture of denoisers.

Seed papers: "BERT: Pre-training of Deep Bidirectional Transformers" (arXiv 1810.04805) for the 80/10/10
masking; "Exploring the Limits of Transfer Learning with a Unified Text-to-Text Transformer" (T5, arXiv
1910.10683) for span corruption with sentinel tokens; "UL2: Unifying Language Learning Paradigms" (arXiv
2205.05131) for the R/S/X mixture of denoisers with mode tokens. Implemented here: the losses, the masking,
T5's random-span noise mask, the S (prefix-LM) denoiser and a seeded mixture sampler; written by hand
because transformers ships only a collator for MLM (not a function over tensors with an explicit
generator) and nothing for UL2. Left out: T5's packing of corrupted examples and UL2's exact production
mixture weights (the default mixture below is our reading of the paper, marked *unverified*).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
Reduction = Literal["mean", "sum", "none"]


def _reduce(loss: torch.Tensor, weight: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if reduction == "none":
        return loss
    total = (loss * weight).sum()
    if reduction == "sum":
        return total
    return total / weight.sum().clamp_min(1)


def clm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    loss_mask: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Next-token cross-entropy: ``logits[:, t]`` predicts ``labels[:, t + 1]``.

    ``logits`` is (B, T, V) and ``labels`` (B, T) — usually the input ids themselves, with
    ``ignore_index`` at positions that are no target (padding, a metadata prefix). ``loss_mask`` (B, T),
    aligned with ``labels``, is an extra 0/1 weight on target positions. ``"mean"`` averages over the
    targets that count (token-weighted across the batch), ``"sum"`` sums them, ``"none"`` returns the
    per-position loss (B, T - 1) with ignored positions at 0.
    """
    shift_logits = logits[:, :-1].float()  # (B, T-1, V)
    shift_labels = labels[:, 1:]  # (B, T-1)
    weight = (shift_labels != ignore_index).float()
    if loss_mask is not None:
        weight = weight * loss_mask[:, 1:].float()
    safe_labels = shift_labels.masked_fill(shift_labels == ignore_index, 0)
    loss = F.cross_entropy(shift_logits.transpose(1, 2), safe_labels, reduction="none") * weight
    return _reduce(loss, weight, reduction)


def mlm_mask(
    input_ids: torch.Tensor,
    *,
    mask_token_id: int,
    vocab_size: int,
    mlm_probability: float = 0.15,
    special_tokens_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: choose ``mlm_probability`` of the tokens; of those 80 % → mask, 10 % → random, 10 % kept.

    Returns ``(masked_input_ids, labels)``, both shaped like ``input_ids``; ``labels`` holds the original id
    at chosen positions and ``-100`` elsewhere. Positions where ``special_tokens_mask`` is true are never
    chosen.
    """
    device = input_ids.device
    shape = input_ids.shape

    def rand() -> torch.Tensor:
        return torch.rand(shape, generator=generator, device="cpu").to(device)

    chosen = rand() < mlm_probability  # (B, T)
    if special_tokens_mask is not None:
        chosen &= ~special_tokens_mask.bool()
    labels = input_ids.masked_fill(~chosen, IGNORE_INDEX)
    action = rand()
    to_mask = chosen & (action < 0.8)
    to_random = chosen & (action >= 0.8) & (action < 0.9)
    random_ids = torch.randint(vocab_size, shape, generator=generator, device="cpu").to(device)
    masked = input_ids.clone()
    masked[to_mask] = mask_token_id
    masked[to_random] = random_ids[to_random]
    return masked, labels


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Cross-entropy at the chosen positions only (no shift): ``logits`` (B, T, V), ``labels`` (B, T)."""
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=ignore_index)


# --------------------------------------------------------------------------------------- span corruption


def random_spans_noise_mask(
    length: int, noise_density: float, mean_span_length: float, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """T5's noise mask: ``round(length · density)`` noise tokens in ``round(noise / mean_span)`` spans.

    Noise and non-noise segment lengths are random partitions (each segment ≥ 1 token), interleaved
    starting with non-noise, as in T5's ``random_spans_noise_mask``. Returns a bool tensor (length,).
    """
    num_noise = int(round(length * noise_density))
    num_noise = min(max(num_noise, 1), length - 1)
    num_spans = max(int(round(num_noise / mean_span_length)), 1)
    num_spans = min(num_spans, num_noise, length - num_noise)
    num_nonnoise = length - num_noise

    def segment_lengths(total: int, n: int) -> torch.Tensor:
        # n positive integers summing to total: choose n-1 cut points among total-1 slots.
        cuts = torch.randperm(total - 1, generator=generator)[: n - 1].sort().values + 1
        edges = torch.cat([torch.tensor([0]), cuts, torch.tensor([total])])
        return edges.diff()  # (n,)

    noise_lengths = segment_lengths(num_noise, num_spans)
    nonnoise_lengths = segment_lengths(num_nonnoise, num_spans)
    mask = torch.zeros(length, dtype=torch.bool)
    pos = 0
    for keep, noise in zip(nonnoise_lengths.tolist(), noise_lengths.tolist(), strict=True):
        pos += keep
        mask[pos : pos + noise] = True
        pos += noise
    return mask


def span_corrupt(
    tokens: Sequence[int] | torch.Tensor,
    noise_mask: torch.Tensor,
    sentinel_ids: Sequence[int],
) -> tuple[list[int], list[int]]:
    """Replace each noise span by one sentinel in the inputs; targets are each sentinel + its span.

    ``sentinel_ids[k]`` marks the k-th span (T5's ``<extra_id_k>``), so inputs and targets together give the
    original sequence back (see :func:`span_uncorrupt`). Raises if there are more spans than sentinels.
    """
    ids = tokens.tolist() if isinstance(tokens, torch.Tensor) else list(tokens)
    noise = noise_mask.tolist()
    inputs: list[int] = []
    targets: list[int] = []
    span = -1
    for i, (tok, is_noise) in enumerate(zip(ids, noise, strict=True)):
        if is_noise:
            if i == 0 or not noise[i - 1]:
                span += 1
                if span >= len(sentinel_ids):
                    raise ValueError(f"{span + 1} noise spans but only {len(sentinel_ids)} sentinel ids")
                inputs.append(sentinel_ids[span])
                targets.append(sentinel_ids[span])
            targets.append(tok)
        else:
            inputs.append(tok)
    return inputs, targets


def span_uncorrupt(inputs: Sequence[int], targets: Sequence[int], sentinel_ids: Sequence[int]) -> list[int]:
    """Inverse of :func:`span_corrupt`: put every span from ``targets`` back in place of its sentinel."""
    sentinels = set(sentinel_ids)
    spans: dict[int, list[int]] = {}
    current: int | None = None
    for tok in targets:
        if tok in sentinels:
            current = tok
            spans[current] = []
        elif current is not None:
            spans[current].append(tok)
    out: list[int] = []
    for tok in inputs:
        out.extend(spans[tok] if tok in sentinels else [tok])
    return out


@dataclass(frozen=True)
class Denoiser:
    """One UL2 denoiser. ``kind`` R/X: span corruption with (``mean_span_length``, ``noise_density``);
    S: prefix LM whose target is the last ``noise_density`` fraction of the sequence."""

    kind: Literal["R", "S", "X"]
    mean_span_length: float = 3.0
    noise_density: float = 0.15
    mode_token_id: int | None = None
    """UL2's paradigm token ([NLU] for R, [S2S] for S, [NLG] for X) prepended to the inputs, if given."""


def ul2_default_denoisers(
    mode_token_ids: dict[str, int] | None = None,
) -> tuple[list[Denoiser], list[float]]:
    """UL2's seven denoisers: R (μ=3, r=.15), (μ=8, r=.15); X (μ=3, r=.5), (μ=8, r=.5), (μ=64, r=.15),
    (μ=64, r=.5); S (prefix LM, r=.25). Weights: S at 0.25, the rest uniform — *unverified* reading."""
    m = mode_token_ids or {}
    spec = [
        ("R", 3, 0.15),
        ("R", 8, 0.15),
        ("X", 3, 0.5),
        ("X", 8, 0.5),
        ("X", 64, 0.15),
        ("X", 64, 0.5),
        ("S", 1, 0.25),
    ]
    denoisers = [Denoiser(k, mu, r, m.get(k)) for k, mu, r in spec]  # type: ignore[arg-type]
    weights = [0.75 / 6] * 6 + [0.25]
    return denoisers, weights


@dataclass
class DenoisedExample:
    inputs: list[int]
    targets: list[int]
    denoiser: int
    """Index of the denoiser that produced the example."""

    def as_decoder_only(self) -> tuple[list[int], list[int]]:
        """Concatenate ``inputs + targets`` for a decoder-only model; returns (ids, loss_mask) with the loss
        on the targets only (prefix-LM style training through :func:`clm_loss`)."""
        ids = self.inputs + self.targets
        mask = [0] * len(self.inputs) + [1] * len(self.targets)
        return ids, mask


def denoise(
    tokens: Sequence[int] | torch.Tensor,
    denoiser: Denoiser,
    sentinel_ids: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    index: int = 0,
) -> DenoisedExample:
    """Apply one denoiser to one sequence (at least 2 tokens)."""
    ids = tokens.tolist() if isinstance(tokens, torch.Tensor) else list(tokens)
    if len(ids) < 2:
        raise ValueError("a denoiser needs a sequence of at least 2 tokens")
    prefix = [] if denoiser.mode_token_id is None else [denoiser.mode_token_id]
    if denoiser.kind == "S":
        split = len(ids) - max(1, int(round(len(ids) * denoiser.noise_density)))
        return DenoisedExample(prefix + ids[:split], ids[split:], index)
    mask = random_spans_noise_mask(
        len(ids), denoiser.noise_density, denoiser.mean_span_length, generator=generator
    )
    inputs, targets = span_corrupt(ids, mask, sentinel_ids)
    return DenoisedExample(prefix + inputs, targets, index)


class UL2Mixture:
    """Seeded mixture of denoisers: each call draws a denoiser by ``weights`` and applies it.

    Call ``k`` uses a generator seeded from ``(seed, k)``, so ``state_dict()`` (the call count) resumes it
    exactly. Span corruption needs ``round(L · r / μ)`` sentinels for a length-L sequence (T5's 100
    sentinels cover X (μ=3, r=.5) up to ~600 tokens); more spans than sentinels raise.

    >>> denoisers, weights = ul2_default_denoisers()
    >>> ul2 = UL2Mixture(denoisers, weights, sentinel_ids=list(range(32000, 32100)), seed=0)
    >>> example = ul2(list(range(512)))  # DenoisedExample(inputs, targets, denoiser)
    """

    def __init__(
        self,
        denoisers: Sequence[Denoiser],
        weights: Sequence[float] | None = None,
        *,
        sentinel_ids: Sequence[int],
        seed: int = 0,
    ) -> None:
        if weights is not None and len(weights) != len(denoisers):
            raise ValueError("one weight per denoiser")
        self.denoisers = list(denoisers)
        w = torch.tensor(weights if weights is not None else [1.0] * len(denoisers), dtype=torch.float64)
        if (w < 0).any() or not math.isfinite(float(w.sum())) or w.sum() <= 0:
            raise ValueError("weights must be non-negative with a positive sum")
        self.weights = w / w.sum()
        self.sentinel_ids = list(sentinel_ids)
        self.seed = seed
        self.calls = 0

    def __call__(self, tokens: Sequence[int] | torch.Tensor) -> DenoisedExample:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.calls)
        self.calls += 1
        index = int(torch.multinomial(self.weights, 1, generator=g))
        return denoise(tokens, self.denoisers[index], self.sentinel_ids, generator=g, index=index)

    def state_dict(self) -> dict[str, int]:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.calls = int(state["calls"])
