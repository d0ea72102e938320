"""Continual fine-tuning of a code LM over a stream of task families: naive, experience replay, online EWC.

Seed paper: "On the Usage of Continual Learning for Out-of-Distribution Generalization in Pre-trained
Language Models of Code" (Weyssow et al., arXiv 2305.04106) — a pretrained code LM fine-tuned on a stream
of new-API task families forgets the earlier ones; replay and regularisation (EWC and kin) mitigate it.
Methods: EWC (Kirkpatrick et al., "Overcoming catastrophic forgetting in neural networks", arXiv
1612.00796) with a diagonal Fisher and the online accumulation of Progress & Compress (Schwarz et al.,
arXiv 1805.06370: F* ← γ·F* + F_t, anchor θ* = θ after the latest task, penalty λ/2 · Σ F*(θ − θ*)²);
experience replay through the core's :func:`warmstart.data.replay_mixture` (a fixed share of each
micro-batch's rows drawn from a small memory of earlier families). Metrics: the matrix R[i][j] (score on
family j after training stage i), average accuracy and backward / forward transfer (Lopez-Paz & Ranzato,
"Gradient Episodic Memory", arXiv 1706.08840) and average forgetting (Chaudhry et al., "Riemannian Walk",
arXiv 1801.10112), computed for greedy pass@1 in the sandbox, exact match and completion loss.

Written by hand (no installed library fits our engine and tasks): the Fisher (empirical: per-sample
squared gradients of the reference completion's summed log-likelihood — not the "true" Fisher with
labels sampled from the model), the penalty, the metrics. Left out: the paper's API-stream datasets and
models (we use the generator's string / list / arith families on a tiny GPT-2), A-GEM, EWC++ and
per-task separate Fisher anchors (plain multi-anchor EWC).
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from warmstart.data import replay_mixture
from warmstart.engine import Engine, quick_config
from warmstart.eval import BenchReport, forgetting, write_bench_report
from warmstart_code.data import CodeTask, generate_tasks
from warmstart_code.models import ModelConfig, encode_pairs, sample_programs
from warmstart_code.sandbox import Sandbox, SandboxConfig
from warmstart_code.synthesis import execute, pretrain_code_lm, rows

log = logging.getLogger(__name__)
STRATEGIES = ("naive", "replay", "ewc", "scratch")
"""``scratch``: naive sequential fine-tuning of the same architecture from random weights (the bench's peer)."""


# --- metrics --------------------------------------------------------------------------------------------
def continual_metrics(
    R: Any, initial: Sequence[float] | None = None, higher_is_better: bool = True
) -> dict[str, float]:
    """Average accuracy, average forgetting, BWT and FWT of a T×T matrix R[i][j] (after stage i, on task j).

    ``acc = mean_j R[T-1][j]``; ``bwt = mean_{j<T-1} (R[T-1][j] − R[j][j])`` (Lopez-Paz & Ranzato);
    ``forgetting = mean_{j<T-1} (max_{l<T-1} R[l][j] − R[T-1][j])`` (Chaudhry et al.); ``fwt = mean_{j≥1}
    (R[j-1][j] − initial[j])`` when the scores of the model before any stage are given. For a metric where
    lower is better (a loss) forgetting is ``R[T-1][j] − min_{l<T-1} R[l][j]``, so positive forgetting always
    means "got worse"; ``bwt``/``fwt`` stay raw differences (for a loss, negative is good).
    """
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] < 1:
        raise ValueError(f"R must be a square T×T matrix, got shape {R.shape}")
    T = R.shape[0]
    out = {"acc": float(R[-1].mean())}
    if T == 1:
        return out | {"bwt": 0.0, "forgetting": 0.0} | ({"fwt": 0.0} if initial is not None else {})
    out["bwt"] = float(np.mean([R[-1, j] - R[j, j] for j in range(T - 1)]))
    out["forgetting"] = forgetting(R, higher_is_better=higher_is_better)  # the core's (Chaudhry et al.)
    if initial is not None:
        b = np.asarray(initial, dtype=float)
        out["fwt"] = float(np.mean([R[j - 1, j] - b[j] for j in range(1, T)]))
    return out


def seen_average(R: Any) -> list[float]:
    """Average score over the families seen so far, after each stage: [mean_{j≤i} R[i][j] for i]."""
    R = np.asarray(R, dtype=float)
    return [float(R[i, : i + 1].mean()) for i in range(R.shape[0])]


