"""A toy app on the real CLI and engine, run as a subprocess by the preemption and launcher tests.

usage: toy_cli.py train [--out DIR] [--resume latest|DIR] [--sleep S] [--engine.* ...]
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

import torch

from warmstart.cli import App, RunContext
from warmstart.engine import Engine, EngineConfig

app = App("toy", "A toy app for process tests")


class SlowLMTask:
    def __init__(self, model: torch.nn.Module, sleep: float) -> None:
        self.model = model
        self.sleep = sleep

    def loss(self, batch: torch.Tensor):
        if self.sleep:
            time.sleep(self.sleep)
        out = self.model(input_ids=batch, labels=batch)
        return out.loss, {"tokens": batch.numel()}


@app.command
def train(
    engine: EngineConfig = EngineConfig(),
    out: Path | None = None,
    resume: str | None = None,
    sleep: float = 0.0,
    run: RunContext | None = None,
) -> int:
    """Train a tiny GPT-2 on random tokens and print a digest of its weights.

    Args:
        out: run directory.
        resume: latest, a run directory or a step-N directory.
        sleep: seconds to sleep in each loss call (gives a test time to send a signal).
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.set_num_threads(1)
    run_dir, checkpoint = run.open(resume=resume, out=out)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.1, embd_pdrop=0.1
        )
    )
    g = torch.Generator().manual_seed(1)
    data = [torch.randint(0, 50, (16,), generator=g) for _ in range(40)]
    summary = Engine(engine, run_dir).fit(SlowLMTask(model, sleep), data, resume_from=checkpoint)
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
    rank = int(os.environ.get("RANK", 0))
    print(
        f"RESULT rank={rank} steps={summary.steps} digest={digest} start={summary.start_step} dir={run_dir}",
        flush=True,
    )
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(app.main())
