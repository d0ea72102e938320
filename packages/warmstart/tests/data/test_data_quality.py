"""Quality selection: heuristic rules fire on what they target, the rater learns, perplexity is exact."""

from __future__ import annotations

import math
import random

import pytest
import torch

from warmstart.data import HashedNgramRater, HeuristicFilter, PerplexityScorer, select_by_quality

GOOD = (
    "The river runs through the valley and the farmers have planted wheat along its banks. "
    "In spring the water rises, and that is when the village prepares for the festival with music. "
    "Children walk to the school on the hill, where the teacher explains the history of the region. "
    "Most of the families have lived here for generations and they speak of the old mill with pride."
)


def test_heuristic_filter_rules() -> None:
    f = HeuristicFilter()
    assert all(f.check(GOOD).values())
    assert not f.check("too short to keep")["word_count"]
    assert not f.check(GOOD + " # # # # # # # # # # # # ... ... ...")["symbol_ratio"]
    repeated = "\n".join(["Buy cheap watches online today"] * 10 + GOOD.split(". "))
    verdict = f.check(repeated)
    assert not verdict["duplicate_lines"]
    assert not f.check(GOOD + " Lorem ipsum dolor sit amet.")["lorem_ipsum"]
    spam = " ".join(["click here now"] * 30) + " the and of to"
    assert not f.check(spam)["top_3gram"]
    sel = select_by_quality([GOOD, "too short", spam], f)
    assert sel.kept_indices == [0]
    assert sel.report["n_kept"] == 1 and sel.report["n_total"] == 3
    assert sel.report["rule_failures"]["word_count"] == 1


def _corpus(seed: int, n: int) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    good_words = [
        "research",
        "shows",
        "the",
        "model",
        "learns",
        "structure",
        "from",
        "careful",
        "data",
        "and",
        "clear",
        "writing",
    ]
    bad_words = [
        "win",
        "free",
        "prize",
        "click",
        "now",
        "cheap",
        "deal",
        "casino",
        "bonus",
        "offer",
        "limited",
    ]
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        words = good_words if label else bad_words
        texts.append(" ".join(rng.choice(words) for _ in range(rng.randint(8, 20))))
        labels.append(label)
    return texts, labels


def test_hashed_ngram_rater_learns_and_is_deterministic() -> None:
    train_texts, train_labels = _corpus(0, 60)
    test_texts, test_labels = _corpus(1, 40)
    rater = HashedNgramRater(n_features=2**12).fit(train_texts, train_labels)
    scores = rater.score(test_texts)
    accuracy = sum((s > 0.5) == bool(y) for s, y in zip(scores, test_labels, strict=True)) / len(scores)
    assert accuracy == 1.0
    again = HashedNgramRater(n_features=2**12).fit(train_texts, train_labels)
    assert torch.equal(rater.state_dict()["weight"], again.state_dict()["weight"])
    sel = select_by_quality(test_texts, rater, keep_fraction=0.5)
    assert sorted(test_labels[i] for i in sel.kept_indices) == [1] * 20
    assert sel.report["threshold"] == min(scores[i] for i in sel.kept_indices)


class _Bigram(torch.nn.Module):
    """Predicts token (t + 1) mod V with probability ~1: counting sequences have perplexity → 1."""

    def __init__(self, vocab: int, sharp: float) -> None:
        super().__init__()
        self.vocab, self.sharp = vocab, sharp

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return torch.nn.functional.one_hot((input_ids + 1) % self.vocab, self.vocab).float() * self.sharp


def test_perplexity_scorer_exact_and_selects_low_perplexity() -> None:
    encode = lambda s: [int(c) for c in s.split()]  # noqa: E731
    uniform = PerplexityScorer(_Bigram(10, 0.0), encode, batch_size=2)
    assert all(math.isclose(p, 10.0, rel_tol=1e-5) for p in uniform.score(["1 2 3", "4 5", "9 9 9 9 9"]))
    assert uniform.score(["7"]) == [math.inf]
    scorer = PerplexityScorer(_Bigram(10, 20.0), encode, batch_size=2)
    texts = ["1 2 3 4 5", "3 1 4 1 5", "5 6 7 8", "9 2 6 5"]
    sel = select_by_quality(texts, scorer, keep_fraction=0.5)
    assert sel.kept == ["1 2 3 4 5", "5 6 7 8"]
    assert sel.scores[0] < 1.001 and sel.scores[1] > 100
    assert select_by_quality(texts, scorer, threshold=2.0).kept_indices == [0, 2]
    with pytest.raises(ValueError, match="default_threshold"):
        select_by_quality(texts, scorer)
