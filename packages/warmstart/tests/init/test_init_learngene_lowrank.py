"""Learngene stage expansion (SWS) and SVD low rank (PELA)."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

from warmstart.init import (
    build_from_stages,
    expand_stages,
    find_layer_list,
    share_stages,
    stage_of_layer,
    svd_lowrank,
)

# ---------------------------------------------------------------- learngene


def test_share_vs_expand_stages() -> None:
    stages = [nn.Linear(4, 4), nn.Linear(4, 4)]
    shared = share_stages(stages, [2, 3])
    expanded = expand_stages(stages, [2, 3])
    assert len(shared) == len(expanded) == 5 and stage_of_layer([2, 3]) == [0, 0, 1, 1, 1]
    assert shared[0] is shared[1] is stages[0] and shared[4] is stages[1]
    assert len({id(m) for m in expanded}) == 5
    x = torch.randn(3, 4)
    y_shared, y_exp = x, x
    for a, b in zip(shared, expanded, strict=True):
        y_shared, y_exp = a(y_shared), b(y_exp)
    torch.testing.assert_close(y_exp, y_shared, rtol=0, atol=0)
    with pytest.raises(ValueError):
        stage_of_layer([2, 0])


@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_descendant_equals_weight_shared_auxiliary(kind: str) -> None:
    """A descendant built with depths d computes exactly what the weight-shared auxiliary model with the
    same repeats computes, and its layers are independent copies (trainable separately)."""
    torch.manual_seed(0)
    if kind == "gpt2":
        aux = GPT2LMHeadModel(
            GPT2Config(vocab_size=50, n_embd=16, n_layer=3, n_head=2, n_positions=16)
        ).eval()
    else:
        cfg = BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=3,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=16,
        )
        aux = BertModel(cfg).eval()
    depths = [1, 3, 2]
    child = build_from_stages(aux, depths)
    prefix, layers = find_layer_list(child)
    assert len(layers) == 6
    shared_model = copy.deepcopy(aux)
    parent_name, _, attr = prefix.rpartition(".")
    parent = shared_model.get_submodule(parent_name) if parent_name else shared_model
    setattr(parent, attr, share_stages(list(find_layer_list(shared_model)[1]), depths))
    shared_model.config.num_hidden_layers = sum(depths)  # GPT-2 maps n_layer to this name
    ids = torch.randint(0, 50, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = child(ids, use_cache=False) if kind == "gpt2" else child(ids)
        b = shared_model(ids, use_cache=False) if kind == "gpt2" else shared_model(ids)
        c = aux(ids, use_cache=False) if kind == "gpt2" else aux(ids)
    key = "logits" if kind == "gpt2" else "last_hidden_state"
    torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a[key], c[key], atol=1e-3)  # deeper model: a different function than aux
    w = [p.data_ptr() for n, p in child.named_parameters() if n.endswith("0.weight") or ".1." in n]
    assert len(set(w)) == len(w)


def test_build_from_stages_rejects_wrong_stage_count() -> None:
    aux = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=16))
    with pytest.raises(ValueError):
        build_from_stages(aux, [1, 2, 3])


# ---------------------------------------------------------------- SVD low rank


@settings(max_examples=20, deadline=None)
@given(out_f=st.integers(2, 24), in_f=st.integers(2, 24), data=st.data())
def test_svd_lowrank_reconstruction_and_eckart_young(out_f: int, in_f: int, data) -> None:
    rank = data.draw(st.integers(1, min(out_f, in_f)))
    torch.manual_seed(out_f * 100 + in_f)
    lin = nn.Linear(in_f, out_f).double()
    res = svd_lowrank(lin, rank)
    approx = res.module.up.weight @ res.module.down.weight
    torch.testing.assert_close(
        approx + res.residual, lin.weight, rtol=0, atol=1e-12
    )  # factors + residual = W
    s = torch.linalg.svdvals(lin.weight.detach())
    # Eckart-Young: the truncation error is exactly the tail singular values
    fro = torch.linalg.matrix_norm(res.residual)
    torch.testing.assert_close(fro, s[rank:].pow(2).sum().sqrt(), rtol=1e-9, atol=1e-12)
    if rank < min(out_f, in_f):
        torch.testing.assert_close(
            torch.linalg.matrix_norm(res.residual, ord=2), s[rank], rtol=1e-9, atol=1e-12
        )
    assert abs(res.tail_energy - float(fro)) < 1e-9
    assert torch.linalg.matrix_rank(approx) <= rank
    # and no other rank-r matrix does better: a random perturbation of the factors only adds error
    noisy = (res.module.up.weight + 1e-3 * torch.randn_like(res.module.up.weight)) @ res.module.down.weight
    assert torch.linalg.matrix_norm(lin.weight - noisy) >= fro - 1e-12


def test_lowrank_module_forward() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(16, 12)
    x = torch.randn(5, 16)
    exact = svd_lowrank(lin, 4, keep_residual=True).module
    torch.testing.assert_close(exact(x), lin(x), rtol=1e-5, atol=1e-5)
    approx = svd_lowrank(lin, 4).module
    torch.testing.assert_close(approx(x), x @ approx.merged_weight().T + lin.bias)
    assert approx.down.weight.shape == (4, 16) and approx.up.weight.shape == (12, 4)
    with pytest.raises(ValueError):
        svd_lowrank(lin, 13)
