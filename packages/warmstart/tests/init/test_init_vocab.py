"""Property tests for vocabulary expansion (warmstart.init.vocab)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import (
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from warmstart.init import (
    CW2VConfig,
    convex_rows,
    cw2v_rows,
    expand_vocabulary,
    fvt_rows,
    init_new_rows,
    mean_rows,
    multivariate_rows,
    random_rows,
)


def in_hull_by_projection(
    points: torch.Tensor, hull: torch.Tensor, n_dirs: int = 256, tol: float = 1e-5
) -> bool:
    """Necessary condition for hull membership: along random directions no point exceeds the hull's extent."""
    g = torch.Generator().manual_seed(123)
    dirs = torch.randn(hull.shape[1], n_dirs, generator=g, dtype=hull.dtype)
    p, h = points @ dirs, hull @ dirs
    return bool((p <= h.max(0).values + tol).all() and (p >= h.min(0).values - tol).all())


def gpt2(vocab: int, tied: bool) -> GPT2LMHeadModel:
    cfg = GPT2Config(
        vocab_size=vocab, n_embd=16, n_layer=1, n_head=2, n_positions=64, tie_word_embeddings=tied
    )
    return GPT2LMHeadModel(cfg).eval()


def llama(vocab: int) -> LlamaForCausalLM:
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg).eval()


# ---------------------------------------------------------------- matrix level


