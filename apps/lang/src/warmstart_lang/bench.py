"""The lang bench: vocabulary-expansion inits vs random rows vs scratch, and a schedule comparison, in miniature.

Seed paper: *An Empirical Comparison of Vocabulary Expansion and Initialization Approaches for Language
Models* (Mundra et al., arXiv 2407.05841): for each init method, the same budget of continual pretraining on
the target language, several seeds; target perplexity over steps, final target perplexity, source
perplexity (forgetting). The schedule comparison (cosine / re-warm / infinite) follows *Continual
Pre-Training of LLMs: how to (re)warm* (arXiv 2308.04014) and *Beyond Cosine Decay* (arXiv 2503.02844).
Also the throughput comparison with the ``transformers`` Trainer. Everything runs on the procedural
language pair (``warmstart_lang.data``) with a tiny source model pretrained here by our engine and cached
under the bench directory. Left out: downstream tasks (the seeds' XNLI etc.).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from warmstart.engine import EngineConfig, cpu_threads, quick_config
from warmstart_lang.adapt import AdaptConfig, continual_pretrain, expand_model
from warmstart_lang.data import TextBlockStream, read_texts, write_language_pair
from warmstart_lang.models import ModelConfig, build_model, load_model
from warmstart_lang.tokenizer import extend_tokenizer, fertility, load_tokenizer, train_tokenizer

log = logging.getLogger(__name__)


@dataclass
class WorldConfig:
    """The generated language pair and the source model every bench run starts from."""

    seed: int = 0
    """Seed of the languages and of the source model."""
    n_source: int = 2000
    """Source-language training documents."""
    n_target: int = 600
    """Target-language training documents."""
    base_vocab: int = 400
    """Vocabulary of the source ("English-centric") tokenizer."""
    target_vocab: int = 500
    """Vocabulary of the target tokenizer whose missing tokens extend the base."""
    source_steps: int = 800
    """Pretraining steps of the source model on the source language (>= 20x the adaptation budget: a
    model a user would start from; cached by config hash, so reruns skip it)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Architecture of the source model."""
    block_size: int = 64
    """Tokens per block."""


@dataclass
class World:
    data: dict[str, Path]
    base_tokenizer: Path
    extended_tokenizer: Path
    source_model: Path
    fertility_base: float
    fertility_extended: float


QUIET_LOG_EVERY = 10_000
"""The benches' in-process fits log (to metrics.jsonl, when they have a run directory) only at the end."""


def _train_lm(
    model: Any, tokenizer: Any, files: list[Path], steps: int, seed: int, block: int, lr: float
) -> Any:
    """Pretrain ``model`` with its family's objective on ``files`` (the bench's sources)."""
    cfg = quick_config(steps, 16, lr, seed, log_every=QUIET_LOG_EVERY)
    adapt = AdaptConfig(block_size=block, eval_blocks=4, shuffle_buffer=64)
    texts = read_texts(files, limit=40)
    return continual_pretrain(model, tokenizer, files, engine=cfg, adapt=adapt, target_eval_texts=texts).model


def source_artifact(
    name: str, config: WorldConfig, data: dict[str, Path], *, kind: str = "bpe", architecture: str = "llama"
) -> Path:
    """A source model pretrained on the source language, cached by (config, data recipe, code) through
    ``warmstart.cache``: built once, verified and reused, as a user reuses a downloaded foundation model.
    The folder holds ``tokenizer/`` (the base tokenizer) and ``model/`` (save_pretrained)."""
    import warmstart_lang.adapt as adapt_module
    import warmstart_lang.data as data_module
    import warmstart_lang.families as families_module
    import warmstart_lang.models as models_module
    from warmstart.cache import cached, code_version
    from warmstart_lang.adapt import save_model
    from warmstart_lang.tokenizer import atomic_save

    recipe = {
        "generator": "warmstart_lang.data.write_language_pair",
        "seed": config.seed,
        "n_source": config.n_source,
        "n_target": config.n_target,
    }

    def build(folder: Path) -> None:
        base = train_tokenizer(read_texts([data["source_train"]]), kind, config.base_vocab)  # type: ignore[arg-type]
        atomic_save(base, folder / "tokenizer")
        base = load_tokenizer(folder / "tokenizer")
        arch = ModelConfig(size=config.model.size, architecture=architecture)  # type: ignore[arg-type]
        model = build_model(arch, len(base), tokenizer=base, seed=config.seed)
        model = _train_lm(
            model, base, [data["source_train"]], config.source_steps, config.seed, config.block_size, 3e-3
        )
        save_model(model, base, folder / "model")

    return cached(
        f"lang.{name}",
        {"world": asdict(config), "kind": kind, "architecture": architecture},
        build,
        data=recipe,
        code=code_version(data_module, models_module, adapt_module, families_module),
        description=f"lang bench {name}: a {architecture} pretrained {config.source_steps} steps on the source language",
    )


