"""The engine's CUDA path: a bf16-mixed step (autocast on, fp32 master weights), the fused AdamW kernel
picked on CUDA and equal to the unfused one, and light_fit on the GPU. Skipped without CUDA; the CPU
twins (fused AdamW chosen on CPU, fp32 on CPU) run everywhere."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from warmstart.engine import Engine, quick_config
from warmstart.engine.light import light_fit
from warmstart.optim import OptimizerConfig, build_optimizer

no_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class Regression:
    """y = x·w on a fixed batch; records the dtype the model computes in."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 1))
        self.target = torch.randn(16, 1)
        self.seen: set[torch.dtype] = set()

    def loss(self, batch: dict[str, torch.Tensor]):
        out = self.model(batch["x"])  # (B, 1)
        self.seen.add(out.dtype)
        loss = (out.float() - batch["x"] @ self.target.to(batch["x"].device)).pow(2).mean()
        return loss, {"samples": batch["x"].shape[0]}


def batches(n: int = 64) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [{"x": torch.randn(8, 16, generator=g)} for _ in range(n)]


class Stream:
    """Ready micro-batches as a plain iterable (a list would be taken for a map-style dataset)."""

    def __init__(self, items: list) -> None:
        self.items = items

    def __iter__(self):
        return iter(self.items)


def adamw_pair(device: str) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer, list, list]:
    torch.manual_seed(0)
    a = [
        torch.randn(33, 7, device=device, requires_grad=True),
        torch.randn(5, device=device, requires_grad=True),
    ]
    b = [p.detach().clone().requires_grad_() for p in a]
    fused = build_optimizer(OptimizerConfig(lr=1e-2, weight_decay=0.1), a)
    plain = build_optimizer(OptimizerConfig(lr=1e-2, weight_decay=0.1, fused=False), b)
    return fused, plain, a, b


def test_fused_adamw_is_chosen_on_cpu_and_matches_the_loop_kernel() -> None:
    fused, plain, a, b = adamw_pair("cpu")
    assert fused.defaults["fused"] is True and not plain.defaults["fused"]
    for _ in range(3):
        for p, q in zip(a, b, strict=True):
            g = torch.randn_like(p)
            p.grad, q.grad = g.clone(), g.clone()
        fused.step()
        plain.step()
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_engine_on_cpu_is_fp32() -> None:
    task = Regression()
    cfg = quick_config(steps=3, micro_batch_size=8, lr=1e-2)
    cfg.distributed.accelerator = "cpu"
    summary = Engine(cfg, None).fit(task, Stream(batches(3)))
    assert summary.steps == 3 and task.seen == {torch.float32}


@pytest.mark.cuda
@no_cuda
def test_fused_adamw_on_cuda_matches_the_loop_kernel() -> None:
    fused, plain, a, b = adamw_pair("cuda")
    assert fused.defaults["fused"] is True
    for _ in range(3):
        for p, q in zip(a, b, strict=True):
            g = torch.randn_like(p)
            p.grad, q.grad = g.clone(), g.clone()
        fused.step()
        plain.step()
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
@no_cuda
def test_bf16_engine_step_on_cuda_keeps_fp32_weights_and_learns() -> None:
    task = Regression()
    cfg = quick_config(steps=60, micro_batch_size=8, lr=1e-2)  # precision auto: bf16-mixed on CUDA
    data = batches(60)
    with torch.no_grad():
        before = float(task.loss({"x": data[0]["x"]})[0])
    task.seen.clear()
    summary = Engine(cfg, None).fit(task, Stream(data))
    assert summary.steps == 60 and math.isfinite(summary.final_metrics["loss"])
    assert torch.bfloat16 in task.seen  # the forward ran under bf16 autocast
    assert all(p.dtype == torch.float32 for p in task.model.parameters())  # master weights stay fp32
    assert summary.final_metrics["loss"] < 0.5 * before


@pytest.mark.cuda
@no_cuda
def test_light_fit_trains_on_cuda() -> None:
    task = Regression()
    losses = light_fit(task.model, lambda b: task.loss(b)[0], batches(40), steps=40, lr=1e-2, device="cuda")
    assert next(task.model.parameters()).is_cuda
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]


@pytest.mark.cuda
@no_cuda
def test_fsdp_on_one_gpu_stops_and_resumes_to_the_uninterrupted_weights(tmp_path) -> None:
    """FSDP2 on one GPU (NCCL) through a sharded (DCP) save -> stop -> resume; the 2-process CPU/gloo run of
    the same path is test_engine_processes.py's FSDP2 test."""
    from warmstart.engine.checkpoint import consolidate

    def run(out, stop_at=None, resume=None):
        cfg = quick_config(steps=6, micro_batch_size=8, lr=1e-2)
        cfg.distributed.strategy = "fsdp"
        cfg.distributed.devices = 1
        cfg.checkpoint.every = 2
        cfg.checkpoint.save_final = True
        cfg.train.stop_at = stop_at
        Engine(cfg, out).fit(Regression(), Stream(batches(12)), resume_from=resume)

    run(tmp_path / "whole")
    run(tmp_path / "cut", stop_at=4)
    run(tmp_path / "cut", resume=tmp_path / "cut")
    a = consolidate(tmp_path / "whole" / "checkpoints" / "step-6")["model"]
    b = consolidate(tmp_path / "cut" / "checkpoints" / "step-6")["model"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