@settings(max_examples=15, deadline=None)
@given(v=st.integers(2, 40), d=st.integers(1, 8), n=st.integers(1, 20), seed=st.integers(0, 2**16))
def test_mean_rows_equal_the_mean(v: int, d: int, n: int, seed: int) -> None:
    old = torch.randn(v, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    rows = mean_rows(old, n)
    assert rows.shape == (n, d)
    torch.testing.assert_close(rows, old.mean(0).expand(n, -1), rtol=0, atol=1e-12)


def test_multivariate_sample_covariance_matches_sigma() -> None:
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(6, 6, generator=g, dtype=torch.float64)
    old = torch.randn(400, 6, generator=g, dtype=torch.float64) @ mix + 3.0  # correlated, non-zero mean
    mu = old.mean(0)
    sigma = (old - mu).T @ (old - mu) / old.shape[0]
    rows = multivariate_rows(old, 200_000, generator=g)
    emp = torch.cov(rows.T, correction=0)
    assert (rows.mean(0) - mu).abs().max() < 0.05 * sigma.diagonal().sqrt().max()
    assert torch.linalg.matrix_norm(emp - sigma) / torch.linalg.matrix_norm(sigma) < 0.02
    # and it is not the mean init: the spread is real
    assert emp.diagonal().min() > 0.9 * sigma.diagonal().min()


def test_multivariate_handles_rank_deficient_sigma() -> None:
    old = torch.randn(3, 8, generator=torch.Generator().manual_seed(1))  # V_old < D: Sigma singular
    rows = multivariate_rows(old, 5, generator=torch.Generator().manual_seed(2))
    assert torch.isfinite(rows).all()


def test_random_rows_have_the_requested_std() -> None:
    rows = random_rows(torch.zeros(4, 64), 5000, std=0.02, generator=torch.Generator().manual_seed(0))
    assert abs(float(rows.std()) - 0.02) < 0.001 and abs(float(rows.mean())) < 0.001


def test_fvt_rows_copy_and_average() -> None:
    old = torch.randn(10, 4, dtype=torch.bfloat16)
    rows = fvt_rows(old, [[3], [1, 2, 5], []])
    assert torch.equal(rows[0], old[3])  # an existing token: bit-identical copy
    torch.testing.assert_close(rows[1], old[[1, 2, 5]].float().mean(0).bfloat16())
    torch.testing.assert_close(rows[2], old.float().mean(0).bfloat16())  # no pieces: the mean


@settings(max_examples=15, deadline=None)
@given(v=st.integers(2, 50), k=st.integers(1, 60), seed=st.integers(0, 2**16))
def test_convex_rows_lie_in_the_convex_hull(v: int, k: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    old = torch.randn(v, 3, generator=g, dtype=torch.float64)
    rows, index, weight = convex_rows(old, 30, k=k, generator=g, return_weights=True)
    assert (weight >= 0).all()
    torch.testing.assert_close(weight.sum(1), torch.ones(30, dtype=weight.dtype))
    assert all(len(set(r.tolist())) == r.numel() for r in index)  # distinct old rows per combination
    torch.testing.assert_close(rows, torch.einsum("nk,nkd->nd", weight.double(), old[index]))
    assert in_hull_by_projection(rows, old)


def test_hull_check_detects_a_point_outside() -> None:
    old = torch.randn(20, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    outside = old.max(0).values.unsqueeze(0) + 1.0
    assert not in_hull_by_projection(outside, old)


def test_cw2v_rows_are_convex_and_training_lowers_the_loss() -> None:
    g = torch.Generator().manual_seed(0)
    n_old, n_new, d = 30, 6, 8
    old = torch.randn(n_old, d, generator=g, dtype=torch.float64)
    head = torch.randn(n_old, d, generator=g, dtype=torch.float64)
    # a corpus where new token i always sits next to old token i: a learnable signal
    seqs = [torch.tensor([i, n_old + i, i, (i + 7) % n_old]) for i in range(n_new) for _ in range(20)]
    cfg = CW2VConfig(rank=8, window=1, negatives=3, lr=0.05, epochs=30, batch_size=64)
    res = cw2v_rows(old, n_new, seqs, old_head=head, config=cfg, generator=g)
    for w, rows, base in ((res.weights(), res.rows, old), (res.weights(head=True), res.head_rows, head)):
        assert w.shape == (n_new, n_old) and (w >= 0).all()
        torch.testing.assert_close(w.sum(1), torch.ones(n_new, dtype=w.dtype))
        torch.testing.assert_close(rows, w @ base)
        assert in_hull_by_projection(rows, base)
    first, last = sum(res.losses[:5]) / 5, sum(res.losses[-5:]) / 5
    assert last < 0.9 * first


def test_init_new_rows_dispatch_and_errors() -> None:
    old = torch.randn(12, 4)
    for method in ("random", "mean", "multivariate", "convex"):
        assert init_new_rows(old, 3, method, generator=torch.Generator().manual_seed(0)).shape == (3, 4)
    with pytest.raises(ValueError):
        init_new_rows(old, 3, "fvt")
    with pytest.raises(ValueError):
        init_new_rows(old, 3, "nope")  # type: ignore[arg-type]


# ---------------------------------------------------------------- model level


@pytest.mark.parametrize("method", ["random", "mean", "multivariate", "fvt", "convex", "cw2v"])
def test_untied_gpt2_old_rows_bit_identical_and_head_survives_post_init(
    method, old_tokenizer, extended_tokenizer, target_texts
) -> None:
    model = gpt2(len(old_tokenizer), tied=False)
    emb0 = model.get_input_embeddings().weight.detach().clone()
    head0 = model.get_output_embeddings().weight.detach().clone()
    cfg = CW2VConfig(rank=8, epochs=1, max_steps=5, lr=0.05)
    rep = expand_vocabulary(
        model, old_tokenizer, extended_tokenizer, method, seed=0, texts=target_texts[:40], cw2v=cfg
    )
    n_old, n_new = len(old_tokenizer), len(extended_tokenizer)
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert emb.shape[0] == head.shape[0] == n_new == model.config.vocab_size
    assert torch.equal(emb[:n_old], emb0) and torch.equal(head[:n_old], head0)
    assert rep.new_token_ids == list(range(n_old, n_new)) and not rep.tied
    new_head = head[n_old:].detach().clone()
    new_emb = emb[n_old:].detach().clone()
    assert not torch.equal(new_emb, new_head)  # the head got its own rows, from its own statistics
    model.post_init()  # transformers #35141: must not re-initialise the expanded head
    assert torch.equal(model.get_output_embeddings().weight[n_old:], new_head)
    assert torch.equal(model.get_input_embeddings().weight[n_old:], new_emb)
    ids = torch.tensor([extended_tokenizer("qaxo kalo wife")["input_ids"]])
    assert model(ids).logits.shape == (1, ids.shape[1], n_new)


def test_untied_llama_mean_head_rows_and_save_roundtrip(tmp_path, old_tokenizer, extended_tokenizer) -> None:
    model = llama(len(old_tokenizer))
    head0 = model.lm_head.weight.detach().clone()
    expand_vocabulary(model, old_tokenizer, extended_tokenizer, "mean", seed=0)
    n_old = len(old_tokenizer)
    torch.testing.assert_close(
        model.lm_head.weight[n_old:], head0.mean(0).expand(len(extended_tokenizer) - n_old, -1)
    )
    model.post_init()
    model.save_pretrained(tmp_path)
    again = LlamaForCausalLM.from_pretrained(tmp_path)
    assert torch.equal(again.lm_head.weight, model.lm_head.weight)
    assert torch.equal(again.get_input_embeddings().weight, model.get_input_embeddings().weight)


def test_tied_gpt2_stays_tied_and_old_logits_unchanged(old_tokenizer, extended_tokenizer) -> None:
    model = gpt2(len(old_tokenizer), tied=True)
    ids = torch.tensor([old_tokenizer("kalo mine suta")["input_ids"]])
    before = model(ids).logits
    rep = expand_vocabulary(model, old_tokenizer, extended_tokenizer, "multivariate", seed=0)
    assert rep.tied and model.lm_head.weight is model.transformer.wte.weight
    after = model(ids).logits
    torch.testing.assert_close(after[..., : len(old_tokenizer)], before, rtol=0, atol=1e-5)
    model.post_init()
    assert model.lm_head.weight is model.transformer.wte.weight


def test_fvt_with_a_retrained_tokenizer(old_tokenizer, new_tokenizer) -> None:
    model = gpt2(len(old_tokenizer), tied=False)
    emb0 = model.get_input_embeddings().weight.detach().clone()
    head0 = model.get_output_embeddings().weight.detach().clone()
    rep = expand_vocabulary(model, old_tokenizer, new_tokenizer, "fvt")
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    old_vocab = old_tokenizer.get_vocab()
    assert rep.copied  # some shared tokens moved to other ids
    for tok, nid in new_tokenizer.get_vocab().items():
        if tok in old_vocab:  # an existing token: exactly its old row, wherever its new id is
            assert torch.equal(emb[nid], emb0[old_vocab[tok]]) and torch.equal(
                head[nid], head0[old_vocab[tok]]
            )
    checked = 0
    for tok, nid in new_tokenizer.get_vocab().items():
        if tok in old_vocab:
            continue
        text = new_tokenizer.convert_tokens_to_string([tok]).strip()
        pieces = old_tokenizer(text, add_special_tokens=False)["input_ids"]
        assert len(pieces) >= 1
        torch.testing.assert_close(emb[nid], emb0[pieces].mean(0))
        torch.testing.assert_close(head[nid], head0[pieces].mean(0))
        checked += 1
    assert checked == len(rep.new_token_ids) > 10 and rep.fvt_fallbacks == 0


def test_bert_tied_with_bias(old_tokenizer, extended_tokenizer) -> None:
    cfg = BertConfig(
        vocab_size=len(old_tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    model = BertForMaskedLM(cfg).eval()
    with torch.no_grad():
        model.cls.predictions.bias.normal_()
    bias0 = model.cls.predictions.bias.detach().clone()
    expand_vocabulary(model, old_tokenizer, extended_tokenizer, "convex", seed=3)
    n_old, n_new = len(old_tokenizer), len(extended_tokenizer)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert model.cls.predictions.decoder.bias is model.cls.predictions.bias
    assert torch.equal(model.cls.predictions.bias[:n_old], bias0)
    torch.testing.assert_close(model.cls.predictions.bias[n_old:], bias0.mean().expand(n_new - n_old))
    assert model(torch.tensor([[1, n_new - 1]])).logits.shape == (1, 2, n_new)


def test_cw2v_model_rows_in_hull(old_tokenizer, extended_tokenizer, target_texts) -> None:
    model = gpt2(len(old_tokenizer), tied=False)
    emb0 = model.get_input_embeddings().weight.detach().clone()
    head0 = model.get_output_embeddings().weight.detach().clone()
    cfg = CW2VConfig(rank=16, epochs=2, lr=0.05, batch_size=256)
    rep = expand_vocabulary(
        model, old_tokenizer, extended_tokenizer, "cw2v", seed=0, texts=target_texts, cw2v=cfg
    )
    n_old = len(old_tokenizer)
    assert len(rep.cw2v_losses) > 5 and rep.cw2v_losses[-1] < rep.cw2v_losses[0]
    assert in_hull_by_projection(model.get_input_embeddings().weight[n_old:].detach(), emb0, tol=1e-4)
    assert in_hull_by_projection(model.get_output_embeddings().weight[n_old:].detach(), head0, tol=1e-4)


@pytest.mark.parametrize("untied", [False, True])
def test_sparse_cw2v_stays_in_the_hull_learns_and_stops_early(untied: bool) -> None:
    g = torch.Generator().manual_seed(0)
    n_old, n_new, d = 200, 24, 16
    old = torch.randn(n_old, d, generator=g, dtype=torch.float64)
    head = torch.randn(n_old, d, generator=g, dtype=torch.float64) if untied else None
    # new token i always sits between old tokens i and i + 50: a learnable signal
    seqs = [torch.tensor([i, n_old + i, i + 50, (i * 7) % n_old]) for i in range(n_new) for _ in range(30)]
    calls: list[tuple[int, int]] = []
    cfg = CW2VConfig(support=32, window=1, negatives=3, lr=0.05, epochs=200, batch_size=64, eval_every=5)
    res = cw2v_rows(
        old,
        n_new,
        seqs,
        old_head=head,
        config=cfg,
        generator=g,
        progress=lambda s, t, _: calls.append((s, t)),
    )
    assert res.sparse is not None and res.sparse[0].shape == (n_new, 32)
    checks = [(res.weights(), res.rows, old)]
    if head is not None:
        checks.append((res.weights(head=True), res.head_rows, head))
    for w, rows, base in checks:
        assert w.shape == (n_new, n_old) and (w >= 0).all() and int((w > 0).sum(1).max()) <= 32
        torch.testing.assert_close(w.sum(1), torch.ones(n_new, dtype=w.dtype))
        torch.testing.assert_close(rows, w @ base)  # the rows are exactly the convex combinations
    assert res.heldout_losses[-1][1] < 0.9 * res.heldout_losses[0][1]  # held-out pairs: it learned
    assert res.stopped == "early_stop" and len(res.losses) < calls[0][1]  # stopped before 200 epochs
    assert [s for s, _ in calls] == list(range(1, len(res.losses) + 1))


def test_cw2v_time_budget() -> None:
    g = torch.Generator().manual_seed(0)
    old = torch.randn(100, 8, generator=g)
    seqs = [torch.randint(0, 120, (64,), generator=g) for _ in range(50)]
    res = cw2v_rows(old, 20, seqs, config=CW2VConfig(support=16, max_seconds=0.0, epochs=5), generator=g)
    assert res.stopped == "max_seconds" and res.losses == [] and res.rows.shape == (20, 8)
