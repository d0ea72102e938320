"""Continual learning: EWC penalty and Fisher maths, forgetting / transfer formulas, replay ratio, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from warmstart_code.continual import (
    OnlineEWC,
    ReplayBatches,
    continual_metrics,
    diagonal_fisher,
    seen_average,
    sequence_nll,
)


def _tiny_gpt2(vocab: int = 24, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab, n_positions=16, n_embd=8, n_layer=1, n_head=2)
    return GPT2LMHeadModel(cfg)


def _row(ids: list[int], n_prompt: int, width: int = 10) -> dict[str, torch.Tensor]:
    x = torch.zeros(width, dtype=torch.long)
    x[: len(ids)] = torch.tensor(ids)
    mask = torch.zeros(width, dtype=torch.long)
    mask[: len(ids)] = 1
    labels = torch.full((width,), -100, dtype=torch.long)
    labels[n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
    return {"input_ids": x, "attention_mask": mask, "labels": labels}


def test_ewc_penalty_zero_at_anchor_quadratic_and_online_accumulation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    ewc = OnlineEWC(model, lam=3.0, gamma=0.5)
    assert float(ewc.penalty().detach()) == 0.0  # no task consolidated yet
    f1 = {n: torch.rand_like(p) for n, p in model.named_parameters()}
    ewc.consolidate(f1)
    assert float(ewc.penalty().detach()) == pytest.approx(0.0, abs=1e-12)  # at the anchor
    d = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    pens = []
    for t in (0.1, 0.2, 0.4):
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(anchor[n] + t * d[n])
        pens.append(float(ewc.penalty().detach()))
    expected = 0.5 * 3.0 * sum(float((f1[n] * (0.1 * d[n]) ** 2).sum()) for n in f1)
    assert pens[0] == pytest.approx(expected, rel=1e-5)
    assert pens[1] / pens[0] == pytest.approx(4.0, rel=1e-4)  # doubling the step quadruples the penalty
    assert pens[2] / pens[0] == pytest.approx(16.0, rel=1e-4)
    # second task: F* = γ F1 + F2, anchor moves to the current weights
    f2 = {n: torch.rand_like(p) for n, p in model.named_parameters()}
    ewc.consolidate(f2)
    for n, p in model.named_parameters():
        torch.testing.assert_close(ewc.fisher[n], 0.5 * f1[n] + f2[n])
        torch.testing.assert_close(ewc.anchor[n], p.detach())
    assert float(ewc.penalty().detach()) == pytest.approx(0.0, abs=1e-12)
    # gradient of the penalty pulls back towards the anchor: −∇ points along (θ* − θ)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.add_(0.3 * d[n])
    ewc.penalty().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, 3.0 * ewc.fisher[n] * 0.3 * d[n], rtol=1e-4, atol=1e-6)


def test_fisher_is_per_sample_squared_gradient_and_non_negative():
    model = _tiny_gpt2()
    samples = [_row([1, 2, 3, 4, 5], 2), _row([6, 7, 8, 9], 1), _row([3, 3, 3, 3, 3, 3], 3)]
    fisher = diagonal_fisher(model, samples)
    assert all(bool((f >= 0).all()) for f in fisher.values())
    assert sum(float(f.sum()) for f in fisher.values()) > 0
    assert model.training  # mode restored
    model.eval()  # no dropout, as inside diagonal_fisher
    # brute force: mean of per-sample squared gradients of the summed NLL (not the squared mean gradient)
    grads = []
    for s in samples:
        model.zero_grad()
        sequence_nll(model, {k: v.unsqueeze(0) for k, v in s.items()}).sum().backward()
        grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters()})
    for n, f in fisher.items():
        brute = sum(g[n] ** 2 for g in grads) / len(grads)
        torch.testing.assert_close(f, brute, rtol=1e-4, atol=1e-8)
    n = "transformer.h.0.mlp.c_fc.weight"
    squared_mean = (sum(g[n] for g in grads) / len(grads)) ** 2
    assert not torch.allclose(fisher[n], squared_mean)
    # sequence_nll sums exactly the labelled tokens' −log p
    s = samples[0]
    with torch.no_grad():
        logits = model(input_ids=s["input_ids"][None]).logits[0]
    logp = torch.log_softmax(logits, -1)
    manual = -sum(float(logp[t - 1, s["input_ids"][t]]) for t in range(2, 5))
    with torch.no_grad():
        nll = float(sequence_nll(model, {k: v[None] for k, v in s.items()}))
    assert nll == pytest.approx(manual, rel=1e-5)


def test_metrics_on_a_known_matrix():
    R = [[0.9, 0.05, 0.0], [0.95, 0.8, 0.1], [0.3, 0.6, 0.7]]
    m = continual_metrics(R, initial=[0.0, 0.0, 0.0])
    assert m["acc"] == pytest.approx((0.3 + 0.6 + 0.7) / 3)
    assert m["bwt"] == pytest.approx(((0.3 - 0.9) + (0.6 - 0.8)) / 2)
    # forgetting uses the best earlier score (0.95 after stage 2, not the diagonal 0.9)
    assert m["forgetting"] == pytest.approx(((0.95 - 0.3) + (0.8 - 0.6)) / 2)
    assert m["fwt"] == pytest.approx((0.05 + 0.1) / 2)
    assert seen_average(R) == pytest.approx([0.9, 0.875, (0.3 + 0.6 + 0.7) / 3])
    # a loss: lower is better, forgetting = increase over the best (lowest) earlier loss
    L = [[0.5, 3.0], [1.5, 0.4]]
    lm = continual_metrics(L, higher_is_better=False)
    assert lm["forgetting"] == pytest.approx(1.0) and lm["bwt"] == pytest.approx(1.0)
    # no forgetting when nothing degrades
    assert continual_metrics(np.ones((3, 3)))["forgetting"] == 0.0
    with pytest.raises(ValueError):
        continual_metrics([[1.0, 2.0]])


@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_replay_mixes_old_rows_in_the_configured_ratio(ratio):
    new = [_row([1, 1, 1], 1) for _ in range(13)]
    memory = [_row([2, 2, 2, 2], 1) for _ in range(5)]
    batches = ReplayBatches(new, memory, ratio, batch_size=8, pad_id=0, seed=3)
    it = iter(batches)
    n_batches = 20
    replay_rows = 0
    for _ in range(n_batches):
        b = next(it)
        assert b["input_ids"].shape == (8, 4)  # padded to the widest row
        replay_rows += int((b["input_ids"][:, 0] == 2).sum())
    total = 8 * n_batches
    assert batches.counts == {"new": total - replay_rows, "replay": replay_rows}
    assert abs(replay_rows - ratio * total) <= 1  # exact up to the round-robin's constant
    # padding keeps labels off the pad positions of the short rows
    short = b["input_ids"][:, 0] == 1
    assert bool((b["labels"][short, 3] == -100).all()) and bool((b["attention_mask"][short, 3] == 0).all())
    # naive / EWC: no memory -> only new rows
    only_new = next(iter(ReplayBatches(new, [], ratio, 8, 0)))
    assert bool((only_new["input_ids"][:, 0] == 1).all())


def test_continual_run_end_to_end_tiny(tmp_path):
    """Two families, the strategies and the scratch arm, two seeds on a tiny model: files, shapes, metrics."""
    from warmstart_code.continual import ContinualConfig, run_continual_bench
    from warmstart_code.data import code_corpus, generate_tasks
    from warmstart_code.models import ModelConfig, build_tiny_lm, train_tokenizer

    mc = ModelConfig(n_embd=16, n_layer=1, n_head=2, vocab_size=300, max_len=96)
    tok = train_tokenizer(code_corpus(generate_tasks(60, seed=0)), mc.vocab_size)
    lm = build_tiny_lm(tok, mc)
    cfg = ContinualConfig(
        families=["string", "arith"],
        seeds=[0, 1],
        train_tasks=8,
        test_tasks=3,
        steps=2,
        batch_size=4,
        memory_per_family=4,
        fisher_samples=3,
        max_new_tokens=8,
        model=mc,
    )
    report = run_continual_bench(cfg, tmp_path / "cl", base=(lm, tok))
    for name in ("report.md", "plot.png", "results.json", "matrices.json", "matrix.png"):
        assert (tmp_path / "cl" / name).is_file()
    mats = json.loads((tmp_path / "cl" / "matrices.json").read_text())
    summary = report.summary
    assert set(summary["methods"]) == {"naive", "replay", "ewc", "scratch"}
    for st in ("naive", "replay", "ewc", "scratch"):
        per_seed = np.asarray(mats["strategies"][st]["loss"]["per_seed"])
        assert per_seed.shape == (2, 2, 2) and np.isfinite(per_seed).all()
        for k in range(len(summary["methods"][st]["seeds"])):
            R = np.asarray(mats["strategies"][st]["pass@1"]["per_seed"][k])
            assert ((R >= 0) & (R <= 1)).all()
            assert summary["methods"][st]["values"][k] == pytest.approx(R[-1].mean())
            forgetting = summary["extra_metrics"]["forgetting (loss)"][st]["values"][k]
            assert forgetting == pytest.approx(per_seed[k][1, 0] - per_seed[k][0, 0])
    # the rows actually replayed: none in the first stage or without replay, ~25 % (default) after it
    assert mats["strategies"]["naive"]["replayed_share"] == [[0.0, 0.0], [0.0, 0.0]]
    for shares in mats["strategies"]["replay"]["replayed_share"]:
        assert shares[0] == 0.0 and abs(shares[1] - cfg.replay_ratio) <= 1 / (cfg.steps * cfg.batch_size)
    # same data and seeds: every strategy's first stage starts identically; replay differs only from stage 2
    first = {st: np.asarray(mats["strategies"][st]["loss"]["per_seed"])[:, 0] for st in ("naive", "replay")}
    np.testing.assert_allclose(first["naive"], first["replay"], rtol=1e-5)
    assert "R[i][j]" in (tmp_path / "cl" / "report.md").read_text()


def test_continual_cli_end_to_end_and_bad_options(tiny_continual, tmp_path, capsys):
    from warmstart_code.cli import app

    out = tmp_path / "cl"
    argv = [
        "continual",
        "--options.seeds",
        "[0]",
        "--options.families",
        "[list, arith]",
        "--options.strategies",
        "[naive, ewc]",
        "--options.pretrain_tasks",
        "40",
        "--options.pretrain_steps",
        "2",
        *tiny_continual,
        "--options.model.n_embd",
        "16",
        "--options.model.n_layer",
        "1",
        "--options.model.vocab_size",
        "300",
        "--out",
        str(out),
    ]
    assert app.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["methods"]) == ["naive", "ewc"]
    assert "forgetting (pass@1)" in capsys.readouterr().out
    for bad, needle in (
        (["--options.strategies", "[naive, magic]"], "magic"),
        (["--options.families", "[string]"], "families"),
    ):
        assert app.main(["continual", *bad, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err
