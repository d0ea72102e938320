"""GPU check for warmstart-lang: 200 steps of continual pretraining of a ~100M-parameter Llama, tokens/s and
peak memory (bf16 autocast, SDPA), plus a QLoRA smoke run. Run on a CUDA machine:

    .venv/bin/python apps/lang/scripts/gpu_check.py --out /tmp/lang-gpu [--steps 200] [--size 100m]

The source model is built from the ``100m`` preset on the generated language pair (no download) and
expanded with FVT; the numbers are printed as JSON and written to ``<out>/gpu.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from warmstart.engine import EngineConfig
from warmstart_lang.adapt import AdaptConfig, continual_pretrain, expand_model, save_model
from warmstart_lang.bench import WorldConfig, _quiet, prepare_world
from warmstart_lang.data import read_texts
from warmstart_lang.models import ModelConfig, load_model
from warmstart_lang.tokenizer import load_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--size", default="100m")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--block", type=int, default=512)
    parser.add_argument("--qlora", action="store_true", help="also run 20 QLoRA steps")
    args = parser.parse_args()
    world_cfg = WorldConfig(
        n_source=4000,
        n_target=4000,
        base_vocab=2000,
        target_vocab=2000,
        source_steps=20,
        model=ModelConfig(size=args.size, max_position_embeddings=args.block),
        block_size=args.block,
    )
    world = prepare_world(args.out / "world", world_cfg)
    base, extended = load_tokenizer(world.base_tokenizer), load_tokenizer(world.extended_tokenizer)
    model = load_model(world.source_model)
    info = expand_model(model, base, extended, method="fvt")
    params = sum(p.numel() for p in model.parameters())
    cfg = _quiet(EngineConfig())
    cfg.train.max_steps = args.steps
    cfg.train.micro_batch_size = args.batch
    cfg.optimizer.lr = 3e-4
    cfg.schedule.warmup_steps = args.steps // 10
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = continual_pretrain(
        model,
        extended,
        [world.data["target_train"]],
        engine=cfg,
        adapt=AdaptConfig(
            block_size=args.block, embed_steps=args.steps // 10, replay_ratio=0.25, eval_blocks=8
        ),
        target_eval_texts=read_texts([world.data["target_valid"]]),
        source_eval_texts=read_texts([world.data["source_valid"]]),
        replay_files=[world.data["source_train"]],
        new_token_ids=info["new_token_ids"],
    )
    report = {
        "device": torch.cuda.get_device_name(0),
        "params": params,
        "steps": args.steps,
        "tokens_per_s": result.tokens_per_s,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
        "seconds": time.perf_counter() - start,
        "target_ppl": result.final["target_ppl"],
        "source_ppl": result.final.get("source_ppl"),
    }
    save_model(result.model, extended, args.out / "model")
    if args.qlora:
        cfg.train.max_steps = 20
        torch.cuda.reset_peak_memory_stats()
        q = continual_pretrain(
            load_model(args.out / "model"),
            extended,
            [world.data["target_train"]],
            engine=cfg,
            adapt=AdaptConfig(mode="qlora", block_size=args.block, eval_blocks=4),
            target_eval_texts=read_texts([world.data["target_valid"]]),
        )
        report["qlora_tokens_per_s"] = q.tokens_per_s
        report["qlora_peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    (args.out / "gpu.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
