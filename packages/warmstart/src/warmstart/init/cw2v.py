"""CW2V (constrained word2vec): new rows as trained convex combinations of the old ones.

Seed paper: *An Empirical Comparison of Vocabulary Expansion and Initialization Approaches for Language
Models* (Mundra et al., CoNLL 2024, arXiv 2407.05841; code: AI4Bharat/VocabAdaptation_LLM, branch CW2V).
Rows = softmax(A) @ E_old with the old rows frozen, A trained skip-gram style with negative sampling on
target text, so every new row stays inside the convex hull of the old ones.

Two parametrisations of A. *Dense* (the reference's): A = A1 (n_new x r) @ A2 (r x V_old), a softmax
over the whole old vocabulary; its cost is n_new x V_old x D per pass, ~15 minutes for a 30k vocabulary
+ 8k new tokens on 2 CPU cores. *Sparse* (ours, used when ``support`` < V_old): each new row mixes a
seeded random subset of ``support`` old rows with free logits (initialised at 0, so training starts from
the ``convex`` init of :mod:`warmstart.init.rows` and learns its weights); still inside the hull, and the
30k + 8k case trains in well under 2 minutes (``apps/lang/scripts/cw2v_scale.py`` measures it). Both
train on mini-batches of (centre, context) pairs that involve a new token, with ``negatives`` noise
tokens per pair from unigram^0.75 (word2vec's sampled softmax), stop early when the loss on held-out
pairs stops falling, and report progress through a callback.

Defaults and their source. From the reference code as recorded when this module was written (the paper
itself could not be consulted offline; unverified): window 5, 5 negatives, unigram^0.75 noise, Adam,
rank 1024 and lr 3e-4 over a large corpus. Ours: rank 256 (dense), lr 3e-3 (our corpora are small; the
reference's lr does not move in a few hundred steps), support 256 and lr 0.1 (sparse free logits), 3 epochs, 5 % / at most
20,000 held-out pairs, evaluated every 50 steps, patience 3. Left out: the reference's full-corpus schedule.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from warmstart.init.rows import _work_dtype, convex_weights, make_generator

logger = logging.getLogger(__name__)

Progress = Callable[[int, int, float], None]
"""``progress(step, total_steps, last_loss)`` after every step."""


@dataclass
class CW2VConfig:
    """Training settings for CW2V (see the module docstring for each default's source)."""

    rank: int = 256
    """Width r of the dense factorisation A = A1 (n_new x r) @ A2 (r x V_old); the reference uses 1024."""
    window: int = 5
    """Skip-gram window (tokens each side)."""
    negatives: int = 5
    """Negative samples per (centre, context) pair, drawn from unigram^0.75 of the corpus."""
    lr: float = 3e-3
    """Adam learning rate (the reference uses 3e-4 over a large corpus; small corpora need more)."""
    epochs: int = 3
    """Passes over the (centre, context) pairs that involve a new token."""
    batch_size: int = 512
    """Pairs per step."""
    max_steps: int | None = None
    """Stop after this many steps; None runs every epoch."""
    max_seconds: float | None = None
    """Stop training after this many seconds (the final rows are still computed)."""
    init_scale: float = 0.1
    """Std of the initial dense logits A1 @ A2 (small: the start is close to the mean of the old rows)."""
    support: int | None = 256
    """Old rows each new row may mix (sparse A) when smaller than V_old; None: the dense reference A."""
    sparse_lr: float = 0.1
    """Adam learning rate of the sparse free logits (they start at 0 and must move by O(1) in a few
    hundred steps; the dense factorised logits use ``lr``)."""
    heldout: float = 0.05
    """Share of the pairs held out for early stopping (at most 20,000; 0 turns early stopping off)."""
    eval_every: int = 50
    """Held-out loss every N steps."""
    patience: int = 3
    """Stop after this many held-out evaluations without improvement (the best weights are kept)."""


@dataclass
class CW2VResult:
    """Rows found by CW2V and the training trace."""

    rows: Tensor  # (n_new, D) input-embedding rows
    head_rows: Tensor | None  # (n_new, D_head) output rows when a separate head was given
    losses: list[float] = field(default_factory=list)
    a1: Tensor | None = None  # (n_new, r) dense
    a2: Tensor | None = None  # (r, V_old) dense
    head_a1: Tensor | None = None
    head_a2: Tensor | None = None
    heldout_losses: list[tuple[int, float]] = field(default_factory=list)
    """(step, held-out loss) at every evaluation."""
    stopped: str = "epochs"
    """Why training stopped: epochs, max_steps, max_seconds, early_stop or no_pairs."""
    seconds: float = 0.0
    sparse: tuple[Tensor, Tensor] | None = None  # (support index (n_new, k), logits (n_new, k))
    head_sparse: tuple[Tensor, Tensor] | None = None
    n_old: int = 0

    def weights(self, head: bool = False) -> Tensor:
        """The convex weights softmax(A), dense (n_new, V_old): rows are >= 0 and sum to 1."""
        sparse = self.head_sparse if head else self.sparse
        if sparse is not None:
            index, logits = sparse
            out = torch.zeros(index.shape[0], self.n_old, dtype=logits.dtype, device=logits.device)
            return out.scatter_(1, index, torch.softmax(logits, dim=-1))
        a1, a2 = (self.head_a1, self.head_a2) if head else (self.a1, self.a2)
        assert a1 is not None and a2 is not None
        return torch.softmax(a1 @ a2, dim=-1)


class _ConvexRows(nn.Module):
    """Dense trainable factorised logits; ``forward(ids)`` gives softmax(A1[ids] @ A2) @ E_old."""

    old: Tensor  # buffer: (V_old, D), frozen

    def __init__(self, old: Tensor, n_new: int, cfg: CW2VConfig, g: torch.Generator) -> None:
        super().__init__()
        self.register_buffer("old", old.detach(), persistent=False)  # (V_old, D), frozen
        v = old.shape[0]
        r = min(cfg.rank, v)
        a1 = torch.randn(n_new, r, generator=g, device=old.device, dtype=old.dtype) / math.sqrt(r)
        a2 = torch.randn(r, v, generator=g, device=old.device, dtype=old.dtype) * cfg.init_scale
        self.a1 = nn.Parameter(a1)  # (n_new, r)
        self.a2 = nn.Parameter(a2)  # (r, V_old)

    def forward(self, new_ids: Tensor) -> Tensor:
        w = torch.softmax(self.a1[new_ids] @ self.a2, dim=-1)  # (U, V_old)
        return w @ self.old  # (U, D)

    @torch.no_grad()
    def all_rows(self, chunk: int = 2048) -> Tensor:
        n = self.a1.shape[0]
        return torch.cat(
            [self(torch.arange(s, min(s + chunk, n), device=self.a1.device)) for s in range(0, n, chunk)]
        )


class _SparseConvexRows(nn.Module):
    """Each new row mixes ``k`` seeded random old rows: softmax(L[i]) @ E_old[support[i]]."""

    old: Tensor  # buffer: (V_old, D), frozen
    index: Tensor  # buffer: (n_new, k) int64, the support of each new row

    def __init__(self, old: Tensor, n_new: int, k: int, g: torch.Generator) -> None:
        super().__init__()
        self.register_buffer("old", old.detach(), persistent=False)  # (V_old, D), frozen
        index, _ = convex_weights(old.shape[0], n_new, k=k, generator=g, device=old.device)
        self.register_buffer("index", index, persistent=False)  # (n_new, k)
        self.logits = nn.Parameter(torch.zeros(n_new, k, dtype=old.dtype, device=old.device))  # (n_new, k)

    def forward(self, new_ids: Tensor) -> Tensor:
        w = torch.softmax(self.logits[new_ids], dim=-1)  # (U, k)
        # a fused weighted gather-sum: never materialises the (U, k, D) block of support rows
        return nn.functional.embedding_bag(
            self.index[new_ids], self.old, per_sample_weights=w, mode="sum"
        )  # (U, D)

    @torch.no_grad()
    def all_rows(self, chunk: int = 1024) -> Tensor:
        n = self.logits.shape[0]
        ids = torch.arange(n, device=self.logits.device)
        return torch.cat([self(ids[s : s + chunk]) for s in range(0, n, chunk)])


_Rows = _ConvexRows | _SparseConvexRows


def _skipgram_pairs(sequences: Sequence[Tensor], window: int, n_old: int) -> Tensor:
    """All (centre, context) pairs within ``window`` where at least one side is a new id (>= n_old)."""
    out = []
    for seq in sequences:
        seq = seq.reshape(-1).long()
        for off in range(1, window + 1):
            if seq.numel() <= off:
                break
            a, b = seq[:-off], seq[off:]
            keep = (a >= n_old) | (b >= n_old)
            a, b = a[keep], b[keep]
            out.append(torch.stack([a, b], 1))
            out.append(torch.stack([b, a], 1))
    if not out:
        return torch.empty(0, 2, dtype=torch.long)
    return torch.cat(out)  # (P, 2)


def _lookup(rows: _Rows, ids: Tensor, n_old: int) -> Tensor:
    """Vectors for ids in the combined space: frozen old rows, or the trained rows for new ones."""
    old = rows.old
    out = torch.empty(ids.shape[0], old.shape[1], dtype=old.dtype, device=ids.device)
    is_new = ids >= n_old
    out = out.index_put((torch.nonzero(~is_new).squeeze(1),), old[ids[~is_new]])
    if bool(is_new.any()):
        uniq, inv = torch.unique(ids[is_new] - n_old, return_inverse=True)
        out = out.index_put((torch.nonzero(is_new).squeeze(1),), rows(uniq)[inv])
    return out


def _pair_loss(emb: _Rows, out: _Rows, batch: Tensor, neg: Tensor, n_old: int) -> Tensor:
    """Skip-gram negative-sampling loss: -log s(e_c . u_o) - sum_neg log s(-e_c . u_n), mean over pairs."""
    e_c = _lookup(emb, batch[:, 0], n_old)  # (B, D)
    u = _lookup(out, torch.cat([batch[:, 1:], neg], 1).reshape(-1), n_old)
    u = u.view(batch.shape[0], 1 + neg.shape[1], -1)  # (B, 1 + K, D)
    logits = torch.einsum("bd,bkd->bk", e_c, u)  # (B, 1 + K)
    sign = torch.full_like(logits, -1.0)
    sign[:, 0] = 1.0
    return -nn.functional.logsigmoid(sign * logits).sum(dim=1).mean()


class _Stopper:
    """Step budget, time budget and early stopping on a held-out loss (keeps the best parameters)."""

    def __init__(self, cfg: CW2VConfig, total: int, params: list[nn.Parameter], progress: Progress | None):
        self.cfg, self.total, self.params, self.progress = cfg, total, params, progress
        self.start = time.perf_counter()
        self.step = 0
        self.losses: list[float] = []
        self.heldout: list[tuple[int, float]] = []
        self.stopped = ""
        self.best, self.bad = math.inf, 0
        self.best_state: list[Tensor] | None = None

    def before_step(self) -> bool:
        """False when training must stop now (and records why)."""
        if self.step >= self.total:
            limited = self.cfg.max_steps is not None and self.step >= self.cfg.max_steps
            self.stopped = self.stopped or ("max_steps" if limited else "epochs")
        elif self.cfg.max_seconds is not None and time.perf_counter() - self.start > self.cfg.max_seconds:
            self.stopped = self.stopped or "max_seconds"
        return not self.stopped

    def after_step(self, loss: float, heldout: Callable[[], float] | None) -> None:
        self.losses.append(loss)
        self.step += 1
        if self.progress is not None:
            self.progress(self.step, self.total, loss)
        if heldout is None or not (self.step % self.cfg.eval_every == 0 or self.step == self.total):
            return
        value = heldout()
        self.heldout.append((self.step, value))
        if value < self.best - 1e-4:
            self.best, self.bad = value, 0
            self.best_state = [p.detach().clone() for p in self.params]
        else:
            self.bad += 1
            if self.bad >= self.cfg.patience:
                self.stopped = "early_stop"

    @torch.no_grad()
    def restore_best(self) -> None:
        if self.best_state is not None and self.heldout and self.heldout[-1][1] > self.best:
            for p, b in zip(self.params, self.best_state, strict=True):
                p.copy_(b)


@dataclass
class _Training:
    """What both training loops share: the optimizer, the (centre, context) pairs, the noise distribution."""

    opt: torch.optim.Optimizer
    pairs: Tensor  # (P, 2) ids in the combined space
    noise: Tensor  # (V_old + n_new,) negative-sampling distribution
    cfg: CW2VConfig
    g: torch.Generator
    n_old: int
    stopper_for: Callable[[int], _Stopper]


def _split_heldout(
    pairs: Tensor, noise: Tensor, cfg: CW2VConfig, g: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """(train pairs, held-out pairs, held-out negatives (H, K)) with fixed negatives."""
    perm = torch.randperm(pairs.shape[0], generator=g, device=pairs.device)
    n_held = min(int(pairs.shape[0] * cfg.heldout), 20_000) if cfg.heldout > 0 else 0
    held_neg = torch.multinomial(noise, max(n_held, 1) * cfg.negatives, True, generator=g)
    return pairs[perm[n_held:]], pairs[perm[:n_held]], held_neg.view(-1, cfg.negatives)[:n_held]


def _train_dense(emb: _Rows, out_rows: _Rows, run: _Training) -> _Stopper:
    """The reference loop: every row looked up through A (exact gradients for shared A2)."""
    opt, pairs, noise, cfg, g, n_old = run.opt, run.pairs, run.noise, run.cfg, run.g, run.n_old
    train, held, held_neg = _split_heldout(pairs, noise, cfg, g)
    per_epoch = math.ceil(train.shape[0] / cfg.batch_size)
    stop = run.stopper_for(per_epoch)

    def heldout() -> float:
        with torch.no_grad():
            total = sum(
                float(_pair_loss(emb, out_rows, held[i : i + 4096], held_neg[i : i + 4096], n_old))
                * min(4096, held.shape[0] - i)
                for i in range(0, held.shape[0], 4096)
            )
        return total / held.shape[0]

    while stop.before_step():
        order = torch.randperm(train.shape[0], generator=g, device=train.device)
        for s in range(0, train.shape[0], cfg.batch_size):
            if not stop.before_step():
                break
            batch = train[order[s : s + cfg.batch_size]]  # (B, 2)
            neg = torch.multinomial(noise, batch.shape[0] * cfg.negatives, True, generator=g)
            loss = _pair_loss(emb, out_rows, batch, neg.view(batch.shape[0], cfg.negatives), n_old)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            stop.after_step(float(loss.detach()), heldout if held.shape[0] else None)
    return stop


def _train_sparse(emb: _SparseConvexRows, head: _SparseConvexRows | None, run: _Training) -> _Stopper:
    """Sparse rows depend only on their own logits, so a bank of every row's current value is exact: a step
    computes fresh rows (with gradients) for ``batch_size // 16`` new tokens only and reads every other
    new token's row from the bank. Input rows learn from their (centre, context) pairs; an untied head's
    rows from the same pairs reversed, with noise centres as negatives (symmetric negative sampling)."""
    opt, pairs, noise, cfg, g, n_old = run.opt, run.pairs, run.noise, run.cfg, run.g, run.n_old
    per_token = 16
    train, held, held_neg = _split_heldout(pairs[pairs[:, 0] >= n_old], noise, cfg, g)
    order = torch.argsort(train[:, 0])
    train = train[order]
    n_new = emb.logits.shape[0]
    counts = torch.bincount(train[:, 0] - n_old, minlength=n_new)  # pairs per new centre
    starts = torch.cumsum(counts, 0) - counts
    active = torch.nonzero(counts).squeeze(1)  # new tokens with pairs
    tokens_per_step = max(1, cfg.batch_size // per_token)
    stop = run.stopper_for(math.ceil(active.numel() / tokens_per_step))
    bank_in = emb.all_rows()  # (n_new, D), exact current rows
    bank_out = head.all_rows() if head is not None else bank_in
    old_in = emb.old
    old_out = head.old if head is not None else emb.old

    def vectors(ids: Tensor, old: Tensor, bank: Tensor, fresh: Tensor | None, slot: Tensor | None) -> Tensor:
        out = torch.where(
            (ids < n_old).unsqueeze(-1), old[ids.clamp_max(n_old - 1)], bank[(ids - n_old).clamp_min(0)]
        )
        if fresh is not None and slot is not None:
            pos = slot[(ids - n_old).clamp_min(0)]
            is_fresh = (ids >= n_old) & (pos >= 0)
            out = torch.where(is_fresh.unsqueeze(-1), fresh[pos.clamp_min(0)], out)
        return out

    def sg(centre: Tensor, pos: Tensor, neg: Tensor) -> Tensor:  # (B, D), (B, D), (B, K, D)
        logits = torch.cat(
            [(centre * pos).sum(-1, keepdim=True), -torch.einsum("bd,bkd->bk", centre, neg)], 1
        )
        return -nn.functional.logsigmoid(logits).sum(1).mean()

    def heldout() -> float:
        total = 0.0
        with torch.no_grad():
            for i in range(0, held.shape[0], 4096):
                h, hn = held[i : i + 4096], held_neg[i : i + 4096]
                c = vectors(h[:, 0], old_in, bank_in, None, None)
                o = vectors(h[:, 1], old_out, bank_out, None, None)
                total += float(sg(c, o, vectors(hn, old_out, bank_out, None, None))) * h.shape[0]
        return total / held.shape[0]

    slot = torch.full((n_new,), -1, dtype=torch.long, device=pairs.device)
    while stop.before_step():
        perm = active[torch.randperm(active.numel(), generator=g, device=active.device)]
        for s in range(0, perm.numel(), tokens_per_step):
            if not stop.before_step():
                break
            tokens = perm[s : s + tokens_per_step]  # (S,)
            pick = torch.rand(tokens.numel(), per_token, generator=g, device=tokens.device)
            idx = starts[tokens].unsqueeze(1) + (pick * counts[tokens].unsqueeze(1)).long()  # (S, P)
            batch = train[idx.reshape(-1)]  # (S * P, 2), centre = the token
            slot[tokens] = torch.arange(tokens.numel(), device=tokens.device)
            fresh_in = emb(tokens)  # (S, D)
            fresh_out = head(tokens) if head is not None else fresh_in
            neg = torch.multinomial(noise, batch.shape[0] * cfg.negatives, True, generator=g)
            neg = neg.view(batch.shape[0], cfg.negatives)
            centre = fresh_in.repeat_interleave(per_token, 0)
            loss = sg(
                centre,
                vectors(batch[:, 1], old_out, bank_out, fresh_out, slot),
                vectors(neg, old_out, bank_out, fresh_out, slot),
            )
            if head is not None:  # reversed pairs train the head rows: context = the token
                noise_centres = torch.multinomial(noise, batch.shape[0] * cfg.negatives, True, generator=g)
                loss = loss + sg(
                    fresh_out.repeat_interleave(per_token, 0),
                    vectors(batch[:, 1], old_in, bank_in, fresh_in, slot),
                    vectors(noise_centres.view(-1, cfg.negatives), old_in, bank_in, fresh_in, slot),
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            slot[tokens] = -1
            with torch.no_grad():
                bank_in[tokens] = emb(tokens)
                if head is not None:
                    bank_out[tokens] = head(tokens)
            stop.after_step(float(loss.detach()), heldout if held.shape[0] else None)
    return stop


def cw2v_rows(
    old_weight: Tensor,
    n_new: int,
    sequences: Sequence[Tensor],
    *,
    old_head: Tensor | None = None,
    config: CW2VConfig | None = None,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
) -> CW2VResult:
    """Train CW2V rows for ``n_new`` new tokens on ``sequences`` of ids in the combined id space.

    Ids ``< V_old`` are old tokens (rows of ``old_weight``, frozen); id ``V_old + i`` is new token ``i``.
    The centre vector is the input-embedding row and the context/negative vector the output row: from
    ``old_head`` (rows + a second A, as in the reference code) when the model has an untied head, else
    from the same input matrix. New tokens that never occur keep their initial rows (the mean of the old
    rows, dense; of their support, sparse).
    """
    cfg = config or CW2VConfig()
    g = make_generator(generator, device=old_weight.device)
    dev, dt = old_weight.device, _work_dtype(old_weight)
    n_old = old_weight.shape[0]
    support = cfg.support if cfg.support is not None and cfg.support < n_old else None
    sparse = support is not None

    def make(base: Tensor) -> _Rows:
        if support is not None:
            return _SparseConvexRows(base.to(dt), n_new, support, g)
        return _ConvexRows(base.to(dt), n_new, cfg, g)

    emb = make(old_weight)
    head = make(old_head) if old_head is not None else None
    params = list(emb.parameters()) + (list(head.parameters()) if head is not None else [])
    opt = torch.optim.Adam(params, lr=cfg.sparse_lr if sparse else cfg.lr)

    pairs = _skipgram_pairs(sequences, cfg.window, n_old).to(dev)  # (P, 2)
    counts = torch.zeros(n_old + n_new, dtype=dt, device=dev)
    for seq in sequences:
        counts.index_add_(0, seq.reshape(-1).long().to(dev), torch.ones(seq.numel(), dtype=dt, device=dev))
    noise = counts.pow(0.75)

    def stopper_for(per_epoch: int) -> _Stopper:
        total = per_epoch * cfg.epochs
        if cfg.max_steps is not None:
            total = min(total, cfg.max_steps)
        return _Stopper(cfg, total, params, progress)

    start = time.perf_counter()
    if pairs.numel() == 0 or float(noise.sum()) == 0.0:
        logger.warning("cw2v: no (centre, context) pair involves a new token; rows stay at their init")
        stop = stopper_for(0)
        stop.stopped = "no_pairs"
    else:
        noise = noise / noise.sum()
        run = _Training(opt, pairs, noise, cfg, g, n_old, stopper_for)
        if isinstance(emb, _SparseConvexRows) and not isinstance(head, _ConvexRows):
            stop = _train_sparse(emb, head, run)
        else:
            out_rows = head if head is not None else emb
            stop = _train_dense(emb, out_rows, run)
        stop.restore_best()
    losses, heldout_losses, stopped = stop.losses, stop.heldout, stop.stopped
    rows = emb.all_rows().to(old_weight.dtype)
    head_rows = head.all_rows().to(old_head.dtype) if head is not None and old_head is not None else None
    seconds = time.perf_counter() - start
    logger.info("cw2v: %d steps in %.1fs (%s)", len(losses), seconds, stopped)

    def dense(m: nn.Module | None) -> tuple[Tensor | None, Tensor | None]:
        if isinstance(m, _ConvexRows):
            return m.a1.detach(), m.a2.detach()
        return None, None

    def sparse_of(m: nn.Module | None) -> tuple[Tensor, Tensor] | None:
        if isinstance(m, _SparseConvexRows):
            return m.index, m.logits.detach()
        return None

    a1, a2 = dense(emb)
    h1, h2 = dense(head)
    return CW2VResult(
        rows=rows,
        head_rows=head_rows,
        losses=losses,
        a1=a1,
        a2=a2,
        head_a1=h1,
        head_a2=h2,
        heldout_losses=heldout_losses,
        stopped=stopped,
        seconds=seconds,
        sparse=sparse_of(emb),
        head_sparse=sparse_of(head),
        n_old=n_old,
    )
