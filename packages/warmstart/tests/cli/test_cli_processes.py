"""Preemption through the real CLI: SIGTERM/SIGINT save a checkpoint, print one line, exit 143/130, and the
resumed run ends with weights bit-identical to an uninterrupted one."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

CLI = Path(__file__).with_name("toy_cli.py")
RESULT = re.compile(r"RESULT rank=(\d+) steps=(\d+) digest=(\w+) start=(\d+)")
OPTIONS = [
    "--engine.train.max_steps",
    "30",
    "--engine.train.micro_batch_size",
    "4",
    "--engine.train.grad_accum_steps",
    "2",
    "--engine.checkpoint.every",
    "10",
    "--engine.checkpoint.keep_last",
    "0",
    "--engine.logging.log_every",
    "5",
    "--engine.logging.tensorboard",
    "false",
    "--engine.logging.progress",
    "none",
    "--engine.optimizer.lr",
    "1e-3",
    "--engine.schedule.warmup_steps",
    "3",
]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", WARMSTART_RUNS=str(tmp_path / "runs"))
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        env.pop(key, None)
    return env


def _resume(run_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """``train --resume RUN_DIR`` in a fresh process, to its end."""
    return subprocess.run(
        [sys.executable, str(CLI), "train", "--resume", str(run_dir), *OPTIONS],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=300,
    )


def _interrupt(tmp_path: Path, sig: signal.Signals) -> tuple[subprocess.CompletedProcess, Path, int]:
    run_dir = tmp_path / f"victim-{sig.name}"
    victim = subprocess.Popen(
        [sys.executable, str(CLI), "train", "--out", str(run_dir), "--sleep", "0.05", *OPTIONS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(tmp_path),
    )
    deadline = time.time() + 240
    while not (run_dir / "checkpoints" / "step-10" / "meta.json").exists():
        assert victim.poll() is None, victim.communicate()
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    victim.send_signal(sig)
    out, err = victim.communicate(timeout=120)
    done = subprocess.CompletedProcess(victim.args, victim.returncode, out, err)
    line = err.strip().splitlines()[-1]
    match = re.fullmatch(
        rf"warmstart-toy train: stopped at step (\d+) \({sig.name}\); resume with --resume (.+)", line
    )
    assert match, err[-2000:]
    assert Path(match.group(2)) == run_dir
    return done, run_dir, int(match.group(1))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigterm_saves_exits_143_and_resumes_bit_identical(tmp_path: Path) -> None:
    straight = subprocess.Popen(
        [sys.executable, str(CLI), "train", "--out", str(tmp_path / "straight"), *OPTIONS],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(tmp_path),
    )
    done, run_dir, step = _interrupt(tmp_path, signal.SIGTERM)
    assert done.returncode == 143
    assert 10 <= step < 30, "stopped too late to test anything"
    assert (run_dir / "checkpoints" / f"step-{step}" / "meta.json").is_file()  # the step it stopped at
    assert "Traceback" not in done.stderr
    resumed = _resume(run_dir, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rank, steps, digest, start = RESULT.search(resumed.stdout).groups()
    assert int(start) == step and int(steps) == 30
    out, _ = straight.communicate(timeout=300)
    assert straight.returncode == 0, out[-3000:]
    assert RESULT.search(out).group(3) == digest
    a = load_file(str(tmp_path / "straight" / "checkpoints" / "step-30" / "model.safetensors"))
    b = load_file(str(run_dir / "checkpoints" / "step-30" / "model.safetensors"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [r["step"] for r in rows if "loss" in r]
    assert logged == sorted(set(logged)) and logged[-1] == 30  # no step twice after the resume


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_sigint_saves_and_exits_130(tmp_path: Path) -> None:
    done, run_dir, step = _interrupt(tmp_path, signal.SIGINT)
    assert done.returncode == 130
    assert (run_dir / "checkpoints" / f"step-{step}" / "meta.json").is_file()
    assert "Traceback" not in done.stderr


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_second_cli_writer_is_refused_in_one_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "busy"
    first = subprocess.Popen(
        [sys.executable, str(CLI), "train", "--out", str(run_dir), "--sleep", "2", *OPTIONS],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(tmp_path),
    )
    try:
        deadline = time.time() + 240
        while not (run_dir / ".lock").exists() or not (run_dir / ".lock").read_text():
            assert first.poll() is None and time.time() < deadline
            time.sleep(0.05)
        second = _resume(run_dir, tmp_path)
        assert second.returncode == 2
        line = second.stderr.strip().splitlines()[-1]
        assert f"is in use by PID {first.pid} on host" in line and "Traceback" not in second.stderr
    finally:
        first.kill()
        first.wait()
