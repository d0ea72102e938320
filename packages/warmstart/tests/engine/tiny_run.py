"""A tiny training run used by the kill-and-resume and 2-process DDP tests (run as a subprocess).

usage: tiny_run.py RUN_DIR [--resume] [--sleep S] [--steps N] [--every K] [--strategy auto|ddp|fsdp]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from warmstart.engine import Engine, EngineConfig, latest_checkpoint


class SlowLMTask:
    def __init__(self, model: torch.nn.Module, sleep: float) -> None:
        self.model = model
        self.sleep = sleep

    def loss(self, batch: torch.Tensor):
        if self.sleep:
            time.sleep(self.sleep)
        out = self.model(input_ids=batch, labels=batch)
        return out.loss, {"tokens": batch.numel()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--strategy", default="auto")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.1, embd_pdrop=0.1
        )
    )
    g = torch.Generator().manual_seed(1)
    data = [torch.randint(0, 50, (16,), generator=g) for _ in range(40)]  # 40 samples: epochs wrap around
    config = EngineConfig()
    config.train.max_steps = args.steps
    config.train.micro_batch_size = 4
    config.train.grad_accum_steps = 2
    config.checkpoint.every = args.every
    config.checkpoint.keep_last = 0
    config.logging.log_every = 5
    config.logging.progress = "plain"
    config.optimizer.lr = 1e-3
    config.schedule.warmup_steps = 3
    config.distributed.strategy = args.strategy
    resume = latest_checkpoint(args.run_dir / "checkpoints") if args.resume else None
    summary = Engine(config, args.run_dir).fit(SlowLMTask(model, args.sleep), data, resume_from=resume)
    full = [p.full_tensor() if hasattr(p, "full_tensor") else p for p in model.parameters()]  # FSDP: gathered
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in full)).hexdigest()
    rank = int(os.environ.get("RANK", 0))
    print(f"RESULT rank={rank} steps={summary.steps} digest={digest} start={summary.start_step}", flush=True)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
