"""Data mixtures with exact long-run proportions, e.g. new-domain data plus a replay share of old data.

Seed papers: "Simple and Scalable Strategies to Continually Pre-train Large Language Models" (Ibrahim et
al., arXiv 2403.08763) — re-warming plus a small replay fraction of the original data prevents forgetting;
"Investigating Continual Pretraining in Large Language Models" / the stability-gap study (Guo et al.,
arXiv 2406.14833) — a mixture close to the original pretraining data. Implemented: a deterministic,
seeded interleaving by smooth weighted round-robin on integer credits (Nginx's scheduler), so after n
draws every source has been drawn within a small constant of ``n · weight`` times — exact in the long run,
not just in expectation — and a seed varies the interleaving. Written by hand (no library offers exact,
resumable mixing over arbitrary iterables). Left out: online re-weighting (Skill-it, DoReMi).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator, Mapping
from fractions import Fraction
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class _Stateful(Protocol):
    """A source that checkpoints itself (e.g. torchdata's ``StatefulDataLoader``)."""

    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Mixture:
    """Interleave several iterables in fixed proportions; endless (a source restarts when exhausted).

    ``weights`` are rationalised (denominator ≤ ``max_denominator``) and normalised; ``ratios`` holds the
    exact fractions used. Each draw adds every source's integer weight to its credit and picks the source
    with the largest credit (ties by a seeded order), which then pays the total weight. A source with
    ``state_dict``/``load_state_dict`` is checkpointed through them; any other is resumed by skipping the
    items it already gave (its iteration must be deterministic).

    >>> mix = Mixture({"new": new_batches, "replay": old_batches}, {"new": 0.75, "replay": 0.25}, seed=0)
    >>> for batch in mix: ...                  # 3 of every 4 from "new", interleaved
    """

    def __init__(
        self,
        sources: Mapping[str, Iterable[Any]],
        weights: Mapping[str, float],
        *,
        seed: int = 0,
        with_source: bool = False,
        max_denominator: int = 10_000,
    ) -> None:
        if set(sources) != set(weights):
            raise ValueError(
                f"weights must name exactly the sources {sorted(sources)}, got {sorted(weights)}"
            )
        if any(w < 0 or not math.isfinite(w) for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError("weights must be finite, non-negative, with a positive sum")
        self.names = list(sources)
        self.sources = dict(sources)
        total = sum(weights.values())
        fracs = [Fraction(weights[n] / total).limit_denominator(max_denominator) for n in self.names]
        denom = math.lcm(*(f.denominator for f in fracs))
        self.int_weights = [int(f * denom) for f in fracs]
        self.total = sum(self.int_weights)
        self.ratios = {n: Fraction(w, self.total) for n, w in zip(self.names, self.int_weights, strict=True)}
        self.seed = seed
        self.with_source = with_source
        rng = random.Random(seed)
        tie_order = list(range(len(self.names)))
        rng.shuffle(tie_order)
        self._tie_rank = [tie_order.index(i) for i in range(len(self.names))]
        self._candidates = [i for i, w in enumerate(self.int_weights) if w > 0]  # weight 0: never drawn
        credits = [rng.randrange(self.total) for _ in self.names]
        mean = sum(credits) // len(credits)
        self.credits = [c - mean for c in credits]  # seeded phase, centred
        self.counts = [0] * len(self.names)
        self._iterators: dict[str, Iterator[Any]] = {}

    def _pick(self) -> int:
        for i, w in enumerate(self.int_weights):
            self.credits[i] += w
        best = max(self._candidates, key=lambda i: (self.credits[i], -self._tie_rank[i]))
        self.credits[best] -= self.total
        self.counts[best] += 1
        return best

    def schedule(self, n: int) -> list[str]:
        """The next ``n`` source names, without drawing any item or changing the state."""
        credits, counts = list(self.credits), list(self.counts)
        out = [self.names[self._pick()] for _ in range(n)]
        self.credits, self.counts = credits, counts
        return out

    def _next_item(self, name: str) -> Any:
        it = self._iterators.get(name)
        if it is None:
            it = self._iterators[name] = iter(self.sources[name])
        try:
            return next(it)
        except StopIteration:
            it = self._iterators[name] = iter(self.sources[name])
            return next(it)

    def __iter__(self) -> Iterator[Any]:
        while True:
            name = self.names[self._pick()]
            item = self._next_item(name)
            yield (name, item) if self.with_source else item

    def state_dict(self) -> dict[str, Any]:
        sources: dict[str, dict[str, Any]] = {}
        for i, name in enumerate(self.names):
            src = self.sources[name]
            if isinstance(src, _Stateful):
                sources[name] = {"state": src.state_dict()}
            else:
                sources[name] = {"consumed": self.counts[i]}
        return {"credits": list(self.credits), "counts": list(self.counts), "sources": sources}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.credits = [int(c) for c in state["credits"]]
        self.counts = [int(c) for c in state["counts"]]
        self._iterators = {}
        for name, s in state["sources"].items():
            src = self.sources[name]
            if "state" in s:
                if not isinstance(src, _Stateful):
                    raise TypeError(
                        f"source {name!r} was checkpointed with its own state but has no load_state_dict"
                    )
                src.load_state_dict(s["state"])
            else:
                for _ in range(int(s["consumed"])):
                    self._next_item(name)


def replay_mixture(
    new: Iterable[Any],
    replay: Iterable[Any],
    *,
    replay_ratio: float,
    seed: int = 0,
    with_source: bool = False,
) -> Mixture:
    """``new`` data with a ``replay_ratio`` share of ``replay`` data (e.g. 0.05 of the original corpus)."""
    if not 0 <= replay_ratio < 1:
        raise ValueError("replay_ratio must be in [0, 1)")
    return Mixture(
        {"new": new, "replay": replay},
        {"new": 1 - replay_ratio, "replay": replay_ratio},
        seed=seed,
        with_source=with_source,
    )
