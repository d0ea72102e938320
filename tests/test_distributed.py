"""Scale-out that really launches: ``torchrun`` (2 processes, gloo on CPU) and a simulated two-node job on a
tiny ``warmstart-lang pretrain``; ``python -m`` for every CLI. The README's commands are copied from here.

What is checked: one run directory however the job is launched (rank 0 writes config, metrics and
checkpoints; the other ranks write nothing); the data is split by rank (each of the 2 ranks takes its own
micro-batch of the global batch, 2 blocks each), so the final weights equal a 1-process run with the same
global batch (2 blocks x 2 accumulation steps) to within 1e-6, and differ from a run in which every rank
read the same blocks (a 1-process run of one rank's batch); a killed node ends the job within
``distributed.timeout`` plus start-up slack.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
TOLERANCE = 1e-6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", WARMSTART_RUNS=str(tmp_path / "runs"))
    for key in (
        "RANK",
        "LOCAL_RANK",
        "WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "SLURM_PROCID",
        "SLURM_NTASKS",
    ):
        env.pop(key, None)
    return env


@pytest.fixture(scope="module")
def lang_world(tmp_path_factory) -> dict[str, Path]:
    """Generated text, a trained tokenizer and a tiny untrained GPT-style model (lang's own builders)."""
    from warmstart_lang.adapt import save_model
    from warmstart_lang.cli import app
    from warmstart_lang.models import ModelConfig, build_model
    from warmstart_lang.tokenizer import load_tokenizer

    root = tmp_path_factory.mktemp("lang-dist")
    synth = [
        "synth",
        "--out",
        str(root / "data"),
        "--n_source",
        "120",
        "--n_target",
        "120",
        "--n_valid",
        "20",
    ]
    assert app.main(synth) == 0
    tok = [
        "tokenizer-train",
        "--data",
        str(root / "data" / "source" / "train.txt"),
        "--out",
        str(root / "tok"),
    ]
    assert app.main([*tok, "--vocab_size", "300"]) == 0
    base = load_tokenizer(root / "tok")
    save_model(
        build_model(ModelConfig(size="tiny"), len(base), eos_token_id=base.eos_token_id, seed=0),
        base,
        root / "m",
    )
    return {"root": root, "data": root / "data", "tok": root / "tok", "model": root / "m"}


def pretrain_args(world: dict[str, Path], steps: int = 4, every: int = 2) -> list[str]:
    d = world["data"]
    return [
        "pretrain",
        "--model",
        str(world["model"]),
        "--data",
        str(d / "target" / "train.jsonl"),
        "--eval_data",
        str(d / "target" / "valid.txt"),
        "--tokenizer",
        str(world["tok"]),
        "--adapt.block_size",
        "32",
        "--engine.train.max_steps",
        str(steps),
        "--engine.train.micro_batch_size",
        "2",
        "--engine.checkpoint.every",
        str(every),
        "--engine.logging.log_every",
        "1",
        "--engine.logging.tensorboard",
        "false",
        "--engine.logging.progress",
        "none",
    ]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model" / "model.safetensors"))


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=TOLERANCE, msg=key)