def prepare_world(root: Path, config: WorldConfig) -> World:
    """Generate the language pair, take the (cached) source model and its tokenizer, extend the tokenizer."""
    from warmstart_lang.tokenizer import atomic_save

    root = Path(root)
    data = write_language_pair(
        root / "data", n_source=config.n_source, n_target=config.n_target, seed=config.seed
    )
    source = source_artifact("source_lm", config, data)
    base_dir, ext_dir, model_dir = source / "tokenizer", root / "extended_tokenizer", source / "model"
    base = load_tokenizer(base_dir)
    if not ext_dir.is_dir():
        extended, _ = extend_tokenizer(
            base, read_texts([data["target_train"]]), target_vocab_size=config.target_vocab
        )
        atomic_save(extended, ext_dir)
    extended = load_tokenizer(ext_dir)
    heldout = read_texts([data["target_valid"]])
    return World(
        data=data,
        base_tokenizer=base_dir,
        extended_tokenizer=ext_dir,
        source_model=model_dir,
        fertility_base=fertility(base, heldout).fertility,
        fertility_extended=fertility(extended, heldout).fertility,
    )


@dataclass
class BenchConfig:
    """The comparison in miniature (each row's defaults fit 10 minutes on 2 CPU cores together)."""

    methods: list[str] = field(
        default_factory=lambda: ["scratch", "random", "mean", "multivariate", "fvt", "convex", "cw2v"]
    )
    """Init methods of the new rows (embeddings and untied head); 'scratch' = no source model at all."""
    schedules: list[str] = field(default_factory=list)
    """Schedules compared with the fvt init, e.g. [cosine, rewarm, infinite] (empty: skipped)."""
    seeds: int = 3
    """Seeds per method."""
    steps: int = 40
    """Continual-pretraining steps per run (the same budget for every method; the source model has
    world.source_steps >= 20x this)."""
    batch_size: int = 8
    """Micro-batch size."""
    lr: float = 2e-3
    """Peak learning rate."""
    eval_every: int = 5
    """Target/source perplexity every N steps (the curves and the steps-to-match headline)."""
    replay_ratio: float = 0.0
    """Share of source documents replayed in the init comparison."""
    replay_row: float = 0.25
    """Forgetting row: fvt without replay vs with this replay ratio (0: skipped)."""
    growth_steps: int = 60
    """bert2BERT row: steps of the grown model and of the large model from scratch (0: skipped)."""
    growth_source_steps: int = 100
    """Pretraining steps of the small model that is grown (cached; batch 16, so its FLOPs are about those
    of the large model's growth_steps at batch 8: the 'including small pretraining' figure compares)."""
    meco_steps: int = 60
    """MeCo row: steps of pretraining from scratch with and without URL conditioning (0: skipped)."""
    encoder_steps: int = 20
    """Encoder row: MLM further-pretraining steps of an expanded tiny BERT (0: skipped)."""
    world: WorldConfig = field(default_factory=WorldConfig)
    """Languages and source model."""


def steps_to_reach(curve: list[tuple[int, float]], threshold: float) -> float | None:
    """First step (linearly interpolated between evaluations) where the curve is at or below ``threshold``."""
    prev: tuple[int, float] | None = None
    for step, value in curve:
        if value <= threshold:
            if prev is None or prev[1] == value:
                return float(step)
            s0, v0 = prev
            return s0 + (v0 - threshold) / (v0 - value) * (step - s0)
        prev = (step, value)
    return None


