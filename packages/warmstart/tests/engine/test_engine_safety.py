"""No run loses work or trusts bad bytes: digests, fallback, validation, config changes, metrics after a
resume, the loss-explosion guard, a full disk, torch's weights-only refusal, the run lock, trackers and
data-loader workers. Each test names the failure it guards against (issue 15)."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from warmstart.engine import Engine, EngineConfig, ResumableLoader, load_checkpoint
from warmstart.engine.checkpoint import complete_checkpoints, resolve_checkpoint, verify_checkpoint
from warmstart.engine.validate import validate_config
from warmstart.errors import CheckpointError, ConfigError, NonFiniteError


class Recorder:
    """Linear regression that records each step's loss (to check the logged means)."""

    def __init__(self, scale_from: int | None = None) -> None:
        torch.manual_seed(0)
        self.model = nn.Linear(4, 1)
        self.losses: list[float] = []
        self.scale_from = scale_from
        self.evaluated = 0

    def loss(self, batch):
        x, y = batch
        loss = nn.functional.mse_loss(self.model(x).squeeze(-1), y)
        self.losses.append(float(loss))
        if self.scale_from is not None and len(self.losses) >= self.scale_from:
            loss = loss * 1e7  # finite, and far above its running median
        return loss, {}

    def evaluate(self):
        self.evaluated += 1
        return {"mse": self.losses[-1]}


