"""Quality scoring and selection with pluggable scorers: reference-model perplexity, heuristic rules, a rater.

Seed papers: "Scaling Language Models: Methods, Analysis & Insights from Training Gopher" (Rae et al., arXiv
2112.11446, appendix A: the quality and repetition filters whose defaults :class:`HeuristicFilter` uses) and
T5's C4 rules (arXiv 1910.10683); "CCNet" (Wenzek et al., arXiv 1911.00359) for perplexity under a
reference LM; "DataMan" (arXiv 2502.19363) and the GPT-3 quality classifier for a learned rater — here a
tiny logistic regression on hashed word n-grams (:class:`HashedNgramRater`). Written by hand: none of them
exists as a library function without a heavy dependency (datatrove, sklearn). :func:`select_by_quality`
returns the kept subset and a report (counts, score distribution, threshold, per-rule rejections). Left
out: DataMan's 14-criterion LLM rater and fuzzy deduplication.
"""

from __future__ import annotations

import logging
import math
import re
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from warmstart.eval.perplexity import forward_logits
from warmstart.objectives.lm import IGNORE_INDEX, clm_loss

log = logging.getLogger(__name__)

_WORD = re.compile(r"\w+", re.UNICODE)


@runtime_checkable
class Scorer(Protocol):
    """What :func:`select_by_quality` needs: a name, a direction, and one score per text.

    Optional: ``default_threshold`` (used when neither a threshold nor a keep fraction is given) and
    ``details(texts) -> dict`` (merged into the report, e.g. per-rule rejection counts).
    """

    name: str
    higher_is_better: bool

    def score(self, texts: Sequence[str]) -> list[float]: ...


# ------------------------------------------------------------------------------------------- perplexity


class PerplexityScorer:
    """Per-document perplexity under a reference causal LM (lower is better).

    ``model`` is any callable ``model(input_ids=(B, T), attention_mask=(B, T))`` returning logits (B, T, V)
    or an object with ``.logits`` (a transformers model); ``encode`` maps a string to token ids. Documents
    are truncated to ``max_length`` tokens; one with fewer than two tokens scores ``inf``.
    """

    name = "perplexity"
    higher_is_better = False

    def __init__(
        self,
        model: Callable[..., Any],
        encode: Callable[[str], Sequence[int]],
        *,
        batch_size: int = 8,
        max_length: int = 512,
        device: torch.device | str | None = None,
    ) -> None:
        self.model = model
        self.encode = encode
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = torch.device(device) if device is not None else None

    @torch.no_grad()
    def score(self, texts: Sequence[str]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            seqs = [list(self.encode(t))[: self.max_length] for t in texts[start : start + self.batch_size]]
            width = max(2, max(len(s) for s in seqs))
            ids = torch.zeros(len(seqs), width, dtype=torch.long)  # (B, T)
            attn = torch.zeros_like(ids)
            for i, s in enumerate(seqs):
                ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
                attn[i, : len(s)] = 1
            if self.device is not None:
                ids, attn = ids.to(self.device), attn.to(self.device)
            labels = ids.masked_fill(attn == 0, IGNORE_INDEX)
            nll = clm_loss(forward_logits(self.model, ids, attn), labels, reduction="none")  # (B, T-1)
            counts = (labels[:, 1:] != IGNORE_INDEX).sum(1)
            for total, n in zip(nll.sum(1).tolist(), counts.tolist(), strict=True):
                out.append(math.exp(total / n) if n > 0 else math.inf)
        return out


# -------------------------------------------------------------------------------------------- heuristics

GOPHER_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")


@dataclass
class HeuristicFilter:
    """Gopher's quality + repetition rules (defaults from Rae et al., appendix A) and C4's page rules.

    ``score`` is the fraction of rules a text passes; the default threshold keeps texts passing all of
    them. ``check(text)`` gives each rule's verdict.
    """

    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1
    """Hash marks and ellipses per word."""
    max_bullet_lines_fraction: float = 0.9
    max_ellipsis_lines_fraction: float = 0.3
    min_alpha_words_fraction: float = 0.8
    min_stop_words: int = 2
    max_duplicate_lines_fraction: float = 0.3
    max_duplicate_line_chars_fraction: float = 0.2
    max_top_ngram_chars_fraction: dict[int, float] = field(default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16})
    max_duplicate_ngram_chars_fraction: dict[int, float] = field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )
    forbid_lorem_ipsum: bool = True
    """C4: drop pages containing "lorem ipsum"."""
    forbid_curly_bracket: bool = False
    """C4: drop pages containing "{" (removes code; off by default)."""

    name = "heuristic"
    higher_is_better = True
    default_threshold = 1.0

    def check(self, text: str) -> dict[str, bool]:
        words = _WORD.findall(text)
        raw_words = text.split()
        n = len(raw_words)
        lines = [ln for ln in text.splitlines() if ln.strip()]
        out: dict[str, bool] = {}
        out["word_count"] = self.min_words <= n <= self.max_words
        mean_len = sum(len(w) for w in raw_words) / n if n else 0.0
        out["mean_word_length"] = self.min_mean_word_length <= mean_len <= self.max_mean_word_length
        symbols = text.count("#") + text.count("...") + text.count("…")
        out["symbol_ratio"] = n > 0 and symbols / n <= self.max_symbol_word_ratio
        if lines:
            bullets = sum(ln.lstrip().startswith(("•", "-", "*", "●", "‣")) for ln in lines) / len(lines)
            ellipsis = sum(ln.rstrip().endswith(("...", "…")) for ln in lines) / len(lines)
        else:
            bullets = ellipsis = 0.0
        out["bullet_lines"] = bullets <= self.max_bullet_lines_fraction
        out["ellipsis_lines"] = ellipsis <= self.max_ellipsis_lines_fraction
        alpha = sum(any(c.isalpha() for c in w) for w in raw_words) / n if n else 0.0
        out["alpha_words"] = alpha >= self.min_alpha_words_fraction
        lower = [w.lower() for w in words]
        out["stop_words"] = sum(w in GOPHER_STOP_WORDS for w in lower) >= self.min_stop_words
        out.update(self._repetition(lines, lower))
        if self.forbid_lorem_ipsum:
            out["lorem_ipsum"] = "lorem ipsum" not in text.lower()
        if self.forbid_curly_bracket:
            out["curly_bracket"] = "{" not in text
        return out

    def _repetition(self, lines: list[str], words: list[str]) -> dict[str, bool]:
        out: dict[str, bool] = {}
        line_counts = Counter(lines)
        dup_lines = sum(c for c in line_counts.values() if c > 1)
        dup_line_chars = sum(len(ln) * c for ln, c in line_counts.items() if c > 1)
        total_chars = sum(len(ln) for ln in lines)
        out["duplicate_lines"] = not lines or dup_lines / len(lines) <= self.max_duplicate_lines_fraction
        out["duplicate_line_chars"] = (
            not total_chars or dup_line_chars / total_chars <= self.max_duplicate_line_chars_fraction
        )
        word_chars = sum(len(w) for w in words)
        for k, limit in self.max_top_ngram_chars_fraction.items():
            grams = Counter(tuple(words[i : i + k]) for i in range(len(words) - k + 1))
            frac = 0.0
            if grams and word_chars:
                gram, count = grams.most_common(1)[0]
                frac = sum(len(w) for w in gram) * count / word_chars if count > 1 else 0.0
            out[f"top_{k}gram"] = frac <= limit
        for k, limit in self.max_duplicate_ngram_chars_fraction.items():
            grams = Counter(tuple(words[i : i + k]) for i in range(len(words) - k + 1))
            covered = [False] * len(words)
            for i in range(len(words) - k + 1):
                if grams[tuple(words[i : i + k])] > 1:
                    covered[i : i + k] = [True] * k
            dup_chars = sum(len(w) for w, c in zip(words, covered, strict=True) if c)
            out[f"duplicate_{k}gram"] = not word_chars or dup_chars / word_chars <= limit
        return out

    def score(self, texts: Sequence[str]) -> list[float]:
        out = []
        for t in texts:
            verdict = self.check(t)
            out.append(sum(verdict.values()) / len(verdict))
        return out

    def details(self, texts: Sequence[str]) -> dict[str, Any]:
        failures: Counter[str] = Counter()
        for t in texts:
            failures.update(rule for rule, ok in self.check(t).items() if not ok)
        return {"rule_failures": dict(sorted(failures.items()))}