def _run(
    world: World,
    bench: BenchConfig,
    method: str,
    seed: int,
    schedule: str = "cosine",
    replay_ratio: float | None = None,
) -> dict[str, Any]:
    replay = bench.replay_ratio if replay_ratio is None else replay_ratio
    base = load_tokenizer(world.base_tokenizer)
    extended = load_tokenizer(world.extended_tokenizer)
    if method == "scratch":
        model = build_model(bench.world.model, len(extended), eos_token_id=extended.eos_token_id, seed=seed)
        new_ids = None
    else:
        model = load_model(world.source_model)
        texts = read_texts([world.data["target_train"]], limit=300) if method == "cw2v" else None
        info = expand_model(model, base, extended, method=method, seed=seed, texts=texts)  # type: ignore[arg-type]
        new_ids = info["new_token_ids"]
    cfg = quick_config(bench.steps, bench.batch_size, bench.lr, seed, log_every=QUIET_LOG_EVERY)
    cfg.train.eval_every = bench.eval_every
    cfg.schedule.name = schedule  # type: ignore[assignment]
    adapt = AdaptConfig(block_size=bench.world.block_size, replay_ratio=replay, eval_blocks=16)
    start = time.perf_counter()
    result = continual_pretrain(
        model,
        extended,
        [world.data["target_train"]],
        engine=cfg,
        adapt=adapt,
        target_eval_texts=read_texts([world.data["target_valid"]]),
        source_eval_texts=read_texts([world.data["source_valid"]]),
        replay_files=[world.data["source_train"]] if replay > 0 else (),
        new_token_ids=new_ids,
    )
    return {
        "target_ppl": result.final["target_ppl"],
        "source_ppl": result.final.get("source_ppl", float("nan")),
        "initial_target_ppl": result.history[0][1]["target_ppl"],
        "initial_source_ppl": result.history[0][1].get("source_ppl", float("nan")),
        "curve": [(step, math.log(m["target_ppl"])) for step, m in result.history],  # nats: readable
        "seconds": time.perf_counter() - start,
    }


def run_bench(out: Path, bench: BenchConfig) -> dict[str, Any]:
    """Run the init comparison (and the schedule comparison) and write the core's bench reports."""
    with cpu_threads():
        return _run_bench(out, bench)


