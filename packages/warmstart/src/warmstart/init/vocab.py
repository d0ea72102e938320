"""Vocabulary expansion: initialise the embedding (and output-head) rows of new tokens from the old ones.

Seed papers: *An Empirical Comparison of Vocabulary Expansion and Initialization Approaches for Language
Models* (Mundra et al., CoNLL 2024, arXiv 2407.05841) for CW2V and the multivariate baseline; *Fast
Vocabulary Transfer for Language Model Compression* (Gee et al., EMNLP 2022 industry) for FVT, which is also
the subtoken-mean init of Bailong's zip-tie and RedWhale (both unverified as to the exact aggregation;
the mean is the natural reading).

Implements six row initialisers on a plain embedding matrix (``init_new_rows`` and one function per
method) and ``expand_vocabulary``, which grows a transformers model's input embeddings and, separately,
an untied output head (weight and bias), keeping every old row bit-identical. It leaves out FOCUS /
WECHSEL / OFA (they need external word vectors) and any training after the initialisation.

Written by hand because no library offers these initialisers; transformers' own
``resize_token_embeddings(mean_resizing=True)`` samples N(mu, 1e-9 * Sigma) (effectively the mean) and
builds a new ``nn.Linear`` head that ``post_init`` re-initialises (transformers issue #35141). Here the
existing ``nn.Parameter`` objects are resized in place (``param.data = ...``), so nothing new is created,
tying is kept and the modules stay flagged ``_is_hf_initialized``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

VocabInitMethod = Literal["random", "mean", "multivariate", "fvt", "convex", "cw2v"]
METHODS: tuple[str, ...] = ("random", "mean", "multivariate", "fvt", "convex", "cw2v")
_MARKERS = ("Ġ", "▁")


def make_generator(
    generator: torch.Generator | None = None, seed: int | None = None, device: torch.device | str = "cpu"
) -> torch.Generator:
    """Return ``generator`` if given, else a new one on ``device`` seeded with ``seed`` (0 if None)."""
    if generator is not None:
        return generator
    g = torch.Generator(device=device)
    g.manual_seed(0 if seed is None else seed)
    return g


def _work_dtype(weight: Tensor) -> torch.dtype:
    return torch.float64 if weight.dtype == torch.float64 else torch.float32


# ----------------------------------------------------------------------------------------------------------
# Row initialisers on a plain matrix. ``old_weight`` is (V_old, D): the rows the statistics are taken from.
# Every function returns (n_new, D) in ``old_weight``'s dtype and never modifies ``old_weight``.
# ----------------------------------------------------------------------------------------------------------


def random_rows(
    old_weight: Tensor, n_new: int, *, std: float = 0.02, generator: torch.Generator | None = None
) -> Tensor:
    """The scratch baseline: rows ~ N(0, std^2 I), std = the model's ``initializer_range`` by default."""
    g = make_generator(generator, device=old_weight.device)
    d = old_weight.shape[1]
    rows = torch.randn(n_new, d, generator=g, device=old_weight.device, dtype=_work_dtype(old_weight))
    return (rows * std).to(old_weight.dtype)  # (n_new, D)


def mean_rows(old_weight: Tensor, n_new: int) -> Tensor:
    """Every new row is the mean of the old rows (computed in fp32, or fp64 for fp64 input)."""
    mu = old_weight.to(_work_dtype(old_weight)).mean(dim=0)  # (D,)
    return mu.to(old_weight.dtype).unsqueeze(0).expand(n_new, -1).clone()  # (n_new, D)


