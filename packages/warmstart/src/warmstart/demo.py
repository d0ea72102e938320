"""The core's own demo for ``warmstart tour``: a tiny GPT-2 learns a generated toy language, is stopped
half-way, and resumes from its checkpoint to the end — the engine's whole path in a few seconds on CPU."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from warmstart.cli.app import App, DemoResult
from warmstart.cli.rundir import RunContext
from warmstart.engine import Engine, EngineConfig

app = App("core", "The core engine's demo: train, stop, resume a tiny causal LM")

SUBJECTS = ["the cat", "a dog", "my friend", "the old man", "a small bird", "the teacher", "our team"]
VERBS = ["sees", "likes", "follows", "finds", "paints", "builds", "reads"]
OBJECTS = ["the river", "a red house", "the long road", "a green tree", "the book", "a bright star"]
ENDINGS = ["today", "at night", "in the morning", "again", "with care", "near the sea"]


def generate_text(n_sentences: int, seed: int = 0) -> list[str]:
    """Sentences of a small procedural grammar (subject verb object ending)."""
    rng = random.Random(seed)
    return [
        f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(ENDINGS)} ."
        for _ in range(n_sentences)
    ]


def build_demo(
    seq_len: int = 32, seed: int = 0
) -> tuple[Any, torch.nn.Module, list[torch.Tensor], list[torch.Tensor]]:
    """A trained BPE tokenizer, a tiny GPT-2, and packed train/eval blocks of token ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel

    text = generate_text(3000, seed)
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(
        text, trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<eos>"])
    )
    eos = tokenizer.token_to_id("<eos>")
    ids: list[int] = []
    for encoding in tokenizer.encode_batch(text):
        ids.extend(encoding.ids + [eos])
    blocks = torch.tensor(ids[: len(ids) // seq_len * seq_len]).view(-1, seq_len)  # (N, T)
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=tokenizer.get_vocab_size(), n_positions=seq_len, n_embd=64, n_layer=2, n_head=4
    )
    model = GPT2LMHeadModel(config)
    n_eval = max(8, len(blocks) // 10)
    return tokenizer, model, list(blocks[n_eval:]), [blocks[:n_eval]]


@app.command(demo=True)
def demo(out: Path | None = None, steps: int = 200, run: RunContext | None = None) -> DemoResult:
    """Train a tiny causal LM on generated text for `steps`, stopping half-way and resuming once.

    Args:
        out: run directory (default: runs/core/demo/<time>).
        steps: optimizer steps in total.
    """
    from warmstart.cli.show import print_summary
    from warmstart.tasks import CausalLMTask

    assert run is not None, "the App injects the run context"
    run_dir, _ = run.open(out=out)
    _, model, train, evaluation = build_demo()
    task = CausalLMTask(model, evaluation)
    before = task.evaluate()["perplexity"]
    config = EngineConfig()
    config.train.max_steps = steps
    config.train.micro_batch_size = 16
    config.train.stop_at = steps // 2
    config.optimizer.lr = 3e-3
    config.schedule.warmup_steps = steps // 10
    config.logging.log_every = max(1, steps // 10)
    config.logging.tensorboard = False
    first = Engine(config, run_dir).fit(task, train)
    config.train.stop_at = None
    summary = Engine(config, run_dir).fit(task, train, resume_from=first.checkpoint)
    after = summary.final_metrics["eval/perplexity"]
    print_summary(summary, "core demo (resumed run)")
    return DemoResult(
        what=f"tiny GPT-2, {steps} steps, stopped at {steps // 2} and resumed",
        metric="eval perplexity",
        value=after,
        details={"perplexity_before": before, "run_dir": str(run_dir)},
    )