def _run_bench(out: Path, bench: BenchConfig) -> dict[str, Any]:
    from warmstart.eval import write_bench_report

    out = Path(out)
    world = prepare_world(out / "world", bench.world)
    runs: dict[str, list[dict[str, Any]]] = {}
    for method in bench.methods:
        runs[method] = [_run(world, bench, method, seed) for seed in range(bench.seeds)]
        log.info("%s: target ppl %s", method, [round(r["target_ppl"], 2) for r in runs[method]])
    description = (
        f"Generated source/target language pair; tiny Llama source model ({bench.world.source_steps} steps on "
        f"the source language), vocabulary extended {world.fertility_base:.2f} -> "
        f"{world.fertility_extended:.2f} tokens/word on held-out target text. Each method: {bench.steps} "
        f"steps of full continual pretraining (batch {bench.batch_size} x {bench.world.block_size} tokens, "
        f"lr {bench.lr}, cosine), {bench.seeds} seeds. 'scratch' = a fresh model on the extended tokenizer."
    )
    baseline = "scratch" if "scratch" in runs else None
    ratio_to_random: dict[str, list[float]] = {}
    if "random" in runs:
        rnd = runs["random"]
        ratio_to_random = {
            m: [r["target_ppl"] / q["target_ppl"] for r, q in zip(rs, rnd, strict=True)]
            for m, rs in runs.items()
        }
    reports = {
        "init": write_bench_report(
            out / "init",
            f"lang: vocabulary-expansion init vs random vs scratch ({bench.steps} steps, {bench.seeds} seeds)",
            {m: [r["target_ppl"] for r in rs] for m, rs in runs.items()},
            metric="target perplexity",
            higher_is_better=False,
            baseline=baseline,
            curves={m: [r["curve"] for r in rs] for m, rs in runs.items()},
            curve_metric="target loss (log perplexity, nats)",
            extra_metrics={
                "source perplexity (forgetting)": {
                    m: [r["source_ppl"] for r in rs] for m, rs in runs.items()
                },
                "source perplexity at step 0": {
                    m: [r["initial_source_ppl"] for r in rs] for m, rs in runs.items()
                },
                "target perplexity at step 0": {
                    m: [r["initial_target_ppl"] for r in rs] for m, rs in runs.items()
                },
                "target ppl / random's": ratio_to_random,
                "seconds": {m: [r["seconds"] for r in rs] for m, rs in runs.items()},
            },
            description=description,
            config=asdict(bench)
            | {"fertility_base": world.fertility_base, "fertility_extended": world.fertility_extended},
        ).summary
    }
    if bench.schedules:
        sched: dict[str, list[dict[str, Any]]] = {}
        for name in bench.schedules:
            sched[name] = (
                runs["fvt"]
                if name == "cosine" and "fvt" in runs
                else [_run(world, bench, "fvt", seed, schedule=name) for seed in range(bench.seeds)]
            )
        reports["schedule"] = write_bench_report(
            out / "schedule",
            f"lang: schedules for continual pretraining (fvt init, {bench.steps} steps, {bench.seeds} seeds)",
            {n: [r["target_ppl"] for r in rs] for n, rs in sched.items()},
            metric="target perplexity",
            higher_is_better=False,
            baseline=bench.schedules[0],
            curves={n: [r["curve"] for r in rs] for n, rs in sched.items()},
            curve_metric="target loss (log perplexity, nats)",
            extra_metrics={
                "source perplexity (forgetting)": {
                    n: [r["source_ppl"] for r in rs] for n, rs in sched.items()
                }
            },
            description="The same runs as the init bench's fvt row, with the schedule varied.",
            config=asdict(bench),
        ).summary
    headline = _steps_headline(runs, bench)
    (out / "init" / "headline.json").write_text(json.dumps(headline, indent=1))
    reports["init"]["headline"] = headline
    if bench.replay_row > 0 and "fvt" in runs:
        replayed = [
            _run(world, bench, "fvt", seed, replay_ratio=bench.replay_row) for seed in range(bench.seeds)
        ]
        plain = (
            runs["fvt"]
            if bench.replay_ratio == 0
            else [_run(world, bench, "fvt", seed, replay_ratio=0.0) for seed in range(bench.seeds)]
        )
        name = f"replay {bench.replay_row:.0%}"
        reports["forgetting"] = write_bench_report(
            out / "forgetting",
            f"lang: forgetting of the source language with and without replay (fvt, {bench.steps} steps)",
            {"no replay": [r["source_ppl"] for r in plain], name: [r["source_ppl"] for r in replayed]},
            metric="source perplexity after adaptation",
            higher_is_better=False,
            baseline="no replay",
            extra_metrics={
                "target perplexity": {
                    "no replay": [r["target_ppl"] for r in plain],
                    name: [r["target_ppl"] for r in replayed],
                },
                "source perplexity before": {
                    "no replay": [r["initial_source_ppl"] for r in plain],
                    name: [r["initial_source_ppl"] for r in replayed],
                },
            },
            description="Forgetting = source perplexity after target adaptation (lower is less forgetting).",
            config=asdict(bench),
        ).summary
    if bench.growth_steps > 0:
        reports["growth"] = _growth_row(out / "growth", bench)
    if bench.meco_steps > 0:
        reports["meco"] = _meco_row(out / "meco", bench, world)
    if bench.encoder_steps > 0:
        reports["encoder"] = _encoder_row(out / "encoder", bench, world)
    (out / "summary.json").write_text(
        json.dumps({k: v.get("headline", {}) for k, v in reports.items()}, indent=1, default=str)
    )
    return {"world": world, "runs": runs, "reports": reports}


def _steps_headline(runs: dict[str, list[dict[str, Any]]], bench: BenchConfig) -> dict[str, Any]:
    """Target-language steps each method needs to reach scratch's final perplexity (the compute saved)."""
    if "scratch" not in runs:
        return {}
    target = float(np.mean([math.log(r["target_ppl"]) for r in runs["scratch"]]))
    out: dict[str, Any] = {"scratch_final_target_ppl": math.exp(target), "budget_steps": bench.steps}
    for method, rs in runs.items():
        steps = [steps_to_reach(r["curve"], target) for r in rs]
        reached = [s for s in steps if s is not None]
        out[method] = {
            "steps_to_scratch_final": steps,
            "mean_steps": float(np.mean(reached)) if reached else None,
            "seeds_reaching": len(reached),
            "compute_saved": 1.0 - float(np.mean(reached)) / bench.steps if len(reached) == len(rs) else None,
        }
    return out


