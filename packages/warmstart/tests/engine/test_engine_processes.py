"""The engine's guarantees that need real processes: SIGKILL + resume is exact; 2-process DDP on gloo."""

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


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.timeout(400)
def test_two_process_ddp_on_gloo(tmp_path: Path) -> None:
    run_dir = tmp_path / "ddp"
    proc = subprocess.run(
        [
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
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=360,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = _results(proc.stdout)
    assert set(results) == {0, 1}
    assert results[0] == results[1], "ranks ended with different weights"
    assert results[0][0] == 10
    # only rank 0 writes: one line per log step, one TensorBoard event file, one set of checkpoints
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2, lines
    assert len(list((run_dir / "tensorboard").glob("events.*"))) == 1
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-10", "step-5"]