def data(n: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    return [(x[i], y[i]) for i in range(n)]


def config(steps: int = 6, every: int = 2) -> EngineConfig:
    cfg = EngineConfig()
    cfg.train.max_steps = steps
    cfg.train.micro_batch_size = 4
    cfg.checkpoint.every = every
    cfg.checkpoint.keep_last = 0
    cfg.logging.progress = "none"
    cfg.logging.tensorboard = False
    cfg.logging.log_every = 1
    cfg.optimizer.lr = 0.05
    return cfg


def weights(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def flip_byte(file: Path, offset_from_end: int = 9) -> None:
    raw = bytearray(file.read_bytes())
    raw[-offset_from_end] ^= 0xFF  # inside the tensor bytes: same size, other content
    file.write_bytes(bytes(raw))


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.pt"])
def test_flipped_bytes_are_refused_and_the_run_falls_back(tmp_path: Path, name: str, caplog) -> None:
    Engine(config(), tmp_path).fit(Recorder(), data())
    newest = tmp_path / "checkpoints" / "step-6"
    flip_byte(newest / name)
    reason = verify_checkpoint(newest)
    assert reason is not None and name in reason and "digest" in reason
    with pytest.raises(CheckpointError, match=f"{name}.*digest"):
        load_checkpoint(newest)
    with caplog.at_level(logging.WARNING):
        chosen = resolve_checkpoint(tmp_path)
    assert chosen.name == "step-4"
    assert "skipped checkpoint" in caplog.text and "step-6" in caplog.text and name in caplog.text
    meta = json.loads((newest / "meta.json").read_text())
    assert meta["digest"] == "xxh3_128" and len(meta["files"][name]["digest"]) == 32


def test_resume_from_a_run_skips_a_corrupt_newest_checkpoint(tmp_path: Path) -> None:
    whole = Recorder()
    Engine(config(8), tmp_path / "whole").fit(whole, data())
    cfg = config(8)
    cfg.train.stop_at = 6
    Engine(cfg, tmp_path / "cut").fit(Recorder(), data())
    flip_byte(tmp_path / "cut" / "checkpoints" / "step-6" / "model.safetensors")
    resumed = Recorder()
    summary = Engine(config(8), tmp_path / "cut").fit(resumed, data(), resume_from=tmp_path / "cut")
    assert summary.start_step == 4 and summary.resumed_from.endswith("step-4")
    assert torch.equal(weights(whole.model), weights(resumed.model))


def test_a_verified_but_refused_pickle_gives_way_and_torchs_advice_is_not_repeated(tmp_path: Path) -> None:
    Engine(config(), tmp_path).fit(Recorder(), data())
    newest = tmp_path / "checkpoints" / "step-6"
    # a pickle with a custom class (what a foreign or tampered file holds), digests made to match
    script = textwrap.dedent(
        f"""
        import torch
        class Payload:
            pass
        torch.save({{"state": Payload()}}, {str(newest / "optimizer.pt")!r})
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    meta = json.loads((newest / "meta.json").read_text())
    from warmstart.integrity import manifest

    meta["files"] = manifest(newest, ["model.safetensors", "optimizer.pt", "state.pt"])
    (newest / "meta.json").write_text(json.dumps(meta))
    assert verify_checkpoint(newest) is None
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(newest)
    text = str(info.value)
    assert "optimizer.pt" in text and "weights_only=False" not in text and "trust" not in text
    summary = Engine(config(), tmp_path).fit(Recorder(), data(), resume_from=tmp_path)
    assert summary.start_step == 4  # the refused newest one was skipped


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("logging.log_every", 0, "engine.logging.log_every=0: must be an integer >= 1"),
        ("train.micro_batch_size", 0, "engine.train.micro_batch_size=0"),
        ("train.max_steps", -5, "engine.train.max_steps=-5"),
        ("optimizer.lr", -1.0, "engine.optimizer.lr=-1.0: must be a finite number >= 0"),
        ("checkpoint.every", -1, "engine.checkpoint.every=-1: must be an integer >= 0"),
        ("train.grad_clip_norm", 0.0, "engine.train.grad_clip_norm=0.0"),
        ("distributed.timeout", 0.0, "engine.distributed.timeout=0.0"),
        ("train.nonfinite", "ignore", "engine.train.nonfinite='ignore': must be one of"),
        ("schedule.warmup_steps", 99, "engine.schedule.warmup_steps=99"),
    ],
)
def test_every_bad_value_is_one_error_naming_field_value_and_range(
    tmp_path: Path, field: str, value, needle: str
) -> None:
    cfg = config()
    section, name = field.split(".")
    setattr(getattr(cfg, section), name, value)
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError) as info:
        Engine(cfg, run_dir).fit(Recorder(), data())
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert not run_dir.exists()  # nothing written before the check


def test_lr_zero_is_a_warning(caplog) -> None:
    cfg = config()
    cfg.optimizer.lr = 0.0
    assert any("optimizer.lr=0" in w for w in validate_config(cfg))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("train.micro_batch_size", 2),
        ("optimizer.lr", 0.01),
        ("train.seed", 3),
        ("train.max_steps", 12),
        ("schedule.name", "constant"),
    ],
)
def test_resume_with_a_changed_trajectory_is_refused_unless_allowed(
    tmp_path: Path, field: str, value, caplog
) -> None:
    cut = config(8)
    cut.train.stop_at = 4
    Engine(cut, tmp_path).fit(Recorder(), data())
    changed = config(8)
    section, name = field.split(".")
    setattr(getattr(changed, section), name, value)
    with pytest.raises(ConfigError, match=rf"engine\.{field}: .* -> "):
        Engine(changed, tmp_path).fit(Recorder(), data(), resume_from=tmp_path)
    changed.allow_config_change = True
    with caplog.at_level(logging.WARNING):
        Engine(changed, tmp_path).fit(Recorder(), data(), resume_from=tmp_path)
    assert f"resume changes engine.{field}" in caplog.text


def test_metrics_are_truncated_on_resume_and_the_first_window_averages_its_own_steps(tmp_path: Path) -> None:
    cut = config(12, every=5)
    cut.train.stop_at = 8
    cut.checkpoint.save_final = False  # as after a kill at step 8: the newest checkpoint is step 5
    Engine(cut, tmp_path).fit(Recorder(), data())
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 9))
    cfg = config(12, every=5)
    cfg.logging.log_every = 4
    task = Recorder()
    Engine(cfg, tmp_path).fit(task, data(), resume_from=tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 8, 12] and len(set(steps)) == len(steps)
    first_window = next(r for r in rows if r["step"] == 8)
    assert first_window["loss"] == pytest.approx(sum(task.losses[:3]) / 3, rel=1e-6)  # steps 6, 7, 8 only


def test_an_exploding_finite_loss_stops_before_evaluation(tmp_path: Path) -> None:
    task = Recorder(scale_from=10)
    with pytest.raises(NonFiniteError, match=r"step 10 .*exploded.*explode_factor"):
        Engine(config(30), tmp_path).fit(task, data())
    assert task.evaluated == 0
    huge = config(30)
    huge.optimizer.lr = 1e9
    huge.optimizer.name = "sgd"
    huge.train.grad_clip_norm = None
    task = Recorder()
    with pytest.raises(NonFiniteError, match="diverged at step"):
        Engine(huge, tmp_path / "lr").fit(task, data())
    assert task.evaluated == 0


def test_a_full_disk_is_one_line_and_the_previous_checkpoint_stays(tmp_path: Path, monkeypatch) -> None:
    from warmstart.engine import checkpoint

    real = checkpoint._torch_save
    calls = {"n": 0}

    def full_disk(obj, path):
        calls["n"] += 1
        if calls["n"] > 2:  # the first checkpoint (2 pickles) fits, the second does not
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(obj, path)

    monkeypatch.setattr(checkpoint, "_torch_save", full_disk)
    with pytest.raises(CheckpointError) as info:
        Engine(config(), tmp_path).fit(Recorder(), data())
    text = str(info.value)
    assert "\n" not in text and "No space left on device" in text and "step-4" in text
    assert "step-2" in text and "is intact" in text and "MB free" in text
    assert [p.name for p in complete_checkpoints(tmp_path / "checkpoints")] == ["step-2"]
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))
    assert verify_checkpoint(tmp_path / "checkpoints" / "step-2") is None


def test_a_second_writer_is_refused_with_the_holders_pid_and_host(tmp_path: Path) -> None:
    import socket

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from warmstart.engine import lock; lock.acquire(sys.argv[1]); "
            "print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CheckpointError) as info:
            Engine(config(), tmp_path).fit(Recorder(), data())
        text = str(info.value)
        assert f"PID {holder.pid}" in text and socket.gethostname() in text
        assert not (tmp_path / "checkpoints").exists()
    finally:
        holder.kill()
        holder.wait()
    Engine(config(), tmp_path).fit(Recorder(), data())  # the kernel dropped the dead holder's lock


def test_trackers_csv_and_tensorboard_get_metrics_and_the_config(tmp_path: Path) -> None:
    cfg = config(6)
    cfg.logging.tensorboard = True
    cfg.logging.loggers = ["tensorboard", "csv"]
    (tmp_path / "config.yaml").write_text("engine:\n  optimizer:\n    lr: 0.05\nmodel: toy\n")
    Engine(cfg, tmp_path).fit(Recorder(), data())
    import csv

    with open(tmp_path / "csv" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows if r.get("loss")] == list(range(1, 7))
    hparams = (tmp_path / "csv" / "hparams.yaml").read_text()
    assert "model: toy" in hparams and "engine.optimizer.lr: 0.05" in hparams
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == list(range(1, 7))


@pytest.mark.slow
def test_wandb_offline_tracker(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = config(4)
    cfg.logging.loggers = ["wandb"]
    Engine(cfg, tmp_path).fit(Recorder(), data())
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert runs and any(f.suffix == ".wandb" for f in runs[0].iterdir())


def test_workers_give_the_same_batches_and_resume_exactly() -> None:
    from warmstart.engine.data import WorkerLoader

    dataset = [torch.tensor([float(i)]) for i in range(22)]
    plain = iter(ResumableLoader(dataset, 4, seed=5))
    expected = [next(plain).flatten().tolist() for _ in range(12)]  # 5 batches an epoch: crosses two
    loader = WorkerLoader(dataset, 4, num_workers=2, seed=5)
    it = iter(loader)
    head = [next(it).flatten().tolist() for _ in range(7)]
    state = loader.state_dict()
    again = WorkerLoader(dataset, 4, num_workers=2, seed=5)
    again.load_state_dict(state)
    tail = [b.flatten().tolist() for b, _ in zip(again, range(5), strict=False)]
    assert head + tail == expected


def test_engine_with_workers_matches_the_in_process_loader(tmp_path: Path) -> None:
    results = []
    for workers in (0, 2):
        cfg = config(6)
        cfg.train.num_workers = workers
        task = Recorder()
        Engine(cfg).fit(task, data())
        results.append(weights(task.model))
    assert torch.equal(results[0], results[1])


def test_sharded_checkpoint_verifies_refuses_altered_shards_and_consolidates(tmp_path: Path) -> None:
    """The sharded (DCP) layout FSDP writes, here from one process: digests of every shard, a flipped
    byte refused by name, a plain load refused with the option to pass, and the shards read back whole."""
    from warmstart.engine.checkpoint import consolidate, read_meta, save_sharded_checkpoint

    model = nn.Linear(4, 3)
    optim = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    optim.step()
    root = tmp_path / "checkpoints"
    app_state = {"model": model.state_dict(), "optim": optim.state_dict()}
    path = save_sharded_checkpoint(root, 3, app_state, {"step": 3}, writer=True, barrier=lambda: None)
    meta = read_meta(path)
    assert meta["format"] == "sharded" and "shards/.metadata" in meta["files"] and "state.pt" in meta["files"]
    assert verify_checkpoint(path) is None and not list(root.glob(".tmp-*"))
    with pytest.raises(CheckpointError, match="is sharded.*strategy fsdp"):
        load_checkpoint(path)
    full = consolidate(path)
    for key, value in model.state_dict().items():
        assert torch.equal(full["model"][key], value), key
    shard = next(name for name in meta["files"] if name.endswith(".distcp"))
    data = bytearray((path / shard).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / shard).write_bytes(bytes(data))
    assert shard in (verify_checkpoint(path) or "")


def test_quick_config_is_the_one_quiet_builder() -> None:
    from warmstart.engine import quick_config

    cfg = quick_config(50, 8, 1e-3, 2)
    assert (cfg.train.max_steps, cfg.train.micro_batch_size, cfg.optimizer.lr, cfg.train.seed) == (
        50,
        8,
        1e-3,
        2,
    )
    assert cfg.schedule.warmup_steps == 5 and cfg.logging.log_every == 10
    assert not cfg.logging.tensorboard and cfg.logging.loggers == [] and cfg.logging.progress == "none"
    assert not cfg.checkpoint.save_final
    variant = quick_config(50, 8, 1e-3, warmup=0, log_every=7, weight_decay=0.05)
    assert (variant.schedule.warmup_steps, variant.logging.log_every, variant.optimizer.weight_decay) == (
        0,
        7,
        0.05,
    )
    assert validate_config(variant) == []
