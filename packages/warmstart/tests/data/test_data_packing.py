"""Packing: blocks are the EOS-joined stream, positions restart per document, FFD never splits, resume is exact."""

from __future__ import annotations

import io
import itertools

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from warmstart.data import (
    PackedStream,
    document_attention_mask,
    first_fit_decreasing,
    pack_documents_ffd,
    pack_sequences,
)

EOS = 0
docs_strategy = st.lists(st.lists(st.integers(1, 50), min_size=0, max_size=30), min_size=1, max_size=20)


@settings(max_examples=40, deadline=None)
@given(docs=docs_strategy, block=st.integers(1, 16))
def test_pack_sequences_is_the_eos_joined_stream(docs: list[list[int]], block: int) -> None:
    stream = [t for d in docs for t in [*d, EOS]]
    if len(stream) < block:
        return
    out = pack_sequences(docs, block, eos_id=EOS)
    n = len(stream) // block
    assert out["input_ids"].shape == (n, block)
    assert out["input_ids"].flatten().tolist() == stream[: n * block]
    assert torch.equal(out["labels"], out["input_ids"])
    for ids, pos, doc in zip(out["input_ids"], out["position_ids"], out["document_ids"], strict=True):
        for t in range(block):
            new_doc = t == 0 or ids[t - 1] == EOS
            assert (pos[t] == 0) == new_doc
            assert doc[t] == (0 if t == 0 else doc[t - 1] + int(new_doc))


def test_pack_sequences_pads_tail_when_asked() -> None:
    out = pack_sequences([[1, 2, 3], [4]], 4, eos_id=EOS, drop_last=False, pad_id=9)
    assert out["input_ids"].tolist() == [[1, 2, 3, EOS], [4, EOS, 9, 9]]
    assert out["labels"][1].tolist() == [4, EOS, -100, -100]
    assert out["document_ids"][1].tolist() == [0, 0, -1, -1]


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 20), min_size=1, max_size=40), capacity=st.integers(20, 40))
def test_first_fit_decreasing_properties(lengths: list[int], capacity: int) -> None:
    bins = first_fit_decreasing(lengths, capacity)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))  # each item exactly once
    loads = [sum(lengths[i] for i in b) for b in bins]
    assert max(loads) <= capacity
    # first-fit invariant: no two bins could be merged (else a later item would have fitted earlier)
    for a, b in itertools.combinations(loads, 2):
        assert a + b > capacity
    assert len(bins) >= -(-sum(lengths) // capacity)


def test_ffd_packing_never_splits_documents() -> None:
    g = torch.Generator().manual_seed(0)
    docs = [list(range(1, 1 + int(n))) for n in torch.randint(1, 15, (25,), generator=g)]
    out = pack_documents_ffd(docs, 16, eos_id=EOS, pad_id=99)
    seen = []
    for ids, doc, attn in zip(out["input_ids"], out["document_ids"], out["attention_mask"], strict=True):
        for k in range(int(doc.max()) + 1):
            seg = ids[doc == k].tolist()
            assert seg[-1] == EOS
            seen.append(seg[:-1])
        assert (ids[attn == 0] == 99).all()
    assert sorted(map(tuple, seen)) == sorted(map(tuple, docs))


def test_document_attention_mask() -> None:
    doc = torch.tensor([[0, 0, 1, 1, -1]])
    m = document_attention_mask(doc)[0]
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [0, 0, 1, 0, 0],
            [0, 0, 1, 1, 0],
            [0, 0, 0, 0, 0],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(m, expected)


def _docs() -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    return [
        torch.randint(1, 100, (int(n),), generator=g).tolist()
        for n in torch.randint(1, 20, (30,), generator=g)
    ]


def test_packed_stream_resume_is_exact() -> None:
    docs = _docs()
    ref = PackedStream(docs, block_size=8, batch_size=3, eos_id=EOS, seed=5)
    it = iter(ref)
    for _ in range(7):
        next(it)
    buf = io.BytesIO()
    torch.save(ref.state_dict(), buf)  # the state must survive a weights_only checkpoint
    expected = [next(it) for _ in range(20)]  # crosses epoch boundaries (30 docs ≈ 360 tokens)
    resumed = PackedStream(docs, block_size=8, batch_size=3, eos_id=EOS, seed=5)
    buf.seek(0)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    got = [b for b, _ in zip(resumed, range(20), strict=False)]
    for a, b in zip(expected, got, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_packed_stream_follows_seeded_permutation() -> None:
    docs = _docs()
    stream = PackedStream(docs, block_size=4, batch_size=2, eos_id=EOS, seed=2)
    order = torch.randperm(len(docs), generator=torch.Generator().manual_seed(2 * 1_000_003)).tolist()
    expected = [t for i in order for t in [*docs[i], EOS]]
    got = torch.cat([b["input_ids"].flatten() for b, _ in zip(stream, range(10), strict=False)]).tolist()
    assert got == expected[: len(got)]