def _assert_one_run(run_dir: Path, steps: int, every: int) -> None:
    assert (run_dir / "config.yaml").is_file() and not list(run_dir.glob("config.resume-*"))
    rows = [line for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert len(rows) == steps, rows  # rank 0 alone writes metrics
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == sorted(f"step-{s}" for s in range(every, steps + 1, every))


@pytest.fixture(scope="module")
def single_run(lang_world, tmp_path_factory) -> Path:
    """One process with the 2-rank runs' global batch: 2 blocks x 2 accumulation steps."""
    tmp = tmp_path_factory.mktemp("single")
    out = tmp / "single"
    args = [*pretrain_args(lang_world), "--engine.train.grad_accum_steps", "2", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "warmstart_lang.cli", *args],
        capture_output=True,
        text=True,
        env=_env(tmp),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def unsplit_weights(lang_world, tmp_path_factory) -> dict[str, torch.Tensor]:
    """What 2 ranks that both read the same blocks would train: one rank's batch alone (in-process)."""
    from warmstart_lang.cli import app

    out = tmp_path_factory.mktemp("unsplit") / "run"
    assert app.main([*pretrain_args(lang_world), "--out", str(out)]) == 0
    return _weights(out)


def _assert_split_data(weights: dict, single_run: Path, unsplit: dict) -> None:
    """Equal to the 1-process run of the same global batch, and *because* the data was split by rank."""
    _assert_same_weights(weights, _weights(single_run))
    with pytest.raises(AssertionError):
        _assert_same_weights(weights, unsplit)


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.timeout(900)
def test_torchrun_two_processes_one_run_directory_same_weights(
    lang_world, single_run, unsplit_weights, tmp_path
) -> None:
    # README: torchrun --nproc_per_node 2 -m warmstart_lang.cli pretrain ... (no --out: one timestamped run)
    cmd = [
        TORCHRUN,
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
    ]
    proc = subprocess.run(
        [*cmd, "-m", "warmstart_lang.cli", *pretrain_args(lang_world)],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=800,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    runs = [p for p in (tmp_path / "runs" / "lang" / "pretrain").iterdir() if not p.name.startswith(".")]
    assert len(runs) == 1, runs  # one run, not one per rank
    _assert_one_run(runs[0], 4, 2)
    _assert_split_data(_weights(runs[0]), single_run, unsplit_weights)


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.timeout(900)
def test_two_nodes_on_one_machine_one_run_directory_same_weights(
    lang_world, single_run, unsplit_weights, tmp_path
) -> None:
    port = str(_free_port())
    out = tmp_path / "two-nodes"
    nodes = []
    for rank in (0, 1):
        # README: torchrun --nnodes 2 --node_rank R --nproc_per_node 1 --master_addr HOST --master_port PORT ...
        cmd = [TORCHRUN, "--nnodes", "2", "--node_rank", str(rank), "--nproc_per_node", "1"]
        cmd += ["--master_addr", "127.0.0.1", "--master_port", port]
        nodes.append(
            subprocess.Popen(
                [*cmd, "-m", "warmstart_lang.cli", *pretrain_args(lang_world), "--out", str(out)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=_env(tmp_path),
            )
        )
    outputs = [node.communicate(timeout=800)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    _assert_one_run(out, 4, 2)
    assert not (tmp_path / "runs").exists()  # nobody made a second, default run directory
    _assert_split_data(_weights(out), single_run, unsplit_weights)


def _workers(agent: subprocess.Popen) -> list:
    import psutil

    try:
        return psutil.Process(agent.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.timeout(900)
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "hung"])
def test_a_killed_or_hung_rank_ends_the_job_within_the_collective_timeout(lang_world, tmp_path, how) -> None:
    timeout_s = 20
    port = str(_free_port())
    out = tmp_path / "job"
    args = [*pretrain_args(lang_world, steps=2000, every=2), "--engine.distributed.timeout", str(timeout_s)]
    nodes = []
    for rank in (0, 1):
        cmd = [TORCHRUN, "--nnodes", "2", "--node_rank", str(rank), "--nproc_per_node", "1"]
        cmd += ["--master_addr", "127.0.0.1", "--master_port", port]
        nodes.append(
            subprocess.Popen(
                [*cmd, "-m", "warmstart_lang.cli", *args, "--out", str(out)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=_env(tmp_path),
            )
        )
    workers = []
    try:
        deadline = time.time() + 600
        while not (out / "checkpoints" / "step-2" / "meta.json").exists():
            assert all(n.poll() is None for n in nodes), "the job ended before a rank could be stopped"
            assert time.time() < deadline, "the job never reached its first checkpoint"
            time.sleep(0.1)
        workers = _workers(nodes[0]) + _workers(nodes[1])
        victims = _workers(nodes[1])
        assert victims, "no worker under node 1's torchrun"
        for victim in victims:  # rank 1 dies (SIGKILL) or hangs (SIGSTOP) mid-training
            victim.send_signal(how)
        stopped = time.time()
        nodes[0].wait(timeout=timeout_s + 150)
        waited = time.time() - stopped
        assert nodes[0].returncode != 0
        assert waited < timeout_s + 150, f"the surviving rank took {waited:.0f} s to stop"
    finally:
        for process in [*workers, *(_workers(n) for n in nodes)]:
            for p in process if isinstance(process, list) else [process]:
                with contextlib.suppress(Exception):
                    p.kill()
        for node in nodes:
            node.kill()
            node.wait()


@pytest.mark.slow
def test_python_dash_m_runs_every_cli() -> None:
    from importlib.metadata import entry_points

    modules = ["warmstart"] + sorted(ep.value.split(":")[0] for ep in entry_points(group="warmstart.apps"))
    for module in modules:
        proc = subprocess.run(
            [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, (module, proc.stderr[-2000:])
        assert "usage:" in proc.stdout and ("warmstart" in proc.stdout), module
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "warmstart_lang.cli",
            "pretrain",
            "--engine.train.max_steps",
            "-5",
            "--model",
            "x",
            "--data",
            "x",
            "--eval_data",
            "x",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "engine.train.max_steps=-5" in bad.stderr  # it ran: a real exit code


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.timeout(900)
def test_srun_tasks_share_one_run_directory_same_weights(
    lang_world, single_run, unsplit_weights, tmp_path
) -> None:
    """Two tasks as ``srun`` starts them (SLURM's variables, no torchrun), without --out."""
    port, job = str(_free_port()), str(40000 + os.getpid() % 10000)
    tasks = []
    for rank in (0, 1):
        env = _env(tmp_path)
        env.update(
            SLURM_NTASKS="2",
            SLURM_NTASKS_PER_NODE="2",
            SLURM_NNODES="1",
            SLURM_PROCID=str(rank),
            SLURM_LOCALID=str(rank),
            SLURM_NODEID="0",
            SLURM_JOB_ID=job,
            SLURM_STEP_ID="0",
            SLURM_JOB_NAME="warmstart",
            SLURM_NODELIST="127.0.0.1",
            MASTER_PORT=port,
        )
        # README: srun python -m warmstart_lang.cli pretrain ...
        tasks.append(
            subprocess.Popen(
                [sys.executable, "-m", "warmstart_lang.cli", *pretrain_args(lang_world)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
            )
        )
    outputs = [task.communicate(timeout=800)[0] for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    runs = [p for p in (tmp_path / "runs" / "lang" / "pretrain").iterdir() if not p.name.startswith(".")]
    assert len(runs) == 1, runs
    _assert_one_run(runs[0], 4, 2)
    _assert_split_data(_weights(runs[0]), single_run, unsplit_weights)