# --- EWC ------------------------------------------------------------------------------------------------
def sequence_nll(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed negative log-likelihood of the labelled tokens of each row: −log p(y | x), shape (B,)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, T, V)
    labels = batch["labels"][:, 1:]  # (B, T-1)
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, V)
    mask = labels != -100
    tok = logp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1) * mask  # (B, T-1)
    return -tok.sum(-1)


def diagonal_fisher(model: nn.Module, samples: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Empirical diagonal Fisher: mean over samples of (∂ log p(y | x) / ∂θ)², one backward per sample.

    Per-sample (not per-batch) squared gradients, as the Fisher's definition needs; ``samples`` are rows
    of :func:`encode_pairs` (the reference completions serve as labels). Parameters without a gradient
    get zeros. The model's training mode and gradients are restored afterwards.
    """
    if not samples:
        raise ValueError("diagonal_fisher needs at least one sample")
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    was_training = model.training
    model.eval()  # no dropout: the Fisher of the deterministic model
    device = next(model.parameters()).device
    for row in samples:
        batch = {k: v.unsqueeze(0).to(device) for k, v in row.items()}  # (1, T)
        model.zero_grad(set_to_none=True)
        sequence_nll(model, batch).sum().backward()
        for n, p in params.items():
            if p.grad is not None:
                fisher[n] += p.grad.detach().float() ** 2
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {n: f / len(samples) for n, f in fisher.items()}


class OnlineEWC:
    """The quadratic EWC penalty λ/2 · Σ_i F*_i (θ_i − θ*_i)², with online accumulation of F* across tasks.

    ``consolidate(model, fisher)`` after each task: F* ← γ·F* + F_task and θ* ← θ (the current weights).
    Holds the model's ``Parameter`` objects, so it survives the engine moving the model to a device.
    """

    def __init__(self, model: nn.Module, lam: float, gamma: float = 1.0) -> None:
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.lam = lam
        self.gamma = gamma
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        self.tasks = 0

    def consolidate(self, fisher: dict[str, torch.Tensor]) -> None:
        for n, p in self.params.items():
            f = fisher[n].detach().to(p.device, torch.float32)
            self.fisher[n] = self.gamma * self.fisher[n] + f if n in self.fisher else f.clone()
            self.anchor[n] = p.detach().float().clone()
        self.tasks += 1

    def penalty(self) -> torch.Tensor:
        first = next(iter(self.params.values()))
        total = torch.zeros((), device=first.device)
        if not self.fisher:
            return total
        for n, p in self.params.items():
            f, a = self.fisher[n], self.anchor[n]
            if f.device != p.device:  # the engine moved the model after consolidation
                f = self.fisher[n] = f.to(p.device)
                a = self.anchor[n] = a.to(p.device)
            total = total + (f * (p.float() - a) ** 2).sum()
        return 0.5 * self.lam * total


class ContinualTask:
    """Engine task: completion cross-entropy (+ the EWC penalty when given)."""

    def __init__(self, model: nn.Module, ewc: OnlineEWC | None = None) -> None:
        self.model = model
        self.ewc = ewc

    def loss(self, batch: dict[str, torch.Tensor]):
        out = self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
        )
        metrics: dict[str, Any] = {
            "tokens": int((batch["labels"][:, 1:] != -100).sum()),
            "samples": len(batch["input_ids"]),
        }
        loss = out.loss
        if self.ewc is not None:
            pen = self.ewc.penalty()
            metrics["ewc"] = float(pen.detach())
            loss = loss + pen
        return loss, metrics


# --- replay ---------------------------------------------------------------------------------------------
def pad_collate(samples: Sequence[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad rows of different widths (from separate :func:`encode_pairs` calls) into one batch."""
    lengths = [int(s["attention_mask"].sum()) for s in samples]
    width = max(lengths)
    out = {
        "input_ids": torch.full((len(samples), width), pad_id, dtype=torch.long),  # (B, T)
        "attention_mask": torch.zeros((len(samples), width), dtype=torch.long),  # (B, T)
        "labels": torch.full((len(samples), width), -100, dtype=torch.long),  # (B, T)
    }
    for i, (s, n) in enumerate(zip(samples, lengths, strict=True)):
        for k in out:
            out[k][i, :n] = s[k][:n]
    return out


class _Shuffled:
    """Endless source for the mixture: each pass over ``items`` is a new seeded permutation."""

    def __init__(self, items: Sequence[Any], seed: int) -> None:
        self.items = list(items)
        self.seed = seed
        self.epoch = 0

    def __iter__(self) -> Iterator[Any]:
        order = list(range(len(self.items)))
        random.Random(self.seed * 7919 + self.epoch).shuffle(order)
        self.epoch += 1
        return (self.items[i] for i in order)


class ReplayBatches:
    """Micro-batches mixing new rows with a ``replay_ratio`` share of memory rows (core ``replay_mixture``).

    Each row of a batch is one draw of the mixture, so over n rows the memory supplies n·ratio of them up
    to a small constant (the mixture's smooth round-robin). ``counts`` records the draws per source. With
    ratio 0 or an empty memory every row is new (the naive and EWC strategies use the same class).
    """

    def __init__(
        self,
        new: Sequence[dict[str, torch.Tensor]],
        memory: Sequence[dict[str, torch.Tensor]],
        replay_ratio: float,
        batch_size: int,
        pad_id: int,
        seed: int = 0,
    ) -> None:
        if not new:
            raise ValueError("ReplayBatches needs new rows")
        ratio = replay_ratio if memory else 0.0
        self.mixture = replay_mixture(
            _Shuffled(new, seed),
            _Shuffled(memory or new, seed + 1),
            replay_ratio=ratio,
            seed=seed,
            with_source=True,
        )
        self.batch_size = batch_size
        self.pad_id = pad_id
        self.counts = {"new": 0, "replay": 0}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        draws = iter(self.mixture)
        while True:
            batch = []
            for _ in range(self.batch_size):
                source, row = next(draws)
                self.counts[source] += 1
                batch.append(row)
            yield pad_collate(batch, self.pad_id)


# --- the continual run ----------------------------------------------------------------------------------
@dataclass
class ContinualConfig:
    """A continual-learning run: the stream, the budget per stage and the strategies' settings."""

    families: list[str] = field(default_factory=lambda: ["string", "list", "arith"])
    """The stream of task families, in training order (the generator's families)."""
    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES))
    """Strategies to compare: naive | replay | ewc | scratch (naive from random weights, same architecture)."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Seeds (each: own pretraining, data, training order of batches)."""
    pretrain_tasks: int = 600
    """Generated programs (all families) in the pretraining corpus of the tiny LM."""
    pretrain_steps: int = 150
    """Pretraining steps of the tiny LM (0 with --model: start from that model)."""
    pretrain_max_difficulty: int = 3
    """Pretrain only on templates up to this difficulty (< 3: each stage also teaches new templates)."""
    train_tasks: int = 64
    """Training tasks per family."""
    test_tasks: int = 32
    """Held-out tasks per family (new constants and names)."""
    steps: int = 60
    """Optimizer steps per stage (the same for every strategy)."""
    lr: float = 1e-3
    """Learning rate."""
    batch_size: int = 16
    """Rows per micro-batch (replay rows included)."""
    replay_ratio: float = 0.25
    """Replay: share of each batch's rows drawn from the memory of earlier families."""
    memory_per_family: int = 16
    """Replay: training rows kept per finished family."""
    ewc_lambda: float = 100.0
    """EWC: penalty strength λ (Fisher of the summed sequence log-likelihood)."""
    ewc_gamma: float = 1.0
    """Online EWC: decay γ of the accumulated Fisher (1: plain sum over tasks)."""
    fisher_samples: int = 32
    """EWC: training rows per family for the Fisher."""
    max_new_tokens: int = 40
    """Greedy completion length for pass@1 / exact match."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The tiny model; with ``name_or_path`` set (or ``--model``) that model is the start of every seed."""