# ----------------------------------------------------------------------------------------- learned rater


class HashedNgramRater:
    """A learned quality rater: logistic regression on hashed word n-gram counts (higher = better).

    Features: lower-cased word n-grams (``ngram_range``) hashed with CRC32 (stable across processes) into
    ``n_features`` buckets, counts log1p-scaled and each row L2-normalised; the linear model runs through
    ``embedding_bag``, so 2¹⁸ buckets cost nothing. Trained full-batch with L-BFGS and an L2 penalty; deterministic.

    >>> rater = HashedNgramRater().fit(good_texts + bad_texts, [1] * len(good_texts) + [0] * len(bad_texts))
    >>> selection = select_by_quality(corpus, rater, keep_fraction=0.3)
    """

    name = "rater"
    higher_is_better = True
    default_threshold = 0.5

    def __init__(
        self,
        *,
        n_features: int = 2**18,
        ngram_range: tuple[int, int] = (1, 2),
        l2: float = 1e-3,
        max_iter: int = 100,
    ) -> None:
        self.n_features = n_features
        self.ngram_range = ngram_range
        self.l2 = l2
        self.max_iter = max_iter
        self.weight = torch.zeros(n_features)
        self.bias = torch.zeros(())

    def features(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Hashed features as ``(indices, offsets, values)`` for ``F.embedding_bag`` (a sparse N × F matrix)."""
        indices: list[int] = []
        offsets: list[int] = []
        values: list[float] = []
        lo, hi = self.ngram_range
        for text in texts:
            offsets.append(len(indices))
            words = [w.lower() for w in _WORD.findall(text)]
            counts: Counter[int] = Counter()
            for k in range(lo, hi + 1):
                for i in range(len(words) - k + 1):
                    counts[zlib.crc32(" ".join(words[i : i + k]).encode()) % self.n_features] += 1
            if not counts:
                continue
            v = torch.tensor([math.log1p(c) for c in counts.values()])
            indices += list(counts)
            values += (v / v.norm()).tolist()
        return (
            torch.tensor(indices, dtype=torch.long),
            torch.tensor(offsets, dtype=torch.long),
            torch.tensor(values),
        )

    def _logits(self, x: tuple[torch.Tensor, ...], weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        indices, offsets, values = x
        out = F.embedding_bag(indices, weight[:, None], offsets, mode="sum", per_sample_weights=values)
        return out.squeeze(1) + bias  # (N,)

    def fit(self, texts: Sequence[str], labels: Sequence[float]) -> HashedNgramRater:
        x = self.features(texts)
        y = torch.tensor([float(v) for v in labels])
        weight = torch.zeros(self.n_features, requires_grad=True)
        bias = torch.zeros((), requires_grad=True)
        opt = torch.optim.LBFGS([weight, bias], max_iter=self.max_iter, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.binary_cross_entropy_with_logits(self._logits(x, weight, bias), y)
            loss = loss + self.l2 * weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        self.weight, self.bias = weight.detach(), bias.detach()
        return self

    @torch.no_grad()
    def score(self, texts: Sequence[str]) -> list[float]:
        return torch.sigmoid(self._logits(self.features(texts), self.weight, self.bias)).tolist()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight.clone(), "bias": self.bias.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.weight, self.bias = state["weight"].clone(), state["bias"].clone()


# ------------------------------------------------------------------------------------------- selection


@dataclass
class QualitySelection:
    kept_indices: list[int]
    """Indices of the kept texts, in input order."""
    kept: list[str]
    scores: list[float]
    """Every text's score, in input order."""
    report: dict[str, Any]
    """Counts, threshold, score distribution (quantiles, histogram) and scorer details."""


def _distribution(scores: Sequence[float], bins: int = 10) -> dict[str, Any]:
    finite = torch.tensor([s for s in scores if math.isfinite(s)], dtype=torch.float64)
    if finite.numel() == 0:
        return {"n_finite": 0}
    qs = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
    quant = torch.quantile(finite, torch.tensor(qs, dtype=torch.float64)).tolist()
    lo, hi = float(finite.min()), float(finite.max())
    hist = torch.histc(finite, bins=bins, min=lo, max=hi if hi > lo else lo + 1).long().tolist()
    edges = torch.linspace(lo, hi if hi > lo else lo + 1, bins + 1).tolist()
    return {
        "n_finite": int(finite.numel()),
        "mean": float(finite.mean()),
        "std": float(finite.std()) if finite.numel() > 1 else 0.0,
        "quantiles": {f"{q:g}": v for q, v in zip(qs, quant, strict=True)},
        "histogram": {"counts": hist, "edges": edges},
    }


def select_by_quality(
    texts: Sequence[str],
    scorer: Scorer,
    *,
    keep_fraction: float | None = None,
    threshold: float | None = None,
) -> QualitySelection:
    """Score every text and keep the best.

    ``keep_fraction``: keep the best ``round(n · keep_fraction)`` texts (ties by input order); the report's
    threshold is then the worst kept score. ``threshold``: keep texts scoring at least it (at most it when
    lower is better). Neither: the scorer's ``default_threshold``.
    """
    if keep_fraction is not None and threshold is not None:
        raise ValueError("give keep_fraction or threshold, not both")
    scores = [float(s) for s in scorer.score(texts)]
    better = scorer.higher_is_better
    sign = 1.0 if better else -1.0
    if keep_fraction is not None:
        if not 0 <= keep_fraction <= 1:
            raise ValueError("keep_fraction must be in [0, 1]")
        k = round(len(texts) * keep_fraction)
        order = sorted(range(len(texts)), key=lambda i: (-sign * _nan_last(scores[i], better), i))
        kept = sorted(order[:k])
        used = min((scores[i] for i in kept), key=lambda s: sign * s) if kept else None
    else:
        used = threshold if threshold is not None else getattr(scorer, "default_threshold", None)
        if used is None:
            raise ValueError(
                f"scorer {scorer.name!r} has no default_threshold: give keep_fraction or threshold"
            )
        kept = [i for i, s in enumerate(scores) if (s >= used if better else s <= used)]
    report: dict[str, Any] = {
        "scorer": scorer.name,
        "higher_is_better": better,
        "n_total": len(texts),
        "n_kept": len(kept),
        "kept_fraction": len(kept) / len(texts) if texts else 0.0,
        "threshold": used,
        "keep_fraction_requested": keep_fraction,
        "scores": _distribution(scores),
        "kept_scores": _distribution([scores[i] for i in kept]),
    }
    if hasattr(scorer, "details"):
        report.update(scorer.details(texts))
    log.info("quality selection (%s): kept %d of %d", scorer.name, len(kept), len(texts))
    return QualitySelection(kept, [texts[i] for i in kept], scores, report)


def _nan_last(score: float, higher_is_better: bool) -> float:
    if math.isnan(score):
        return -math.inf if higher_is_better else math.inf
    return score