def _flops_per_step(model: Any, tokens: int, depth_fraction: float = 1.0) -> float:
    """6 x parameters x tokens (Kaplan et al.), the transformer layers scaled by the active depth."""
    from warmstart.init import find_layer_list

    _, layers = find_layer_list(model)
    layer_params = sum(p.numel() for p in layers.parameters())
    other = sum(p.numel() for p in model.parameters()) - layer_params
    return 6.0 * tokens * (other + depth_fraction * layer_params)


def _growth_row(out: Path, bench: BenchConfig) -> dict[str, Any]:
    """bert2BERT: grow a small pretrained GPT-2 (AKI, 2x width and depth) and train it vs the large model
    from scratch for the same steps on the source language; FLOPs to reach scratch's final loss."""
    from warmstart.eval import write_bench_report
    from warmstart_lang.growth import GrowConfig, grow_model, submodel_depths

    world_cfg = bench.world
    data = write_language_pair(
        out / "data", n_source=world_cfg.n_source, n_target=world_cfg.n_target, seed=world_cfg.seed
    )
    small_cfg = WorldConfig(**{**asdict(world_cfg), "source_steps": bench.growth_source_steps})
    small_cfg.model = ModelConfig(size="tiny", architecture="gpt2")
    source = source_artifact("growth_small", small_cfg, data, architecture="gpt2")
    tok = load_tokenizer(source / "tokenizer")
    tokens = bench.batch_size * world_cfg.block_size
    runs: dict[str, list[dict[str, Any]]] = {"scratch large": [], "bert2BERT (aki)": []}
    stage1 = bench.growth_steps // 4
    for seed in range(bench.seeds):
        small = load_model(source / "model")
        grown, info = grow_model(small, GrowConfig(method="aki", width=128, depth=4, seed=seed))
        torch.manual_seed(seed)
        large = type(grown)(copy.deepcopy(grown.config))  # the same architecture, freshly initialised
        for name, model, sub in (("scratch large", large, 0), ("bert2BERT (aki)", grown, stage1)):
            cfg = _bench_engine(bench, seed, bench.growth_steps)
            result = continual_pretrain(
                model,
                tok,
                [data["source_train"]],
                engine=cfg,
                adapt=AdaptConfig(block_size=world_cfg.block_size, eval_blocks=16),
                target_eval_texts=read_texts([data["source_valid"]]),
                submodel_steps=sub,
                submodel_depths=submodel_depths(info["depth"][0], info["depth"][1]),
            )
            depths = submodel_depths(info["depth"][0], info["depth"][1])
            mean_fraction = float(np.mean(depths)) / info["depth"][1]
            per_step = _flops_per_step(result.model, tokens)
            flops = [
                per_step * (mean_fraction if step <= sub else 1.0)
                for step in range(1, bench.growth_steps + 1)
            ]
            runs[name].append(
                {
                    "final_ppl": result.final["target_ppl"],
                    "curve": [(st, math.log(m["target_ppl"])) for st, m in result.history],
                    "cum_flops": np.cumsum(flops).tolist(),
                    "small_pretrain_flops": _flops_per_step(small, 16 * world_cfg.block_size)
                    * bench.growth_source_steps,
                }
            )
    target = float(np.mean([math.log(r["final_ppl"]) for r in runs["scratch large"]]))
    saved, saved_incl = [], []
    for r, base in zip(runs["bert2BERT (aki)"], runs["scratch large"], strict=True):
        step = steps_to_reach(r["curve"], target)
        if step is None:
            saved.append(float("nan"))
            saved_incl.append(float("nan"))
            continue
        idx = min(max(int(math.ceil(step)) - 1, 0), len(r["cum_flops"]) - 1)
        total = base["cum_flops"][-1]
        saved.append(1.0 - r["cum_flops"][idx] / total)
        saved_incl.append(1.0 - (r["cum_flops"][idx] + r["small_pretrain_flops"]) / total)
    headline = {
        "flops_saved_to_reach_scratch_loss": saved,
        "flops_saved_including_small_pretraining": saved_incl,
        "paper": 0.45,
        "scratch_final_ppl": math.exp(target),
    }
    report = write_bench_report(
        out,
        f"lang: bert2BERT growth (AKI, GPT-2 64->128 wide, 2->4 layers) vs the large model from scratch ({bench.growth_steps} steps)",
        {k: [r["final_ppl"] for r in rs] for k, rs in runs.items()},
        metric="source perplexity",
        higher_is_better=False,
        baseline="scratch large",
        curves={k: [r["curve"] for r in rs] for k, rs in runs.items()},
        curve_metric="loss (log perplexity, nats)",
        extra_metrics={"FLOPs saved to reach scratch's final loss": {"bert2BERT (aki)": saved}},
        description=(
            f"Small GPT-2 pretrained {bench.growth_source_steps} steps (cached), grown with AKI; the grown model "
            f"trains {stage1} sub-model steps then the full model. FLOPs = 6 x params x tokens (the sub-model "
            "stage at its mean active depth); the small model's pretraining is not counted in the headline "
            "(the paper reuses an existing model), see flops_saved_including_small_pretraining."
        ),
        config=asdict(bench),
    ).summary
    report["headline"] = headline
    (out / "headline.json").write_text(json.dumps(headline, indent=1))
    return report


