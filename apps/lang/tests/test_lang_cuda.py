"""lang on CUDA: QLoRA and full continual pretraining steps through the CLI (bf16, bitsandbytes NF4).

Skipped without CUDA (the CPU refusal of QLoRA is tested in test_lang_cli.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from warmstart_lang.bench import WorldConfig, prepare_world
from warmstart_lang.cli import app
from warmstart_lang.models import ModelConfig

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bf16, bitsandbytes 4-bit)"),
]
QUIET = ["--engine.logging.tensorboard", "false", "--engine.logging.progress", "none"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("lang-cuda")
    config = WorldConfig(
        n_source=200,
        n_target=150,
        base_vocab=300,
        target_vocab=350,
        source_steps=2,
        model=ModelConfig(size="tiny"),
        block_size=32,
    )
    return prepare_world(root, config)


def last_losses(out: Path) -> list[float]:
    rows = [json.loads(line) for f in out.rglob("metrics.jsonl") for line in f.read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.parametrize("mode", ["qlora", "full"])
def test_pretrain_steps_on_cuda(world, tmp_path: Path, mode: str) -> None:
    out = tmp_path / mode
    argv = [
        "pretrain",
        "--model",
        str(world.source_model),
        "--tokenizer",
        str(world.base_tokenizer),
        "--data",
        str(world.data["target_train"]),
        "--eval_data",
        str(world.data["target_valid"]),
        "--adapt.mode",
        mode,
        "--adapt.block_size",
        "32",
        "--adapt.embed_steps",
        "0",
        "--adapt.eval_blocks",
        "2",
        "--engine.train.max_steps",
        "3",
        "--engine.train.micro_batch_size",
        "2",
        "--engine.logging.log_every",
        "1",
        "--out",
        str(out),
        *QUIET,
    ]
    assert app.main(argv) == 0
    losses = last_losses(out)
    assert losses and all(math.isfinite(x) for x in losses)
