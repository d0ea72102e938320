"""OT speed: geomloss's SamplesLoss vs the core's hand-written Sinkhorn on the CTC+OT clouds.

Seed paper: "Pre-training for Speech Translation: CTC Meets Optimal Transport" (Le et al., arXiv 2301.11716)
computes its OT loss with geomloss (p = 2, blur 0.05, scaling 0.5). This script times
``warmstart.objectives.sinkhorn_loss`` with ``backend="geomloss"`` against ``backend="torch"`` (ours, 5 and
100 iterations at the final ε) on the same clouds — B × N speech frames vs B × M text tokens, D-dimensional,
forward + backward — as the median of paired rounds, on CPU (one thread) and on CUDA when present, and
prints the values' relative difference. Usage::

    python shared/bench/ot.py [--batch 8] [--n 200] [--m 60] [--dim 64] [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from warmstart.objectives import sinkhorn_loss


def _time(fn, device: torch.device) -> tuple[float, torch.Tensor]:  # noqa: ANN001
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    value = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, value


def measure(device: torch.device, batch: int, n: int, m: int, dim: int, rounds: int) -> dict:
    g = torch.Generator().manual_seed(0)
    x = (0.3 * torch.randn(batch, n, dim, generator=g)).to(device)
    y = (0.3 * torch.randn(batch, m, dim, generator=g) + 0.1).to(device)
    eps = 0.05**2

    def run(backend: str, iters: int = 5):  # noqa: ANN202
        def fn() -> torch.Tensor:
            xs = x.clone().requires_grad_(True)
            loss = sinkhorn_loss(xs, y, epsilon=eps, max_iter=iters, scaling=0.5, backend=backend)
            loss.sum().backward()
            return loss.detach()

        return fn

    arms = {"geomloss": run("geomloss"), "ours (5 it)": run("torch", 5), "ours (100 it)": run("torch", 100)}
    for fn in arms.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in arms}
    values: dict[str, torch.Tensor] = {}
    for r in range(rounds):
        order = list(arms) if r % 2 == 0 else list(reversed(arms))
        for name in order:
            seconds, values[name] = _time(arms[name], device)
            times[name].append(seconds)
    out = {"device": str(device), "shape": [batch, n, m, dim], "rounds": rounds}
    for name in arms:
        out[name] = {"median_ms": 1000 * statistics.median(times[name])}
    for name in ("ours (5 it)", "ours (100 it)"):
        ratios = [t / g for t, g in zip(times[name], times["geomloss"], strict=True)]
        out[name]["time_ratio_vs_geomloss"] = statistics.median(ratios)
        out[name]["max_rel_diff_vs_geomloss"] = float(
            ((values[name] - values["geomloss"]).abs() / values["geomloss"].abs()).max()
        )
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--m", type=int, default=60)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    results = [measure(d, args.batch, args.n, args.m, args.dim, args.rounds) for d in devices]
    for res in results:
        print(
            f"{res['device']}: {args.batch}×{args.n} vs {args.batch}×{args.m} points, {args.dim}-d, fwd+bwd"
        )
        for name in ("geomloss", "ours (5 it)", "ours (100 it)"):
            line = f"  {name:14s} {res[name]['median_ms']:9.1f} ms"
            if "time_ratio_vs_geomloss" in res[name]:
                line += (
                    f"   {res[name]['time_ratio_vs_geomloss']:.2f}× geomloss's time, "
                    f"values within {100 * res[name]['max_rel_diff_vs_geomloss']:.2f} %"
                )
            print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return {"results": results}


if __name__ == "__main__":
    main()
