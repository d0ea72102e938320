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

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from warmstart.engine import Engine, EngineConfig, cpu_threads
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
    source_steps: int = 150
    """Pretraining steps of the source model on the source language."""
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


def _quiet(cfg: EngineConfig) -> EngineConfig:
    cfg.logging.tensorboard = False
    cfg.logging.progress = "none"
    cfg.checkpoint.save_final = False
    cfg.logging.log_every = 10_000
    return cfg


def prepare_world(root: Path, config: WorldConfig) -> World:
    """Generate the language pair, train + extend tokenizers and pretrain the source model (cached)."""
    from warmstart.tasks import CausalLMTask
    from warmstart_lang.adapt import save_model
    from warmstart_lang.tokenizer import atomic_save

    root = Path(root)
    data = write_language_pair(
        root / "data", n_source=config.n_source, n_target=config.n_target, seed=config.seed
    )
    base_dir, ext_dir, model_dir = root / "base_tokenizer", root / "extended_tokenizer", root / "source_model"
    if not base_dir.is_dir():
        atomic_save(train_tokenizer(read_texts([data["source_train"]]), "bpe", config.base_vocab), base_dir)
    base = load_tokenizer(base_dir)
    if not ext_dir.is_dir():
        extended, _ = extend_tokenizer(
            base, read_texts([data["target_train"]]), target_vocab_size=config.target_vocab
        )
        atomic_save(extended, ext_dir)
    extended = load_tokenizer(ext_dir)
    if not (model_dir / "config.json").is_file():
        model = build_model(config.model, len(base), eos_token_id=base.eos_token_id, seed=config.seed)
        cfg = _quiet(EngineConfig())
        cfg.train.max_steps = config.source_steps
        cfg.train.micro_batch_size = 16
        cfg.train.seed = config.seed
        cfg.optimizer.lr = 3e-3
        cfg.schedule.warmup_steps = config.source_steps // 10
        stream = TextBlockStream(base, [data["source_train"]], block_size=config.block_size, batch_size=16)
        Engine(cfg, None).fit(CausalLMTask(model), stream)
        save_model(model, base, model_dir)
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
    """The miniature comparison."""

    methods: list[str] = field(
        default_factory=lambda: ["scratch", "random", "mean", "multivariate", "fvt", "convex", "cw2v"]
    )
    """Init methods of the new rows (embeddings and untied head); 'scratch' = no source model at all."""
    schedules: list[str] = field(default_factory=lambda: ["cosine", "rewarm", "infinite"])
    """Schedules compared with the fvt init (empty: skip the schedule comparison)."""
    seeds: int = 3
    """Seeds per method."""
    steps: int = 60
    """Continual-pretraining steps per run (the same budget for every method)."""
    batch_size: int = 8
    """Micro-batch size."""
    lr: float = 2e-3
    """Peak learning rate."""
    eval_every: int = 20
    """Target/source perplexity every N steps (the curves)."""
    replay_ratio: float = 0.0
    """Share of source documents replayed during continual pretraining."""
    world: WorldConfig = field(default_factory=WorldConfig)
    """Languages and source model."""


def _run(
    world: World, bench: BenchConfig, method: str, seed: int, schedule: str = "cosine"
) -> dict[str, Any]:
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
    cfg = _quiet(EngineConfig())
    cfg.train.max_steps = bench.steps
    cfg.train.micro_batch_size = bench.batch_size
    cfg.train.seed = seed
    cfg.train.eval_every = bench.eval_every
    cfg.optimizer.lr = bench.lr
    cfg.schedule.name = schedule  # type: ignore[assignment]
    cfg.schedule.warmup_steps = max(1, bench.steps // 10)
    adapt = AdaptConfig(block_size=bench.world.block_size, replay_ratio=bench.replay_ratio, eval_blocks=16)
    start = time.perf_counter()
    result = continual_pretrain(
        model,
        extended,
        [world.data["target_train"]],
        engine=cfg,
        adapt=adapt,
        target_eval_texts=read_texts([world.data["target_valid"]]),
        source_eval_texts=read_texts([world.data["source_valid"]]),
        replay_files=[world.data["source_train"]] if bench.replay_ratio > 0 else (),
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
    return {"world": world, "runs": runs, "reports": reports}


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
    cfg = _quiet(EngineConfig())
    cfg.train.max_steps = steps
    cfg.train.micro_batch_size = batch_size
    cfg.optimizer.lr = 1e-3
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
