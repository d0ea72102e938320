"""lang on a GPU: a ~100M-parameter Llama continually pretrained on a new language, full fine-tune and QLoRA.

Seed: *RedWhale: An Adapted Korean LLM Through Efficient Continual Pretraining* (arXiv 2408.11294), with
QLoRA (Dettmers et al., arXiv 2305.14314) as the low-memory mode. Generates the language pair, trains the
source tokenizer and a ``100m`` source model (one step: the weights only need the right shapes), then runs
``warmstart-lang pretrain --config gpu-100m.yaml`` twice: full fine-tuning (20 embedding-only steps, then
180 full steps at 8 x 512 tokens, replay 25 %) and ``--adapt.mode qlora`` (bitsandbytes NF4 base + LoRA,
100 steps). Left out: tokenizer extension and the embedding initialisers (CPU work, tested elsewhere).
"""

from __future__ import annotations

from typing import Any

from gpu.common import (
    Check,
    Context,
    Limit,
    Recipe,
    engine_flags,
    flags,
    timed,
    trained,
)

RECIPE = "apps/lang/recipes/gpu-100m.yaml"
PATHS = ["--model", "m", "--data", "d.txt", "--eval_data", "e.txt"]
BLOCK, BATCH, FULL_STEPS, EMBED_STEPS, QLORA_STEPS = 512, 8, 200, 20, 100


def adapt_flags(block: int, eval_blocks: int) -> list[str]:
    """The recipe at 512-token blocks without accumulation, MeCo off (plain-text data), no mid-run evals."""
    options = {
        "adapt.block_size": block,
        "adapt.meco.enabled": False,
        "adapt.eval_blocks": eval_blocks,
        "engine.train.grad_accum_steps": 1,
        "engine.train.eval_every": 0,
    }
    return ["--config", RECIPE, *flags(options)]


def full_flags(steps: int, embed_steps: int, batch: int) -> list[str]:
    return flags({"adapt.mode": "full", "adapt.embed_steps": embed_steps}) + engine_flags(steps, batch)


def qlora_flags(steps: int, batch: int, mode: str = "qlora") -> list[str]:
    return flags({"adapt.mode": mode, "adapt.embed_steps": 0}) + engine_flags(steps, batch)


def run(ctx: Context) -> dict[str, Any]:
    from warmstart_lang.bench import WorldConfig, prepare_world
    from warmstart_lang.models import ModelConfig

    block, batch = ctx.size(BLOCK, 32), ctx.size(BATCH, 2)
    metrics: dict[str, Any] = {}
    config = WorldConfig(
        n_source=ctx.size(2000, 200),
        n_target=ctx.size(2000, 200),
        base_vocab=ctx.size(4000, 300),
        target_vocab=ctx.size(4000, 300),
        source_steps=1,
        model=ModelConfig(size=ctx.size("100m", "tiny"), max_position_embeddings=block),
        block_size=block,
    )
    with timed(metrics, "world_seconds"):
        world = prepare_world(ctx.out / "world", config)
    paths = {
        "model": world.source_model,
        "tokenizer": world.base_tokenizer,
        "data": world.data["target_train"],
        "eval_data": world.data["target_valid"],
        "replay": world.data["source_train"],
    }
    common = ["pretrain", *flags(paths), *adapt_flags(block, ctx.size(8, 2))]
    full_steps, embed_steps, q_steps = (
        ctx.size(FULL_STEPS, 4),
        ctx.size(EMBED_STEPS, 1),
        ctx.size(QLORA_STEPS, 3),
    )
    metrics |= trained(
        "full", "lang", [*common, *full_flags(full_steps, embed_steps, batch), "--out", ctx.out / "full"]
    )
    # QLoRA needs CUDA (bitsandbytes' NF4 kernels); the CPU smoke run checks the same path with plain LoRA
    mode = "lora" if ctx.smoke else "qlora"
    return metrics | trained(
        "qlora", "lang", [*common, *qlora_flags(q_steps, batch, mode), "--out", ctx.out / "qlora"]
    )


def models() -> dict[str, Any]:
    from warmstart_lang.models import ModelConfig, build_model

    return {"llama 100m (vocab 4000)": lambda: build_model(ModelConfig(size="100m"), 4000)}


CHECK = Check(
    app="lang",
    plan=[
        "generate the language pair; BPE tokenizer (4k); a 100m Llama source (1 step)",
        f"pretrain --config gpu-100m.yaml --adapt.mode full: {EMBED_STEPS} embedding + "
        f"{FULL_STEPS - EMBED_STEPS} full steps, {BATCH} x {BLOCK} tokens, bf16",
        f"pretrain --config gpu-100m.yaml --adapt.mode qlora: NF4 base + LoRA r=64, {QLORA_STEPS} steps",
    ],
    budget_s=120,
    recipes=[
        Recipe("lang", "pretrain", RECIPE, [*PATHS, *adapt_flags(BLOCK, 8)[2:], *full_flags(200, 20, BATCH)]),
        Recipe("lang", "pretrain", RECIPE, [*PATHS, *adapt_flags(BLOCK, 8)[2:], *qlora_flags(100, BATCH)]),
    ],
    models=models,
    run=run,
    limits=[
        Limit("full_all_steps", ">=", FULL_STEPS, "every requested step ran (both stages)"),
        Limit("qlora_steps", ">=", QLORA_STEPS, "every requested QLoRA step ran"),
        Limit("full_loss_finite", ">=", 1, "bf16 loss stayed finite"),
        Limit("qlora_loss_finite", ">=", 1, "NF4 + bf16 loss stayed finite"),
        Limit("full_tokens_per_s", ">=", 50_000, "floor: a 100M decoder in bf16 on one modern GPU"),
        Limit("qlora_tokens_per_s", ">=", 5_000, "floor: NF4 dequantisation costs, LoRA steps are cheap"),
    ],
    apis=[
        "warmstart_lang.cli:app",
        "warmstart_lang.bench:prepare_world",
        "warmstart_lang.bench:WorldConfig",
        "warmstart_lang.models:ModelConfig",
        "warmstart_lang.models:build_model",
        "warmstart.peft:load_qlora",
        "warmstart.engine:Engine.fit",
    ],
)
