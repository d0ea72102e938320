"""Sequence packing: documents joined with EOS into fixed-length blocks, or bin-packed without splitting.

Seed practice: GPT-style concatenate-and-chunk pretraining ("Language Models are Unsupervised Multitask
Learners", GPT-2) and packing without cross-document splits by first-fit-decreasing bin packing ("Fewer
Truncations Improve Language Modeling", Ding et al., arXiv 2404.10830). Written by hand: the HF recipe
(``group_texts``) is a map over a ``datasets`` table and keeps no document boundaries. Every block carries
``position_ids`` that restart at each document (segment) start and ``document_ids`` (segment index within
the block, ``-1`` on padding) so a model can mask attention per document
(:func:`document_attention_mask`). Left out: best-fit heuristics beyond FFD and variable-length (varlen)
flash-attention kernels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import torch

from warmstart.data.sampling import epoch_order
from warmstart.objectives.lm import IGNORE_INDEX

log = logging.getLogger(__name__)

Block = dict[str, list[int]]


def _block_fields(ids: list[int], mask: list[int], doc: list[int]) -> Block:
    """input_ids/labels/position_ids/document_ids for one block from per-token doc counters."""
    positions: list[int] = []
    local: list[int] = []
    seg = -1
    pos = 0
    for i, d in enumerate(doc):
        if i == 0 or d != doc[i - 1]:
            seg += 1
            pos = 0
        positions.append(pos)
        local.append(seg)
        pos += 1
    labels = [t if m else IGNORE_INDEX for t, m in zip(ids, mask, strict=True)]
    return {"input_ids": ids, "labels": labels, "position_ids": positions, "document_ids": local}


class BlockBuffer:
    """Accumulates documents (each followed by EOS) and cuts fixed-length blocks; resumable.

    ``add(ids, loss_mask)`` appends a document; a 0 in ``loss_mask`` makes that token's label ``-100``
    (the EOS is always a target). ``pop_blocks()`` returns every complete block. A document may straddle
    two blocks; its positions restart at the block boundary.
    """

    def __init__(self, block_size: int, eos_id: int) -> None:
        if block_size < 1:
            raise ValueError("block_size must be positive")
        self.block_size = block_size
        self.eos_id = eos_id
        self.ids: list[int] = []
        self.mask: list[int] = []
        self.doc: list[int] = []
        self.docs_added = 0

    def add(self, ids: Sequence[int], loss_mask: Sequence[int] | None = None) -> None:
        ids = list(ids)
        mask = [1] * len(ids) if loss_mask is None else [int(bool(m)) for m in loss_mask]
        if len(mask) != len(ids):
            raise ValueError("loss_mask must have one entry per token")
        self.ids += ids + [self.eos_id]
        self.mask += mask + [1]
        self.doc += [self.docs_added] * (len(ids) + 1)
        self.docs_added += 1

    def pop_blocks(self) -> list[Block]:
        out: list[Block] = []
        n = self.block_size
        while len(self.ids) >= n:
            out.append(_block_fields(self.ids[:n], self.mask[:n], self.doc[:n]))
            self.ids, self.mask, self.doc = self.ids[n:], self.mask[n:], self.doc[n:]
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "ids": list(self.ids),
            "mask": list(self.mask),
            "doc": list(self.doc),
            "docs_added": self.docs_added,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ids, self.mask, self.doc = list(state["ids"]), list(state["mask"]), list(state["doc"])
        self.docs_added = int(state["docs_added"])


def collate_blocks(blocks: Sequence[Block]) -> dict[str, torch.Tensor]:
    """Stack blocks into (B, T) long tensors."""
    return {key: torch.tensor([b[key] for b in blocks], dtype=torch.long) for key in blocks[0]}


def pack_sequences(
    docs: Sequence[Sequence[int]],
    block_size: int,
    *,
    eos_id: int,
    drop_last: bool = True,
    pad_id: int = 0,
) -> dict[str, torch.Tensor]:
    """Concatenate documents with EOS after each and cut into (N, block_size) blocks.

    Returns ``input_ids``, ``labels`` (= input ids; :func:`~warmstart.objectives.clm_loss` shifts),
    ``position_ids`` and ``document_ids``. With ``drop_last=False`` the tail is padded with ``pad_id``
    (labels ``-100``, document id ``-1``).
    """
    buffer = BlockBuffer(block_size, eos_id)
    blocks: list[Block] = []
    for d in docs:
        buffer.add(d)
        blocks += buffer.pop_blocks()
    if not drop_last and buffer.ids:
        tail = _block_fields(buffer.ids, buffer.mask, buffer.doc)
        blocks.append(_pad_block(tail, block_size, pad_id))
    if not blocks:
        raise ValueError(f"the documents hold fewer than {block_size} tokens: no complete block")
    return collate_blocks(blocks)


def _pad_block(block: Block, block_size: int, pad_id: int) -> Block:
    k = block_size - len(block["input_ids"])
    return {
        "input_ids": block["input_ids"] + [pad_id] * k,
        "labels": block["labels"] + [IGNORE_INDEX] * k,
        "position_ids": block["position_ids"] + [0] * k,
        "document_ids": block["document_ids"] + [-1] * k,
    }


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Bin-pack items by first-fit decreasing: returns bins as lists of item indices (longest first).

    Every item must fit (``length ≤ capacity``). FFD uses at most ``11/9 · OPT + 6/9`` bins. O(n · bins).
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        size = lengths[i]
        if size > capacity:
            raise ValueError(f"item {i} has length {size} > capacity {capacity}")
        for b, free in enumerate(room):
            if free >= size:
                bins[b].append(i)
                room[b] -= size
                break
        else:
            bins.append([i])
            room.append(capacity - size)
    return bins


def pack_documents_ffd(
    docs: Sequence[Sequence[int]],
    block_size: int,
    *,
    eos_id: int,
    pad_id: int = 0,
    too_long: Literal["truncate", "error"] = "truncate",
) -> dict[str, torch.Tensor]:
    """Pack whole documents (each + EOS) into padded blocks without ever splitting one (FFD bins).

    A document longer than ``block_size − 1`` is truncated (logged) or raises. Returns the fields of
    :func:`pack_sequences` plus ``attention_mask`` (1 on real tokens).
    """
    seqs: list[list[int]] = []
    truncated = 0
    for d in docs:
        d = list(d)
        if len(d) + 1 > block_size:
            if too_long == "error":
                raise ValueError(
                    f"a document of {len(d)} tokens does not fit a block of {block_size} with EOS"
                )
            d = d[: block_size - 1]
            truncated += 1
        seqs.append(d + [eos_id])
    if truncated:
        log.info("pack_documents_ffd: truncated %d documents to %d tokens", truncated, block_size - 1)
    blocks: list[Block] = []
    for bin_ in first_fit_decreasing([len(s) for s in seqs], block_size):
        ids: list[int] = []
        doc: list[int] = []
        for k, i in enumerate(bin_):
            ids += seqs[i]
            doc += [k] * len(seqs[i])
        blocks.append(_pad_block(_block_fields(ids, [1] * len(ids), doc), block_size, pad_id))
    batch = collate_blocks(blocks)
    batch["attention_mask"] = (batch["document_ids"] >= 0).long()
    return batch


def document_attention_mask(document_ids: torch.Tensor) -> torch.Tensor:
    """Causal, block-diagonal mask (B, T, T): query i sees key j iff j ≤ i and both are in the same document.

    Padding (document id ``-1``) sees nothing and is seen by nothing; True means *may attend*.
    """
    same = document_ids[:, :, None] == document_ids[:, None, :]  # (B, T, T)
    t = document_ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=document_ids.device).tril()
    real = (document_ids >= 0)[:, :, None] & (document_ids >= 0)[:, None, :]
    return same & causal & real


DocTransform = Callable[[Any, int], tuple[Sequence[int], Sequence[int] | None]]


class PackedStream:
    """Endless, seeded, resumable stream of packed (B, block_size) batches over a list of documents.

    ``docs`` is a map-style sequence; each epoch visits it in a seeded permutation (sharded by rank).
    Each document is a token list, or anything ``transform(doc, tokens_seen)`` turns into
    ``(ids, loss_mask)``, where ``tokens_seen`` counts the tokens this stream has packed so far (so a
    transform can follow training progress, as :class:`~warmstart.data.MeCo` does). ``state_dict()`` /
    ``load_state_dict()`` restore the exact position, including a partly filled block.

    >>> stream = PackedStream(token_lists, block_size=128, batch_size=8, eos_id=tok.eos_token_id, seed=0)
    >>> batch = next(iter(stream))  # input_ids, labels, position_ids, document_ids: (8, 128)
    """

    def __init__(
        self,
        docs: Sequence[Any],
        *,
        block_size: int,
        batch_size: int,
        eos_id: int,
        seed: int = 0,
        shuffle: bool = True,
        transform: DocTransform | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if len(docs) < world_size:
            raise ValueError(f"{len(docs)} documents cannot be sharded over {world_size} ranks")
        self.docs = docs
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.transform = transform
        self.rank = rank
        self.world_size = world_size
        self.buffer = BlockBuffer(block_size, eos_id)
        self.ready: list[Block] = []
        self.epoch = 0
        self.position = 0
        self.tokens_seen = 0

    def _order(self, epoch: int) -> list[int]:
        return epoch_order(
            len(self.docs), self.seed, epoch, shuffle=self.shuffle, rank=self.rank, world_size=self.world_size
        ).tolist()

    def _next_doc(self) -> tuple[Sequence[int], Sequence[int] | None]:
        order = self._order(self.epoch)
        if self.position >= len(order):
            self.epoch += 1
            self.position = 0
            order = self._order(self.epoch)
        doc = self.docs[order[self.position]]
        self.position += 1
        if self.transform is None:
            return doc, None
        return self.transform(doc, self.tokens_seen)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        empty_docs = 0
        while True:
            while len(self.ready) < self.batch_size:
                ids, mask = self._next_doc()
                self.buffer.add(ids, mask)
                self.tokens_seen += len(ids) + 1
                empty_docs = empty_docs + 1 if not len(ids) else 0
                if empty_docs > len(self.docs):
                    raise ValueError("every document is empty")
                self.ready += self.buffer.pop_blocks()
            batch, self.ready = self.ready[: self.batch_size], self.ready[self.batch_size :]
            yield collate_blocks(batch)

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "tokens_seen": self.tokens_seen,
            "buffer": self.buffer.state_dict(),
            "ready": [dict(b) for b in self.ready],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.tokens_seen = int(state["tokens_seen"])
        self.buffer.load_state_dict(state["buffer"])
        self.ready = [{k: list(v) for k, v in b.items()} for b in state["ready"]]
