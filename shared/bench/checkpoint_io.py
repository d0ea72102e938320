"""Checkpoint I/O: what content digests cost. A 100M-parameter fp32 state dict is saved, verified and loaded
by the engine's checkpoint writer (safetensors + xxh3-128 digests in meta.json, fsync, atomic rename) and,
as the peers, by plain ``safetensors.torch.save_file`` / ``torch.save`` (each with fsync, no digest).

    uv run python shared/bench/checkpoint_io.py [--params 100e6] [--rounds 3] [--out F.json]

Bar (issue 15): the engine's save (write + digest) costs <= 1.3x the plain safetensors save. Reported:
median seconds over rounds of each save, the digest alone, verify (sizes + digests) and load, and GB/s.
The optimizer and engine state are left empty so the comparison is of the same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from warmstart.engine.checkpoint import FILES, load_checkpoint, save_checkpoint, verify_checkpoint
from warmstart.integrity import manifest


def state_dict(params: int, chunk: int = 4_000_000) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    tensors, left, i = {}, params, 0
    while left > 0:
        n = min(chunk, left)
        tensors[f"layer{i}.weight"] = torch.randn(n, generator=g)
        left -= n
        i += 1
    return tensors


def _fsync(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def one_round(root: Path, tensors: dict[str, torch.Tensor]) -> dict[str, float]:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    plain = root / "plain.safetensors"
    pickled = root / "plain.pt"
    times = {
        "plain_safetensors_save": _timed(lambda: (save_file(tensors, str(plain)), _fsync(plain))),
        "plain_torch_save": _timed(lambda: (torch.save(tensors, pickled), _fsync(pickled))),
        "engine_save": _timed(lambda: save_checkpoint(root / "ckpt", 1, tensors, {}, {"step": 1})),
    }
    step = root / "ckpt" / "step-1"
    times["digest_only"] = _timed(lambda: manifest(step, FILES))
    os.utime(step / "meta.json")  # a fresh stamp: verify really reads (no in-process memo)
    times["engine_verify"] = _timed(lambda: verify_checkpoint(step))
    times["engine_load"] = _timed(lambda: load_checkpoint(step))
    times["plain_safetensors_load"] = _timed(lambda: load_file(str(plain)))
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=float, default=100e6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=Path("bench-out/checkpoint_io.json"))
    args = parser.parse_args(argv)
    tensors = state_dict(int(args.params))
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        rounds = [one_round(Path(tmp) / "r", tensors) for _ in range(args.rounds)]
    median = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    ratio = statistics.median(r["engine_save"] / r["plain_safetensors_save"] for r in rounds)
    result = {
        "params": int(args.params),
        "bytes": size,
        "median_s": median,
        "per_round": rounds,
        "engine_save_over_plain_save": ratio,
        "digest_gb_per_s": size / median["digest_only"] / 1e9,
        "bars": {"engine_save_over_plain_save": 1.3},
        "env": {"torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count()},
    }
    print(
        f"{size / 1e6:.0f} MB state dict ({int(args.params) / 1e6:.0f}M fp32 parameters), {args.rounds} rounds"
    )
    for key, value in median.items():
        print(f"  {key:<24}{value:8.3f} s")
    print(
        f"engine save / plain safetensors save = {ratio:.3f} (bar <= 1.3); digest {result['digest_gb_per_s']:.2f} GB/s"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