@dataclass
class FamilyData:
    name: str
    train: list[CodeTask]
    test: list[CodeTask]
    train_rows: list[dict[str, torch.Tensor]]


def family_data(cfg: ContinualConfig, tokenizer, seed: int) -> list[FamilyData]:
    out = []
    for i, fam in enumerate(cfg.families):
        train = generate_tasks(
            cfg.train_tasks, seed=1000 * seed + 10 + i, families=[fam], start_index=100_000 + 1000 * i
        )
        test = generate_tasks(
            cfg.test_tasks, seed=1000 * seed + 50 + i, families=[fam], start_index=200_000 + 1000 * i
        )
        enc = encode_pairs(
            tokenizer, [t.prompt for t in train], [t.canonical_solution for t in train], cfg.model.max_len
        )
        out.append(FamilyData(fam, train, test, rows(enc)))
    return out


@torch.no_grad()
def completion_loss(model: nn.Module, tokenizer, tasks: Sequence[CodeTask], max_len: int = 128) -> float:
    """Mean per-token NLL of the reference completions given the prompts (teacher forcing)."""
    model.eval()
    device = next(model.parameters()).device
    enc = encode_pairs(tokenizer, [t.prompt for t in tasks], [t.canonical_solution for t in tasks], max_len)
    enc = {k: v.to(device) for k, v in enc.items()}
    nll = sequence_nll(model, enc)  # (B,)
    return float(nll.sum() / (enc["labels"][:, 1:] != -100).sum())