def _cholesky_of_covariance(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (D,) and lower Cholesky factor L (D, D) of the biased covariance of the rows of ``x``."""
    n = x.shape[0]
    mu = x.mean(dim=0)  # (D,)
    xc = x - mu  # (V, D)
    sigma = (xc.T @ xc) / n  # (D, D), biased like transformers' mean_resizing
    chol, info = torch.linalg.cholesky_ex(sigma)
    jitter = 1e-10 * float(sigma.diagonal().mean().clamp_min(1e-30))
    eye = torch.eye(sigma.shape[0], dtype=sigma.dtype, device=sigma.device)
    while int(info) != 0:  # rank-deficient Sigma (V_old <= D or duplicated rows): add a tiny ridge
        logger.debug("covariance not positive definite; adding jitter %.3g", jitter)
        chol, info = torch.linalg.cholesky_ex(sigma + jitter * eye)
        jitter *= 10.0
    return mu, chol


def multivariate_rows(
    old_weight: Tensor, n_new: int, *, scale: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Rows ~ N(mu, scale * Sigma) of the old rows (CW2V paper's *multivariate* baseline, scale 1).

    Sampled as ``mu + randn(n_new, D) @ L^T`` with one Cholesky factor ``L`` of ``Sigma``; transformers'
    ``mean_resizing`` uses ``scale = 1e-9`` via ``MultivariateNormal`` (a second Cholesky and a positive-
    definiteness check).
    """
    g = make_generator(generator, device=old_weight.device)
    x = old_weight.to(_work_dtype(old_weight))
    mu, chol = _cholesky_of_covariance(x)
    z = torch.randn(n_new, x.shape[1], generator=g, dtype=x.dtype, device=x.device)  # (n_new, D)
    rows = torch.addmm(mu.unsqueeze(0), z, chol.T, alpha=math.sqrt(scale))  # (n_new, D)
    return rows.to(old_weight.dtype)


def fvt_rows(old_weight: Tensor, pieces: Sequence[Sequence[int]]) -> Tensor:
    """Row i = mean of ``old_weight[pieces[i]]``; an empty piece list falls back to the mean of all rows.

    A token that exists in the old vocabulary has ``pieces[i] == [its old id]``, so its row is copied.
    """
    x = old_weight.to(_work_dtype(old_weight))
    d = x.shape[1]
    n_new = len(pieces)
    lengths = torch.tensor([len(p) for p in pieces], dtype=torch.long)
    flat = torch.tensor([i for p in pieces for i in p], dtype=torch.long, device=x.device)
    owner = torch.repeat_interleave(torch.arange(n_new), lengths).to(x.device)
    sums = torch.zeros(n_new, d, dtype=x.dtype, device=x.device).index_add_(0, owner, x[flat])  # (n_new, D)
    rows = sums / lengths.clamp_min(1).to(x.device, x.dtype).unsqueeze(1)
    empty = lengths == 0
    if bool(empty.any()):
        rows[empty.to(x.device)] = x.mean(dim=0)
    single = lengths == 1  # exact copies, bit-identical even in low precision
    out = rows.to(old_weight.dtype)
    if bool(single.any()):
        idx = torch.nonzero(single).squeeze(1)
        out[idx.to(x.device)] = old_weight[flat[(torch.cumsum(lengths, 0) - 1)[idx].to(x.device)]]
    return out


def convex_weights(
    n_old: int,
    n_new: int,
    *,
    k: int | None = 16,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor]:
    """Sparse random convex weights: for each new row, ``k`` distinct old ids and Dirichlet(1) weights.

    Dirichlet(1, ..., 1) is sampled as normalised Exp(1) variables (``-log U``) so the explicit generator is
    honoured. ``k=None`` uses every old row. Returns ``(index (n_new, k), weight (n_new, k))``.
    """
    g = make_generator(generator, device=device)
    k = n_old if k is None else min(k, n_old)
    if k == n_old:
        index = torch.arange(n_old, device=device).expand(n_new, -1)
    else:  # k distinct ids per row: top-k of i.i.d. uniform keys
        if n_old * n_new <= 10_000_000:
            index = torch.rand(n_new, n_old, generator=g, device=device).topk(k, dim=1).indices
        else:
            index = _distinct(n_old, n_new, k, g)
    e = -torch.log(torch.rand(n_new, k, generator=g, device=device).clamp_min(1e-12))  # Exp(1)
    return index, e / e.sum(dim=1, keepdim=True)


def _distinct(n_old: int, n_new: int, k: int, g: torch.Generator) -> Tensor:
    """k distinct ids per row for large n_old * n_new without a dense (n_new, n_old) key matrix."""
    out = torch.randint(n_old, (n_new, k), generator=g, device=g.device)
    for _ in range(100):
        s, _ = out.sort(dim=1)
        dup = (s[:, 1:] == s[:, :-1]).any(dim=1)
        if not bool(dup.any()):
            return out
        rows = torch.nonzero(dup).squeeze(1)
        out[rows] = torch.randint(n_old, (rows.numel(), k), generator=g, device=g.device)
    raise RuntimeError("could not draw distinct indices")


def convex_rows(
    old_weight: Tensor,
    n_new: int,
    *,
    k: int | None = 16,
    generator: torch.Generator | None = None,
    return_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    """Random convex combinations of ``k`` old rows each (weights >= 0, summing to 1: in the convex hull)."""
    x = old_weight.to(_work_dtype(old_weight))
    index, weight = convex_weights(x.shape[0], n_new, k=k, generator=generator, device=x.device)
    w = weight.to(x.dtype)
    rows = torch.empty(n_new, x.shape[1], dtype=x.dtype, device=x.device)  # (n_new, D)
    for s in range(0, n_new, 1024):  # chunked gather: never a (n_new, k, D) tensor
        rows[s : s + 1024] = torch.bmm(w[s : s + 1024].unsqueeze(1), x[index[s : s + 1024]]).squeeze(1)
    rows = rows.to(old_weight.dtype)
    return (rows, index, weight) if return_weights else rows


# ----------------------------------------------------------------------------------------------------------
# CW2V: rows = softmax(A) @ E_old, A trained skip-gram style with negative sampling, old rows frozen.
# ----------------------------------------------------------------------------------------------------------


@dataclass
class CW2VConfig:
    """Training settings for CW2V (defaults follow the reference code except ``rank`` and ``lr``)."""

    rank: int = 256
    """Width r of the factorisation A = A1 (n_new x r) @ A2 (r x V_old); the reference code uses 1024."""
    window: int = 5
    """Skip-gram window (tokens each side)."""
    negatives: int = 5
    """Negative samples per (centre, context) pair, drawn from unigram^0.75 of the corpus."""
    lr: float = 3e-3
    """Adam learning rate (the reference uses 3e-4 over a large corpus; tiny corpora need more)."""
    epochs: int = 3
    """Passes over the (centre, context) pairs that involve a new token."""
    batch_size: int = 512
    """Pairs per step."""
    max_steps: int | None = None
    """Stop after this many steps (for benchmarks); None runs every epoch."""
    init_scale: float = 0.1
    """Std of the initial logits A1 @ A2 (small: the start is close to the mean of the old rows)."""


@dataclass
class CW2VResult:
    """Rows found by CW2V and the training trace."""

    rows: Tensor  # (n_new, D) input-embedding rows
    head_rows: Tensor | None  # (n_new, D_head) output rows when a separate head was given
    losses: list[float] = field(default_factory=list)
    a1: Tensor | None = None  # (n_new, r)
    a2: Tensor | None = None  # (r, V_old)
    head_a1: Tensor | None = None
    head_a2: Tensor | None = None

    def weights(self, head: bool = False) -> Tensor:
        """The convex weights softmax(A1 @ A2), (n_new, V_old): rows are >= 0 and sum to 1."""
        a1, a2 = (self.head_a1, self.head_a2) if head else (self.a1, self.a2)
        assert a1 is not None and a2 is not None
        return torch.softmax(a1 @ a2, dim=-1)


class _ConvexRows(nn.Module):
    """Trainable factorised logits; ``forward(ids)`` gives softmax(A1[ids] @ A2) @ E_old."""

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


def _skipgram_pairs(sequences: Sequence[Tensor], window: int, n_old: int) -> Tensor:
    """All (centre, context) pairs within ``window`` where at least one side is a new id (>= n_old)."""
    out = []
    for seq in sequences:
        seq = seq.reshape(-1).long()
        for off in range(1, window + 1):
            if seq.numel() <= off:
                break
            a, b = seq[:-off], seq[off:]
            out.append(torch.stack([a, b], 1))
            out.append(torch.stack([b, a], 1))
    if not out:
        return torch.empty(0, 2, dtype=torch.long)
    pairs = torch.cat(out)  # (P, 2)
    return pairs[(pairs >= n_old).any(dim=1)]


def cw2v_rows(
    old_weight: Tensor,
    n_new: int,
    sequences: Sequence[Tensor],
    *,
    old_head: Tensor | None = None,
    config: CW2VConfig | None = None,
    generator: torch.Generator | None = None,
) -> CW2VResult:
    """Train CW2V rows for ``n_new`` new tokens on ``sequences`` of ids in the combined id space.

    Ids ``< V_old`` are old tokens (rows of ``old_weight``, frozen); id ``V_old + i`` is new token ``i``.
    The centre vector is the input-embedding row and the context/negative vector the output row: from
    ``old_head`` (rows + a second factorised A, as in the reference code) when the model has an untied
    head, else from the same input matrix. Loss: ``-log s(e_c . u_o) - sum_neg log s(-e_c . u_n)``.
    New tokens that never occur keep their initial rows (close to the mean of the old rows).
    """
    cfg = config or CW2VConfig()
    g = make_generator(generator, device=old_weight.device)
    dev, dt = old_weight.device, _work_dtype(old_weight)
    n_old = old_weight.shape[0]
    emb = _ConvexRows(old_weight.to(dt), n_new, cfg, g)
    head = _ConvexRows(old_head.to(dt), n_new, cfg, g) if old_head is not None else None
    params = list(emb.parameters()) + (list(head.parameters()) if head is not None else [])
    opt = torch.optim.Adam(params, lr=cfg.lr)

    pairs = _skipgram_pairs(sequences, cfg.window, n_old).to(dev)  # (P, 2)
    counts = torch.zeros(n_old + n_new, dtype=dt, device=dev)
    for seq in sequences:
        counts.index_add_(0, seq.reshape(-1).long().to(dev), torch.ones(seq.numel(), dtype=dt, device=dev))
    noise = counts.pow(0.75)
    losses: list[float] = []
    step = 0
    if pairs.numel() == 0 or float(noise.sum()) == 0.0:
        logger.warning("cw2v: no (centre, context) pair involves a new token; rows stay at their init")
    else:
        noise = noise / noise.sum()
        for _ in range(cfg.epochs):
            perm = torch.randperm(pairs.shape[0], generator=g, device=dev)
            for s in range(0, pairs.shape[0], cfg.batch_size):
                if cfg.max_steps is not None and step >= cfg.max_steps:
                    break
                batch = pairs[perm[s : s + cfg.batch_size]]  # (B, 2)
                neg = torch.multinomial(noise, batch.shape[0] * cfg.negatives, True, generator=g)
                neg = neg.view(batch.shape[0], cfg.negatives)  # (B, K)
                e_c = _lookup(emb, batch[:, 0], n_old)  # (B, D)
                out = head if head is not None else emb
                u = _lookup(out, torch.cat([batch[:, 1:], neg], 1).reshape(-1), n_old)
                u = u.view(batch.shape[0], 1 + cfg.negatives, -1)  # (B, 1 + K, D)
                logits = torch.einsum("bd,bkd->bk", e_c, u)  # (B, 1 + K)
                sign = torch.full_like(logits, -1.0)
                sign[:, 0] = 1.0
                loss = -nn.functional.logsigmoid(sign * logits).sum(dim=1).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                step += 1
    rows = emb.all_rows().to(old_weight.dtype)
    head_rows = head.all_rows().to(old_head.dtype) if head is not None and old_head is not None else None
    return CW2VResult(
        rows=rows,
        head_rows=head_rows,
        losses=losses,
        a1=emb.a1.detach(),
        a2=emb.a2.detach(),
        head_a1=head.a1.detach() if head is not None else None,
        head_a2=head.a2.detach() if head is not None else None,
    )


def _lookup(rows: _ConvexRows, ids: Tensor, n_old: int) -> Tensor:
    """Vectors for ids in the combined space: frozen old rows, or softmax(A) @ E_old for new ones."""
    out = torch.empty(ids.shape[0], rows.old.shape[1], dtype=rows.old.dtype, device=ids.device)
    is_new = ids >= n_old
    out = out.index_put((torch.nonzero(~is_new).squeeze(1),), rows.old[ids[~is_new]])
    if bool(is_new.any()):
        uniq, inv = torch.unique(ids[is_new] - n_old, return_inverse=True)
        out = out.index_put((torch.nonzero(is_new).squeeze(1),), rows(uniq)[inv])
    return out


def init_new_rows(
    old_weight: Tensor,
    n_new: int,
    method: VocabInitMethod,
    *,
    generator: torch.Generator | None = None,
    std: float = 0.02,
    pieces: Sequence[Sequence[int]] | None = None,
    convex_k: int | None = 16,
    sequences: Sequence[Tensor] | None = None,
    cw2v: CW2VConfig | None = None,
) -> Tensor:
    """Dispatch to one initialiser: (V_old, D) old rows -> (n_new, D) new rows.

    ``fvt`` needs ``pieces`` (old ids per new token); ``cw2v`` needs ``sequences`` in the combined id space
    (see ``cw2v_rows``; use that function directly for a separately trained head).
    """
    if method == "random":
        return random_rows(old_weight, n_new, std=std, generator=generator)
    if method == "mean":
        return mean_rows(old_weight, n_new)
    if method == "multivariate":
        return multivariate_rows(old_weight, n_new, generator=generator)
    if method == "fvt":
        if pieces is None or len(pieces) != n_new:
            raise ValueError("fvt needs one list of old ids (pieces) per new row")
        return fvt_rows(old_weight, pieces)
    if method == "convex":
        out = convex_rows(old_weight, n_new, k=convex_k, generator=generator)
        assert isinstance(out, Tensor)
        return out
    if method == "cw2v":
        if sequences is None:
            raise ValueError("cw2v needs target-text id sequences")
        return cw2v_rows(old_weight, n_new, sequences, config=cw2v, generator=generator).rows
    raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


# ----------------------------------------------------------------------------------------------------------
# Model level
# ----------------------------------------------------------------------------------------------------------


@dataclass
class VocabExpansion:
    """What ``expand_vocabulary`` did."""

    old_rows: int
    new_rows: int
    new_token_ids: list[int]
    """Ids (in the new tokenizer) whose rows were initialised by the method."""
    copied: dict[int, int]
    """new id -> old id for tokens present in both vocabularies at different ids."""
    method: str
    head_method: str | None
    tied: bool
    fvt_fallbacks: int = 0
    """New tokens whose string gave no old pieces (they got the mean row)."""
    cw2v_losses: list[float] = field(default_factory=list)


def token_text(token: str, tokenizer: Any) -> str:
    """The surface string of a vocabulary entry with subword markers ('##', 'Ġ', '▁') stripped."""
    text = token
    try:
        decoded = tokenizer.convert_tokens_to_string([token])
        if decoded and "\ufffd" not in decoded:
            text = decoded
    except Exception:  # some slow tokenizers cannot decode an isolated piece
        pass
    if text.startswith("##"):
        text = text[2:]
    for m in _MARKERS:
        text = text.replace(m, " ")
    return text.strip()


def fvt_pieces(
    new_tokens: Sequence[str], old_tokenizer: Any, new_tokenizer: Any, old_vocab: dict[str, int]
) -> list[list[int]]:
    """Old ids per new token: its own id if the old vocabulary has it, else the old tokenizer's pieces."""
    unk = getattr(old_tokenizer, "unk_token_id", None)
    texts = [token_text(t, new_tokenizer) for t in new_tokens]
    todo = [i for i, t in enumerate(new_tokens) if t not in old_vocab and texts[i]]
    encoded = old_tokenizer([texts[i] for i in todo], add_special_tokens=False)["input_ids"] if todo else []
    pieces: dict[int, list[int]] = {
        i: [j for j in ids if j != unk] for i, ids in zip(todo, encoded, strict=True)
    }
    return [[old_vocab[t]] if t in old_vocab else pieces.get(i, []) for i, t in enumerate(new_tokens)]


def _output_layer(model: nn.Module) -> nn.Module | None:
    get = getattr(model, "get_output_embeddings", None)
    return get() if callable(get) else None


def _is_tied(model: nn.Module) -> bool:
    head = _output_layer(model)
    if head is None:
        return False
    return head.weight is model.get_input_embeddings().weight


def _set_rows(param: nn.Parameter, new: Tensor) -> None:
    param.data = new
    param._is_hf_initialized = True  # type: ignore[attr-defined]


@torch.no_grad()
def expand_vocabulary(
    model: nn.Module,
    old_tokenizer: Any,
    new_tokenizer: Any,
    method: VocabInitMethod = "mean",
    *,
    head_method: VocabInitMethod | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    texts: Sequence[str] | None = None,
    cw2v: CW2VConfig | None = None,
    convex_k: int | None = 16,
    std: float | None = None,
    pad_to_multiple_of: int | None = None,
) -> VocabExpansion:
    """Resize ``model``'s embeddings (and untied output head) from ``old_tokenizer``'s to ``new_tokenizer``'s ids.

    Row layout: the new matrix has ``max(len(new vocab), old rows)`` rows (rounded up to
    ``pad_to_multiple_of``). The old rows are kept at their old positions, bit-identical; a token that exists
    in both vocabularies at a *different* id gets its old row copied there; every other row (new tokens and
    padding rows beyond the old matrix) is initialised by ``method``, from statistics of the rows of the old
    vocabulary only. An untied head (weight and, if present, bias as an extra column) is initialised with
    ``head_method`` (default: the same method) from its own old rows; a tied head follows the input
    embeddings. ``cw2v`` trains on ``texts`` tokenised with ``new_tokenizer`` (one A for the embeddings and,
    for an untied head, a second for the head). The modules and ``nn.Parameter`` objects are kept and only
    resized, so the result survives ``post_init`` (transformers #35141) and ``save_pretrained``.
    """
    head_method = head_method or method
    emb = model.get_input_embeddings()
    weight = emb.weight
    g = make_generator(generator, seed, device=weight.device)
    old_vocab: dict[str, int] = old_tokenizer.get_vocab()
    new_vocab: dict[str, int] = new_tokenizer.get_vocab()
    old_rows = weight.shape[0]
    size = max(max(new_vocab.values()) + 1, old_rows)
    if pad_to_multiple_of:
        size = -(-size // pad_to_multiple_of) * pad_to_multiple_of
    support_ids = sorted(i for i in old_vocab.values() if i < old_rows)  # rows of real old tokens
    contiguous = support_ids == list(range(len(support_ids)))
    # a view when the old ids are 0..n-1 (the usual case), else a gather
    support: list[int] | slice = slice(0, len(support_ids)) if contiguous else support_ids
    position = {old_id: p for p, old_id in enumerate(support_ids)}

    copied: dict[int, int] = {}
    new_ids: list[int] = []
    new_tokens: list[str] = []
    for tok, nid in sorted(new_vocab.items(), key=lambda kv: kv[1]):
        oid = old_vocab.get(tok)
        if oid is not None and oid < old_rows:
            if oid != nid:
                copied[nid] = oid
        else:
            new_ids.append(nid)
            new_tokens.append(tok)
    assigned = set(new_vocab.values())
    padding = [i for i in range(old_rows, size) if i not in assigned]  # rows no token uses
    init_ids = new_ids + padding

    pieces: list[list[int]] | None = None
    fallbacks = 0
    if "fvt" in (method, head_method):
        raw = fvt_pieces(new_tokens, old_tokenizer, new_tokenizer, old_vocab) + [[] for _ in padding]
        pieces = [[position[i] for i in p if i in position] for p in raw]
        fallbacks = sum(1 for p in pieces[: len(new_ids)] if not p)
    cw2v_res: CW2VResult | None = None
    head = _output_layer(model)
    tied = _is_tied(model)
    untied_head = (
        head if head is not None and not tied and getattr(head, "weight", None) is not None else None
    )
    head_bias = getattr(untied_head, "bias", None) if untied_head is not None else None
    if head_bias is None and head is not None and tied:
        head_bias = getattr(head, "bias", None)

    def head_matrix() -> Tensor:  # (V_old, D (+1 for the bias))
        assert untied_head is not None
        w = untied_head.weight[support]
        if head_bias is not None:
            w = torch.cat([w, head_bias[support].unsqueeze(1).to(w.dtype)], dim=1)
        return w

    if "cw2v" in (method, head_method):
        if texts is None:
            raise ValueError("method 'cw2v' needs `texts` (target-language text)")
        combined = {nid: position[oid] for nid, oid in _shared_ids(old_vocab, new_vocab, old_rows).items()}
        combined.update({nid: len(support_ids) + i for i, nid in enumerate(init_ids)})
        sequences = []
        for t in texts:
            ids = new_tokenizer(t, add_special_tokens=False)["input_ids"]
            sequences.append(torch.tensor([combined[i] for i in ids if i in combined], dtype=torch.long))
        with torch.enable_grad():
            cw2v_res = cw2v_rows(
                weight[support],
                len(init_ids),
                sequences,
                old_head=head_matrix() if untied_head is not None and head_method == "cw2v" else None,
                config=cw2v,
                generator=g,
            )

    def rows_for(old: Tensor, which: str, is_head: bool) -> Tensor:
        if which == "cw2v":
            assert cw2v_res is not None
            res = cw2v_res.head_rows if is_head else cw2v_res.rows
            if res is None:  # cw2v for the head only: train it on its own
                raise ValueError("cw2v for the head needs method='cw2v' too")
            return res
        init_std = std if std is not None else float(getattr(model.config, "initializer_range", 0.02))
        return init_new_rows(
            old, len(init_ids), which, generator=g, std=init_std, pieces=pieces, convex_k=convex_k
        )  # type: ignore[arg-type]

    # input embeddings (and a tied head)
    new_w = _grown(weight, size)
    if init_ids:
        new_w[init_ids] = rows_for(weight[support], method, False).to(weight.dtype)
    for nid, oid in copied.items():
        new_w[nid] = weight[oid]
    _set_rows(weight, new_w)
    emb.num_embeddings = size

    if untied_head is not None:
        old_head_w = untied_head.weight
        hw = _grown(old_head_w, size)
        hb = _grown(head_bias, size) if head_bias is not None else None
        if init_ids:
            rows = rows_for(head_matrix(), head_method, True)
            if head_method == "random" and hb is not None:
                rows[:, -1] = 0.0
            hw[init_ids] = rows[:, : old_head_w.shape[1]].to(old_head_w.dtype)
            if hb is not None:
                hb[init_ids] = rows[:, -1].to(hb.dtype)
        for nid, oid in copied.items():
            hw[nid] = old_head_w[oid]
            if hb is not None:
                hb[nid] = head_bias[oid]
        _set_rows(untied_head.weight, hw)
        if hb is not None and head_bias is not None:
            _set_rows(head_bias, hb)
    elif head_bias is not None:  # tied weight, own bias (BERT's MLM decoder): mean / copies
        hb = _grown(head_bias, size)
        if init_ids:
            hb[init_ids] = 0.0 if method == "random" else head_bias[support].float().mean().to(hb.dtype)
        for nid, oid in copied.items():
            hb[nid] = head_bias[oid]
        _set_rows(head_bias, hb)
    if head is not None:
        if hasattr(head, "out_features"):
            head.out_features = size
        if hasattr(head, "num_embeddings"):
            head.num_embeddings = size
        head._is_hf_initialized = True  # type: ignore[attr-defined]
    emb._is_hf_initialized = True  # type: ignore[attr-defined]

    config = getattr(model, "config", None)
    if config is not None:
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        text_config.vocab_size = size
        if hasattr(model, "vocab_size"):
            model.vocab_size = size
    logger.info(
        "expanded vocabulary %d -> %d rows (%d initialised by %s, %d copied)",
        old_rows,
        size,
        len(init_ids),
        method,
        len(copied),
    )
    return VocabExpansion(
        old_rows=old_rows,
        new_rows=size,
        new_token_ids=new_ids,
        copied=copied,
        method=method,
        head_method=head_method if untied_head is not None else None,
        tied=tied,
        fvt_fallbacks=fallbacks,
        cw2v_losses=cw2v_res.losses if cw2v_res is not None else [],
    )


def _shared_ids(old_vocab: dict[str, int], new_vocab: dict[str, int], old_rows: int) -> dict[int, int]:
    """new id -> old id for every token in both vocabularies."""
    return {nid: old_vocab[t] for t, nid in new_vocab.items() if t in old_vocab and old_vocab[t] < old_rows}


def _grown(t: Tensor, size: int) -> Tensor:
    """A copy of ``t`` with ``size`` rows: the old rows bit-identical, the rest uninitialised."""
    out = torch.empty((size, *t.shape[1:]), dtype=t.dtype, device=t.device)
    out[: t.shape[0]] = t[:size]
    return out