def _bench_engine(bench: BenchConfig, seed: int, steps: int) -> EngineConfig:
    cfg = quick_config(steps, bench.batch_size, bench.lr, seed, log_every=QUIET_LOG_EVERY)
    cfg.train.eval_every = bench.eval_every
    return cfg


def _meco_row(out: Path, bench: BenchConfig, world: World) -> dict[str, Any]:
    """MeCo: a fresh model trained on the target JSONL with and without URL conditioning; tokens to reach
    the baseline's final held-out perplexity (held-out text has no URL, as in the paper's evaluation)."""
    from warmstart.eval import write_bench_report
    from warmstart_lang.data import MeCoConfig

    tok = load_tokenizer(world.extended_tokenizer)
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "MeCo": []}
    tokens_per_step = bench.batch_size * bench.world.block_size
    for seed in range(bench.seeds):
        for name, on in (("baseline", False), ("MeCo", True)):
            model = build_model(bench.world.model, len(tok), tokenizer=tok, seed=seed)
            adapt = AdaptConfig(
                block_size=bench.world.block_size, eval_blocks=16, meco=MeCoConfig(enabled=on)
            )
            result = continual_pretrain(
                model,
                tok,
                [world.data["target_train"]],
                engine=_bench_engine(bench, seed, bench.meco_steps),
                adapt=adapt,
                target_eval_texts=read_texts([world.data["target_valid"]]),
            )
            runs[name].append(
                {
                    "final_ppl": result.final["target_ppl"],
                    "curve": [(st, math.log(m["target_ppl"])) for st, m in result.history],
                }
            )
    target = float(np.mean([math.log(r["final_ppl"]) for r in runs["baseline"]]))
    steps = [steps_to_reach(r["curve"], target) for r in runs["MeCo"]]
    fewer = [1.0 - s / bench.meco_steps if s is not None else float("nan") for s in steps]
    headline = {
        "meco_tokens_to_baseline_final": [s * tokens_per_step if s is not None else None for s in steps],
        "baseline_tokens": bench.meco_steps * tokens_per_step,
        "fewer_tokens": fewer,
        "paper": 0.33,
    }
    report = write_bench_report(
        out,
        f"lang: MeCo (URL conditioning, 90 % then cooldown) vs plain pretraining from scratch ({bench.meco_steps} steps)",
        {k: [r["final_ppl"] for r in rs] for k, rs in runs.items()},
        metric="target perplexity (no URL)",
        higher_is_better=False,
        baseline="baseline",
        curves={k: [r["curve"] for r in rs] for k, rs in runs.items()},
        curve_metric="loss (log perplexity, nats)",
        extra_metrics={"fewer tokens to the baseline's final loss": {"MeCo": fewer}},
        description="Generated target documents carry a topic URL (6 domains); MeCo masks the loss on the prefix.",
        config=asdict(bench),
    ).summary
    report["headline"] = headline
    (out / "headline.json").write_text(json.dumps(headline, indent=1))
    return report


