"""The engine's guarantees that need real processes: SIGKILL + resume is exact, on one process and under
2-process FSDP2 on gloo with sharded (DCP) checkpoints."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

SCRIPT = Path(__file__).with_name("tiny_run.py")
RESULT = re.compile(r"RESULT rank=(\d+) steps=(\d+) digest=(\w+)")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _results(output: str) -> dict[int, tuple[int, str]]:
    return {int(r): (int(s), d) for r, s, d in RESULT.findall(output)}


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    straight = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(tmp_path / "straight")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
    )
    killed_dir = tmp_path / "killed"
    victim = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(killed_dir), "--sleep", "0.05"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
    )
    deadline = time.time() + 240
    while not (killed_dir / "checkpoints" / "step-10" / "meta.json").exists():
        assert victim.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not (killed_dir / "checkpoints" / "step-30").exists(), "killed too late to test anything"

    resumed = subprocess.run(
        [sys.executable, str(SCRIPT), str(killed_dir), "--resume"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    start = int(re.search(r"start=(\d+)", resumed.stdout).group(1))
    assert start in (10, 15), f"resumed at step {start}, expected the last complete checkpoint"
    out, _ = straight.communicate(timeout=300)
    assert straight.returncode == 0, out
    assert _results(resumed.stdout)[0] == _results(out)[0]
    a = load_file(str(tmp_path / "straight" / "checkpoints" / "step-30" / "model.safetensors"))
    b = load_file(str(killed_dir / "checkpoints" / "step-30" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].equal(b[key]), key


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        str(SCRIPT),
        str(run_dir),
        "--steps",
        "10",
        "--strategy",
        "fsdp",
        *extra,
    ]


def _kill_tree(agent: subprocess.Popen) -> None:
    import psutil

    for child in psutil.Process(agent.pid).children(recursive=True):
        child.kill()
    agent.kill()
    agent.wait()


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.timeout(600)
def test_fsdp2_on_gloo_sharded_checkpoint_killed_then_resumed_matches_uninterrupted(tmp_path: Path) -> None:
    """FSDP2 (fully_shard) on 2 CPU processes: each rank writes its shard through DCP; SIGKILL after the
    first checkpoint, resume (DCP load into the sharded model and optimizer) -> the uninterrupted weights.

    The uninterrupted run also carries the 2-process checks (strategy-independent; DDP's are in the
    repository's tests/test_distributed.py): both ranks end with the same weights, and rank 0 alone writes
    metrics, TensorBoard events and checkpoints."""
    from warmstart.engine.checkpoint import consolidate, read_meta

    straight = subprocess.Popen(
        _torchrun(tmp_path / "straight"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
    )
    killed_dir = tmp_path / "killed"
    victim = subprocess.Popen(
        _torchrun(killed_dir, "--sleep", "0.3"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
    )
    try:
        deadline = time.time() + 400
        while not (killed_dir / "checkpoints" / "step-5" / "meta.json").exists():
            assert victim.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
    finally:
        _kill_tree(victim)  # the agent and both workers, SIGKILL
    assert not (killed_dir / "checkpoints" / "step-10").exists(), "killed too late to test anything"
    step5 = killed_dir / "checkpoints" / "step-5"
    meta = read_meta(step5)
    assert meta["format"] == "sharded" and not (step5 / "model.safetensors").exists()  # nothing gathered
    assert {"shards/.metadata", "shards/__0_0.distcp", "shards/__1_0.distcp"} <= set(meta["files"])
    resumed = subprocess.run(
        _torchrun(killed_dir, "--resume"), capture_output=True, text=True, env=_env(), timeout=400
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert re.search(r"RESULT rank=0 steps=10 \w+=\w+ start=5", resumed.stdout), resumed.stdout[-2000:]
    out, _ = straight.communicate(timeout=400)
    assert straight.returncode == 0, out[-3000:]
    results = _results(out)
    assert set(results) == {0, 1} and results[0] == results[1], "ranks ended with different weights"
    assert _results(resumed.stdout) == results  # both ranks: the same full weights (sha256)
    run_dir = tmp_path / "straight"  # only rank 0 writes: one line per log step, one event file, one set
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
    assert len(list((run_dir / "tensorboard").glob("events.*"))) == 1
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-10", "step-5"]
    a = consolidate(tmp_path / "straight" / "checkpoints" / "step-10")
    b = consolidate(killed_dir / "checkpoints" / "step-10")
    for key in a["model"]:
        assert a["model"][key].equal(b["model"][key]), key
