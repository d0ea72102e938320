"""Vocabulary expansion: initialise the embedding (and output-head) rows of new tokens from the old ones.

Seed papers: *An Empirical Comparison of Vocabulary Expansion and Initialization Approaches for Language
Models* (Mundra et al., CoNLL 2024, arXiv 2407.05841) for CW2V and the multivariate baseline; *Fast
Vocabulary Transfer for Language Model Compression* (Gee et al., EMNLP 2022 industry) for FVT, which is also
the subtoken-mean init of Bailong's zip-tie and RedWhale (both unverified as to the exact aggregation;
the mean is the natural reading).

This module is the model level: ``init_new_rows`` dispatches to the six row initialisers (closed-form ones
in :mod:`warmstart.init.rows`, CW2V in :mod:`warmstart.init.cw2v`) and ``expand_vocabulary`` grows a transformers model's input embeddings and, separately,
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from warmstart.init.cw2v import CW2VConfig, CW2VResult, Progress, cw2v_rows
from warmstart.init.rows import (
    convex_rows,
    fvt_rows,
    make_generator,
    mean_rows,
    multivariate_rows,
    random_rows,
)

__all__ = [  # the other inits are defined (and exported) by warmstart.init.rows and warmstart.init.cw2v
    "METHODS",
    "VocabExpansion",
    "VocabInitMethod",
    "expand_vocabulary",
    "fvt_pieces",
    "init_new_rows",
    "token_text",
]

logger = logging.getLogger(__name__)

VocabInitMethod = Literal["random", "mean", "multivariate", "fvt", "convex", "cw2v"]
METHODS: tuple[str, ...] = ("random", "mean", "multivariate", "fvt", "convex", "cw2v")
_MARKERS = ("Ġ", "▁")


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
    cw2v_heldout: list[tuple[int, float]] = field(default_factory=list)
    """CW2V's (step, held-out pair loss) trace."""
    cw2v_stopped: str = ""
    """Why CW2V training stopped (epochs, max_steps, max_seconds, early_stop, no_pairs)."""


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
    head = get() if callable(get) else None
    return head if isinstance(head, nn.Module) else None


def _input_layer(model: nn.Module) -> nn.Module:
    get = getattr(model, "get_input_embeddings", None)
    emb = get() if callable(get) else None
    if not isinstance(emb, nn.Module):
        raise TypeError(f"{type(model).__name__} has no get_input_embeddings(): pass a transformers model")
    return emb


def _tensor(module: nn.Module | None, name: str) -> Tensor | None:
    """``module.<name>`` when it is a tensor (a weight or bias), else None."""
    value = getattr(module, name, None) if module is not None else None
    return value if isinstance(value, Tensor) else None


def _is_tied(model: nn.Module) -> bool:
    head = _output_layer(model)
    if head is None:
        return False
    return _tensor(head, "weight") is _tensor(_input_layer(model), "weight")


def _mark_initialized(obj: nn.Module | Tensor) -> None:
    """Flag ``obj`` as initialised for transformers, so ``post_init`` does not re-initialise it."""
    setattr(obj, "_is_hf_initialized", True)  # noqa: B010 - transformers' own dynamic flag


def _set_rows(param: Tensor, new: Tensor) -> None:
    param.data = new
    _mark_initialized(param)


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
    progress: Progress | None = None,
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
    emb = _input_layer(model)
    weight = _tensor(emb, "weight")
    if weight is None:
        raise TypeError(f"{type(model).__name__}'s input embeddings have no weight")
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
    head_weight = _tensor(head, "weight") if not tied else None  # the untied head's weight
    head_bias = _tensor(head, "bias") if head_weight is not None or tied else None

    def head_matrix() -> Tensor:  # (V_old, D (+1 for the bias))
        assert head_weight is not None
        w = head_weight[support]
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
                old_head=head_matrix() if head_weight is not None and head_method == "cw2v" else None,
                config=cw2v,
                generator=g,
                progress=progress,
            )

    def rows_for(old: Tensor, which: VocabInitMethod, is_head: bool) -> Tensor:
        if which == "cw2v":
            assert cw2v_res is not None
            res = cw2v_res.head_rows if is_head else cw2v_res.rows
            if res is None:  # cw2v for the head only: train it on its own
                raise ValueError("cw2v for the head needs method='cw2v' too")
            return res
        init_std = std if std is not None else float(getattr(model.config, "initializer_range", 0.02))
        return init_new_rows(
            old, len(init_ids), which, generator=g, std=init_std, pieces=pieces, convex_k=convex_k
        )

    # input embeddings (and a tied head)
    new_w = _grown(weight, size)
    if init_ids:
        new_w[init_ids] = rows_for(weight[support], method, False).to(weight.dtype)
    for nid, oid in copied.items():
        new_w[nid] = weight[oid]
    _set_rows(weight, new_w)
    setattr(emb, "num_embeddings", size)  # noqa: B010 - an int on a module (nn.Module types its attributes as tensors)

    if head_weight is not None:
        old_head_w = head_weight
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
            if hb is not None and head_bias is not None:
                hb[nid] = head_bias[oid]
        _set_rows(head_weight, hw)
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
        for size_field in ("out_features", "num_embeddings"):
            if hasattr(head, size_field):
                setattr(head, size_field, size)
        _mark_initialized(head)
    _mark_initialized(emb)

    config = getattr(model, "config", None)
    if config is not None:
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        text_config.vocab_size = size
        if hasattr(model, "vocab_size"):
            setattr(model, "vocab_size", size)  # noqa: B010 - an int on a module
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
        head_method=head_method if head_weight is not None else None,
        tied=tied,
        fvt_fallbacks=fallbacks,
        cw2v_losses=cw2v_res.losses if cw2v_res is not None else [],
        cw2v_heldout=cw2v_res.heldout_losses if cw2v_res is not None else [],
        cw2v_stopped=cw2v_res.stopped if cw2v_res is not None else "",
    )


def _shared_ids(old_vocab: dict[str, int], new_vocab: dict[str, int], old_rows: int) -> dict[int, int]:
    """new id -> old id for every token in both vocabularies."""
    return {nid: old_vocab[t] for t, nid in new_vocab.items() if t in old_vocab and old_vocab[t] < old_rows}


def _grown(t: Tensor, size: int) -> Tensor:
    """A copy of ``t`` with ``size`` rows: the old rows bit-identical, the rest uninitialised."""
    out = torch.empty((size, *t.shape[1:]), dtype=t.dtype, device=t.device)
    out[: t.shape[0]] = t[:size]
    return out