def evaluate_family(
    model: nn.Module,
    tokenizer,
    tasks: Sequence[CodeTask],
    sandbox: Sandbox,
    max_new_tokens: int = 40,
    max_len: int = 128,
) -> dict[str, float]:
    """Greedy pass@1 (sandbox), exact match (normalised text) and completion loss on one family."""
    comps = sample_programs(
        model, tokenizer, [t.prompt for t in tasks], k=1, temperature=0.0, max_new_tokens=max_new_tokens
    )
    passed = execute(sandbox, tasks, comps)
    exact = [c[0].strip() == t.canonical_solution.strip() for c, t in zip(comps, tasks, strict=True)]
    return {
        "pass@1": float(np.mean([p[0] for p in passed])),
        "exact": float(np.mean(exact)),
        "loss": completion_loss(model, tokenizer, tasks, max_len),
    }


METRICS = {"pass@1": True, "exact": True, "loss": False}  # name -> higher is better


def run_strategy(
    model: nn.Module,
    tokenizer,
    data: Sequence[FamilyData],
    strategy: str,
    cfg: ContinualConfig,
    sandbox: Sandbox,
    seed: int,
) -> dict[str, Any]:
    """Train ``model`` stage by stage with one strategy; R[metric][i][j] after every stage on every family."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {STRATEGIES}")
    T = len(data)
    R = {m: np.zeros((T, T)) for m in METRICS}
    ewc = OnlineEWC(model, cfg.ewc_lambda, cfg.ewc_gamma) if strategy == "ewc" else None
    memory: list[dict[str, torch.Tensor]] = []
    rng = random.Random(seed)
    start = time.perf_counter()
    replayed = []
    for i, fam in enumerate(data):
        ratio = cfg.replay_ratio if strategy == "replay" else 0.0
        batches = ReplayBatches(
            fam.train_rows, memory, ratio, cfg.batch_size, tokenizer.pad_token_id, seed=1000 * seed + i
        )
        engine = quick_config(cfg.steps, cfg.batch_size, cfg.lr, 1000 * seed + i, warmup=0)
        Engine(engine, None).fit(ContinualTask(model, ewc), batches)
        replayed.append(batches.counts["replay"] / max(1, sum(batches.counts.values())))
        if ewc is not None:
            pick = rng.sample(fam.train_rows, min(cfg.fisher_samples, len(fam.train_rows)))
            ewc.consolidate(diagonal_fisher(model, pick))
        if strategy == "replay":
            memory += rng.sample(fam.train_rows, min(cfg.memory_per_family, len(fam.train_rows)))
        for j, other in enumerate(data):
            scores = evaluate_family(
                model, tokenizer, other.test, sandbox, cfg.max_new_tokens, cfg.model.max_len
            )
            for m in METRICS:
                R[m][i, j] = scores[m]
        log.info("%s stage %d (%s): pass@1 row %s", strategy, i, fam.name, np.round(R["pass@1"][i], 3))
    return {"R": R, "seconds": time.perf_counter() - start, "replayed_share": replayed}


def continual_seed(
    cfg: ContinualConfig, seed: int, sandbox: Sandbox, base: tuple[Any, Any] | None = None
) -> dict[str, Any]:
    """One seed: pretrain (or take ``base`` = (model, tokenizer)), score it, then each strategy from it."""
    if base is None:
        pre = generate_tasks(cfg.pretrain_tasks, seed=1000 * seed, max_difficulty=cfg.pretrain_max_difficulty)
        model, tok, _ = pretrain_code_lm(
            pre,
            cfg.model,
            quick_config(cfg.pretrain_steps, 32, 3e-3, seed, warmup=min(20, cfg.pretrain_steps // 5)),
        )
    else:
        model, tok = base
    data = family_data(cfg, tok, seed)
    initial = {m: [] for m in METRICS}
    for fam in data:
        scores = evaluate_family(model, tok, fam.test, sandbox, cfg.max_new_tokens, cfg.model.max_len)
        for m in METRICS:
            initial[m].append(scores[m])
    out: dict[str, Any] = {"initial": initial, "strategies": {}}
    for strategy in cfg.strategies:
        torch.manual_seed(1000 * seed)
        start, start_scores = copy.deepcopy(model), initial
        if strategy == "scratch":  # the same architecture, random weights; its own starting scores for FWT
            start = type(model)(model.config)
            start_scores = {m: [] for m in METRICS}
            for fam in data:
                scores = evaluate_family(start, tok, fam.test, sandbox, cfg.max_new_tokens, cfg.model.max_len)
                for m in METRICS:
                    start_scores[m].append(scores[m])
        run = run_strategy(
            start, tok, data, "naive" if strategy == "scratch" else strategy, cfg, sandbox, seed
        )
        run["metrics"] = {
            m: continual_metrics(run["R"][m], start_scores[m], hib) for m, hib in METRICS.items()
        }
        run["seen_average"] = {m: seen_average(run["R"][m]) for m in METRICS}
        out["strategies"][strategy] = run
    return out


def _matrix_md(
    R: np.ndarray, std: np.ndarray, families: Sequence[str], initial: Sequence[float]
) -> list[str]:
    lines = ["| after stage | " + " | ".join(families) + " |", "|---|" + "---|" * len(families)]
    lines.append("| (pretrained) | " + " | ".join(f"{v:.3f}" for v in initial) + " |")
    for i, fam in enumerate(families):
        cells = [f"{R[i, j]:.3f} ± {std[i, j]:.3f}" for j in range(len(families))]
        lines.append(f"| {i + 1}: {fam} | " + " | ".join(cells) + " |")
    return lines


def write_matrix_plot(path: Path, matrices: dict[str, Any], metric: str = "pass@1") -> Path:
    """Heatmaps of the mean R[i][j] per strategy (rows: after stage i; columns: family j), one PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fams, strategies = matrices["families"], list(matrices["strategies"])
    fig = Figure(figsize=(3.6 * len(strategies), 3.4), dpi=110)
    FigureCanvasAgg(fig)
    values = [np.asarray(matrices["strategies"][st][metric]["mean"]) for st in strategies]
    hi = max(float(v.max()) for v in values) or 1.0
    for k, (st, R) in enumerate(zip(strategies, values, strict=True)):
        ax = fig.add_subplot(1, len(strategies), k + 1)
        im = ax.imshow(R, vmin=0.0, vmax=hi, cmap="viridis")
        for i in range(R.shape[0]):
            for j in range(R.shape[1]):
                ax.text(
                    j, i, f"{R[i, j]:.2f}", ha="center", va="center", color="w" if R[i, j] < hi / 2 else "k"
                )
        ax.set_xticks(range(len(fams)), fams)
        ax.set_yticks(range(len(fams)), [f"after {f}" for f in fams] if k == 0 else [""] * len(fams))
        ax.set_xlabel("evaluated on")
        ax.set_title(st, fontsize=9)
    fig.colorbar(im, ax=fig.axes, shrink=0.8, label=f"{metric} (mean over seeds)")
    fig.suptitle(f"R[i][j]: {metric} on family j after stage i", fontsize=10)
    fig.savefig(path, format="png")
    return path