def _encoder_row(out: Path, bench: BenchConfig, world: World) -> dict[str, Any]:
    """A tiny BERT pretrained with MLM on the source language (cached), expanded to the target language
    (fvt / random rows) vs a scratch BERT, then MLM further pretraining; masked-token perplexity."""
    from warmstart.eval import write_bench_report
    from warmstart_lang.tokenizer import atomic_save

    enc_cfg = WorldConfig(**{**asdict(bench.world), "source_steps": 20 * bench.encoder_steps})
    enc_cfg.model = ModelConfig(size="tiny", architecture="bert")
    source = source_artifact("encoder_source", enc_cfg, world.data, kind="bert", architecture="bert")
    base = load_tokenizer(source / "tokenizer")
    ext_dir = out / "extended_tokenizer"
    if not ext_dir.is_dir():
        ext, _ = extend_tokenizer(
            base, read_texts([world.data["target_train"]]), target_vocab_size=bench.world.target_vocab
        )
        atomic_save(ext, ext_dir)
    ext = load_tokenizer(ext_dir)
    runs: dict[str, list[dict[str, Any]]] = {"scratch": [], "random": [], "fvt": []}
    for seed in range(bench.seeds):
        for method in runs:
            if method == "scratch":
                model = build_model(enc_cfg.model, len(ext), tokenizer=ext, seed=seed)
            else:
                model = load_model(source / "model")
                expand_model(model, base, ext, method=method, seed=seed)  # type: ignore[arg-type]
            result = continual_pretrain(
                model,
                ext,
                [world.data["target_train"]],
                engine=_bench_engine(bench, seed, bench.encoder_steps),
                adapt=AdaptConfig(block_size=bench.world.block_size, eval_blocks=16),
                target_eval_texts=read_texts([world.data["target_valid"]]),
            )
            runs[method].append(
                {
                    "final": result.final["target_ppl"],
                    "curve": [(st, math.log(m["target_ppl"])) for st, m in result.history],
                }
            )
    report = write_bench_report(
        out,
        f"lang: encoder (tiny BERT, MLM) expanded + further pretrained vs scratch ({bench.encoder_steps} steps)",
        {k: [r["final"] for r in rs] for k, rs in runs.items()},
        metric="masked-token perplexity",
        higher_is_better=False,
        baseline="scratch",
        curves={k: [r["curve"] for r in rs] for k, rs in runs.items()},
        curve_metric="masked-token loss (nats)",
        description=f"Source BERT: {enc_cfg.source_steps} MLM steps on the source language (cached).",
        config=asdict(bench),
    ).summary
    return report


# ----------------------------------------------------------------------------------------------------------
# throughput vs the transformers Trainer
# ----------------------------------------------------------------------------------------------------------


def throughput_vs_trainer(
    out: Path, steps: int = 40, batch_size: int = 8, world: WorldConfig | None = None
) -> dict[str, float]:
    """Tokens/s of our continual pretraining vs ``transformers.Trainer`` on the same model, data and steps.

    Ours streams and tokenises the text files inside the loop; the Trainer gets the same blocks
    pre-tokenised (a map-style dataset), which favours it. One run each, CPU, fp32.
    """
    from transformers import Trainer, TrainingArguments

    world_cfg = world or WorldConfig()
    w = prepare_world(Path(out) / "world", world_cfg)
    extended = load_tokenizer(w.extended_tokenizer)
    base = load_tokenizer(w.base_tokenizer)
    block = world_cfg.block_size

    def fresh_model():
        model = load_model(w.source_model)
        expand_model(model, base, extended, method="mean", seed=0)
        return model

    # ours
    cfg = quick_config(
        steps, batch_size, 1e-3, warmup=EngineConfig().schedule.warmup_steps, log_every=QUIET_LOG_EVERY
    )
    result = continual_pretrain(
        fresh_model(),
        extended,
        [w.data["target_train"]],
        engine=cfg,
        adapt=AdaptConfig(block_size=block, eval_blocks=1),
        target_eval_texts=read_texts([w.data["target_valid"]], limit=50),
    )
    ours = result.tokens_per_s

    # transformers Trainer on the same blocks
    stream = TextBlockStream(extended, [w.data["target_train"]], block_size=block, batch_size=1)
    it = iter(stream)
    blocks = [next(it) for _ in range(steps * batch_size)]

    class Blocks(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(blocks)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {k: v[0] for k, v in blocks[i].items()}

    args = TrainingArguments(
        output_dir=str(Path(out) / "trainer"),
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=1e-3,
        lr_scheduler_type="cosine",
        logging_steps=10_000,
        save_strategy="no",
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = Trainer(model=fresh_model(), args=args, train_dataset=Blocks())
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    tokens = steps * batch_size * (block - 1)
    theirs = tokens / seconds
    return {"warmstart_tokens_per_s": ours, "trainer_tokens_per_s": theirs, "ratio": ours / theirs}
