"""pass@k of sampled programs, the unbiased estimator.

Seed paper: Chen et al., "Evaluating Large Language Models Trained on Code" (arXiv 2107.03374), Sec. 2.1:
with ``n`` samples of which ``c`` pass, ``pass@k = 1 − C(n−c, k) / C(n, k)``, computed as the product
``Π_{i=n−c+1}^{n} (1 − k/i)`` so large ``n`` neither overflows nor loses precision (the paper's numpy
form). The benchmark score is the mean over problems. Left out: running the programs (the code app's
sandbox does that).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with ``n`` samples, ``c`` of them correct (Chen et al. 2021)."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= correct <= samples, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs 1 <= k <= n samples, got n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(samples: int | Sequence[int], correct: Sequence[int], k: int) -> float:
    """Mean pass@k over problems: ``samples`` per problem (one int for all, or one per problem) and the
    number of ``correct`` samples of each."""
    counts = list(correct)
    if not counts:
        raise ValueError("pass@k of no problems is undefined")
    ns = [samples] * len(counts) if isinstance(samples, int) else list(samples)
    if len(ns) != len(counts):
        raise ValueError(f"{len(ns)} sample counts for {len(counts)} problems")
    return float(np.mean([pass_at_k(n, c, k) for n, c in zip(ns, counts, strict=True)]))
