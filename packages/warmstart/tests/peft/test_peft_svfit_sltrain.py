"""SVFit and SLTrain: initial function, merge == forward, trainable counts, fixed sparse support."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from warmstart.peft import (
    SLTrainLinear,
    SVFitLinear,
    apply_sltrain,
    apply_svfit,
    matching_linears,
    merge_adapters,
)


def linear(in_f: int = 12, out_f: int = 9, seed: int = 0, bias: bool = True) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(in_f, out_f, bias=bias)


def inputs(n: int = 5, d: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, d, generator=torch.Generator().manual_seed(seed))  # (B, T, D)


def train(module: nn.Module, steps: int = 3, lr: float = 0.1, weight_decay: float = 0.0) -> None:
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    for step in range(steps):
        x = inputs(seed=10 + step)
        loss = module(x).pow(2).mean() + module(x).sin().sum()
        loss.backward()
        opt.step()
        opt.zero_grad()


# --- SVFit ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rank", [1, 4, 9])
def test_svfit_init_train_merge(rank):
    lin = linear()
    layer = SVFitLinear(lin, rank)
    x = inputs()
    torch.testing.assert_close(layer(x), lin(x), rtol=0, atol=0)  # starts as the original layer
    assert [n for n, p in layer.named_parameters() if p.requires_grad] == ["sigma"]
    assert sum(p.numel() for p in layer.parameters() if p.requires_grad) == rank
    # sigma holds the top singular values of W, in order
    s = torch.linalg.svdvals(lin.weight.detach().double())
    torch.testing.assert_close(layer.sigma.detach().double(), s[:rank], rtol=1e-5, atol=1e-6)
    # and U_r diag(sigma) V_r^T + W_res reproduces W
    w_res = layer.weight - (layer.u * layer.sigma0) @ layer.vh
    torch.testing.assert_close((layer.u * layer.sigma.detach()) @ layer.vh + w_res, lin.weight.detach())

    train(layer)
    out = layer(x)
    assert not torch.allclose(out, lin(x))  # it learned something
    torch.testing.assert_close(layer.merge()(x), out, rtol=1e-5, atol=1e-5)
    # the learned update has rank <= r and lives in the span of U_r / V_r
    delta = layer.merge().weight.detach() - lin.weight.detach()
    assert torch.linalg.matrix_rank(delta.double(), atol=1e-5) <= rank
    torch.testing.assert_close(layer.u @ (layer.u.T @ delta), delta, rtol=1e-4, atol=1e-5)


def test_svfit_rank_bounds():
    with pytest.raises(ValueError, match="rank"):
        SVFitLinear(linear(), 10)


# --- SLTrain ----------------------------------------------------------------------------------------------


def test_sltrain_counts_and_support_fixed_after_training():
    gen = torch.Generator().manual_seed(0)
    layer = SLTrainLinear(40, 30, rank=3, density=0.05, generator=gen)
    nnz = round(0.05 * 40 * 30)
    assert layer.nnz == nnz and layer.indices.unique().numel() == nnz
    trainable = sum(p.numel() for p in layer.parameters() if p.requires_grad)
    assert trainable == 3 * (40 + 30) + nnz + 30  # B, A, sparse values, bias
    support = layer.indices.clone()
    off_support = torch.ones(30 * 40, dtype=torch.bool)
    off_support[support] = False

    x = torch.randn(4, 40, generator=gen)  # (B, D_in)
    values0 = layer.values.detach().clone()
    opt = torch.optim.AdamW(layer.parameters(), lr=0.05, weight_decay=0.1)
    for _ in range(3):
        layer(x).pow(2).sum().backward()
        assert layer.values.grad is not None and layer.values.grad.shape == (nnz,)
        opt.step()
        opt.zero_grad()
    assert torch.equal(layer.indices, support)
    assert not torch.equal(layer.values.detach(), values0)  # the values trained ...
    sparse = layer.sparse_weight().detach().flatten()
    assert torch.all(sparse[off_support] == 0)  # ... and S is still zero off the support
    # S + scale * B A is what the layer computes; merge gives the same function
    torch.testing.assert_close(layer.merge()(x), layer(x), rtol=1e-5, atol=1e-5)


def test_sltrain_support_is_seeded():
    a = SLTrainLinear(20, 10, 2, density=0.1, generator=torch.Generator().manual_seed(3))
    b = SLTrainLinear(20, 10, 2, density=0.1, generator=torch.Generator().manual_seed(3))
    c = SLTrainLinear(20, 10, 2, density=0.1, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.indices, b.indices) and not torch.equal(a.indices, c.indices)


def test_sltrain_from_linear_warm_start():
    """B A is the best rank-r approximation and S the residual on the support: the error left is off-support."""
    lin = linear(16, 12)
    layer = SLTrainLinear.from_linear(lin, rank=4, density=0.2, generator=torch.Generator().manual_seed(0))
    w = lin.weight.detach()
    err = (layer.dense_weight().detach() - w).flatten()
    torch.testing.assert_close(err[layer.indices], torch.zeros(layer.nnz), rtol=0, atol=1e-5)
    # the error is the SVD tail off the support, so it is no larger than the rank-4 truncation error
    s = torch.linalg.svdvals(w.double())
    assert err.norm().item() <= s[4:].square().sum().sqrt().item() + 1e-5
    x = inputs(d=16)
    torch.testing.assert_close(layer.merge()(x), layer(x), rtol=1e-5, atol=1e-5)
    # with the full support the warm start is exact
    full = SLTrainLinear.from_linear(lin, rank=2, density=1.0)
    torch.testing.assert_close(full(x), lin(x), rtol=1e-5, atol=1e-5)


# --- model-level application ------------------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj = nn.Linear(12, 12)
        self.v_proj = nn.Linear(12, 12)
        self.mlp = nn.Sequential(nn.Linear(12, 24), nn.GELU(), nn.Linear(24, 12))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.q_proj(x) * torch.sigmoid(self.v_proj(x)))


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def test_matching_linears_patterns():
    model = Tiny()
    assert matching_linears(model, ["q_proj"]) == ["layers.0.q_proj", "layers.1.q_proj"]
    assert matching_linears(model, ["layers.1.*"]) == [
        "layers.1.q_proj",
        "layers.1.v_proj",
        "layers.1.mlp.0",
        "layers.1.mlp.2",
    ]
    assert len(matching_linears(model, "all-linear")) == 9  # no get_output_embeddings: head included


def test_apply_svfit_to_model_then_merge():
    model = Tiny()
    x = inputs()
    reference = model(x).detach()
    names = apply_svfit(model, rank=2, target_modules=["q_proj", "v_proj"])
    assert len(names) == 4
    torch.testing.assert_close(model(x), reference, rtol=0, atol=0)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 4 * 2  # only sigmas
    train(model)
    out = model(x).detach()
    assert not torch.allclose(out, reference)
    assert merge_adapters(model) == names
    assert all(type(model.get_submodule(n)) is nn.Linear for n in names)
    torch.testing.assert_close(model(x), out, rtol=1e-5, atol=1e-5)


def test_apply_sltrain_to_model_then_merge():
    model = Tiny()
    x = inputs()
    names = apply_sltrain(model, rank=3, target_modules=["mlp.0", "mlp.2"], density=0.1, seed=0)
    assert len(names) == 4 and all(isinstance(model.get_submodule(n), SLTrainLinear) for n in names)
    supports = {n: model.get_submodule(n).indices.clone() for n in names}
    train(model, weight_decay=0.1)
    out = model(x).detach()
    for n in names:
        assert torch.equal(model.get_submodule(n).indices, supports[n])
    merge_adapters(model)
    torch.testing.assert_close(model(x), out, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="matches"):
        apply_sltrain(model, 2, ["nothing_here"])