def run_continual_bench(
    cfg: ContinualConfig,
    out_dir: Path,
    sandbox_cfg: SandboxConfig | None = None,
    base: tuple[Any, Any] | None = None,
) -> BenchReport:
    """All seeds × strategies; report.md / plot.png / results.json via the core writer, plus matrices.json."""
    import json

    if len(cfg.seeds) < 1 or len(cfg.families) < 2:
        raise ValueError("a continual run needs at least one seed and two families")
    per_seed: dict[int, dict[str, Any]] = {}
    with Sandbox(sandbox_cfg or SandboxConfig()) as sandbox:
        for seed in cfg.seeds:
            per_seed[seed] = continual_seed(cfg, seed, sandbox, base)
    strategies, fams = cfg.strategies, cfg.families

    def per(strategy: str, metric: str, key: str) -> dict[int, float]:
        return {s: per_seed[s]["strategies"][strategy]["metrics"][metric][key] for s in per_seed}

    results = {st: per(st, "pass@1", "acc") for st in strategies}
    extra = {
        "forgetting (pass@1)": {st: per(st, "pass@1", "forgetting") for st in strategies},
        "BWT (pass@1)": {st: per(st, "pass@1", "bwt") for st in strategies},
        "FWT (pass@1)": {st: per(st, "pass@1", "fwt") for st in strategies},
        "avg exact match": {st: per(st, "exact", "acc") for st in strategies},
        "avg loss": {st: per(st, "loss", "acc") for st in strategies},
        "forgetting (loss)": {st: per(st, "loss", "forgetting") for st in strategies},
        "BWT (loss)": {st: per(st, "loss", "bwt") for st in strategies},
        "seconds": {st: {s: per_seed[s]["strategies"][st]["seconds"] for s in per_seed} for st in strategies},
    }
    curves = {
        st: {
            s: {
                "steps": list(range(1, len(fams) + 1)),
                "values": per_seed[s]["strategies"][st]["seen_average"]["pass@1"],
            }
            for s in per_seed
        }
        for st in strategies
    }
    matrices: dict[str, Any] = {"families": fams, "seeds": list(per_seed), "initial": {}, "strategies": {}}
    md = []
    for m in METRICS:
        init = np.mean([per_seed[s]["initial"][m] for s in per_seed], axis=0)
        matrices["initial"][m] = init.tolist()
        for st in strategies:
            stack = np.stack([per_seed[s]["strategies"][st]["R"][m] for s in per_seed])  # (S, T, T)
            mean, std = stack.mean(0), (stack.std(0, ddof=1) if len(stack) > 1 else np.zeros_like(stack[0]))
            entry = matrices["strategies"].setdefault(st, {})
            entry[m] = {"mean": mean.tolist(), "std": std.tolist(), "per_seed": stack.tolist()}
            entry["replayed_share"] = [per_seed[s]["strategies"][st]["replayed_share"] for s in per_seed]
            if m in ("pass@1", "loss"):
                md += ["", f"R[i][j] — {m}, `{st}` (mean ± std over seeds):", ""]
                md += _matrix_md(mean, std, fams, init)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "matrices.json").write_text(json.dumps(matrices, indent=2))
    write_matrix_plot(Path(out_dir) / "matrix.png", matrices)
    desc = (
        f"Continual fine-tuning over the families {' → '.join(fams)} ({cfg.train_tasks} training tasks each, "
        f"{cfg.steps} steps per stage, batch {cfg.batch_size}, lr {cfg.lr}) from a tiny GPT-2 "
        f"({cfg.model.n_layer}x{cfg.model.n_embd}) pretrained {cfg.pretrain_steps} steps on {cfg.pretrain_tasks} "
        f"generated programs of difficulty ≤ {cfg.pretrain_max_difficulty}. Strategies on the same steps: naive "
        f"sequential fine-tuning; replay ({cfg.replay_ratio:.0%} of each batch from a memory of "
        f"{cfg.memory_per_family} rows per finished family, core replay_mixture); online EWC (λ = "
        f"{cfg.ewc_lambda:g}, γ = {cfg.ewc_gamma:g}, empirical diagonal Fisher from {cfg.fisher_samples} rows). "
        f"Headline: average greedy pass@1 (sandbox) over all {len(fams)} families after the last stage, on "
        f"{cfg.test_tasks} held-out tasks per family. Forgetting (Chaudhry et al.) and BWT/FWT (Lopez-Paz & "
        f"Ranzato) below; for the loss, positive forgetting = loss went up. Curves: average pass@1 over the "
        f"families seen so far after each stage. Full matrices (also exact match, per seed): matrices.json; "
        f"heatmaps: matrix.png." + "\n" + "\n".join(md)
    )
    return write_bench_report(
        out_dir,
        "code: continual fine-tuning over task families (naive vs replay vs EWC)",
        results,
        metric="final avg pass@1",
        higher_is_better=True,
        baseline="naive" if "naive" in results else None,
        curves=curves,
        curve_metric="avg pass@1 over seen families (x: stage)",
        extra_metrics=extra,
        description=desc,
        config=asdict(cfg),
    )
