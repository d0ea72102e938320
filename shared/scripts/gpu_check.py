"""Every app's GPU pipeline in one prepared check: a few hundred bf16 steps each, one JSON, ≤ 8 min.

    uv run python shared/scripts/gpu_check.py                 # on a CUDA machine: runs, writes the JSON
    uv run python shared/scripts/gpu_check.py --dry-run       # anywhere: plan, recipes parse, meta builds
    uv run python shared/scripts/gpu_check.py --smoke --only rl   # CPU, tiny sizes: the wiring end to end

Each app's check lives in ``shared/scripts/gpu/<app>.py`` (lang: a ~100M Llama, full fine-tune and QLoRA;
eo: SatMAE++ and Prithvi base-size MAE steps; 3d: gsplat against the pure-torch rasterizer, image and
gradient parity, plus InstantSplat on a 3-view 256² scene against the paper's 40 s; speech: conformer
CTC+OT steps; rl: IDM + BC on Atari Breakout at 84 px; code: sampling and B-Coder steps). On a GPU each
app runs in its own process with a wall-clock budget, so a crash, an out-of-memory or a hang in one app
is recorded and the others still run. The JSON (``--json``) holds, per app, steps/s or tokens/s, peak GPU
memory, parity errors, and pass/fail against the thresholds written in the app modules.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

APPS = ("lang", "eo", "3d", "speech", "rl", "code")
TOTAL_BUDGET_S = 480  # the 8 minutes, wall, for every app together
PREPARE_BUDGET_S = 480  # gsplat's first CUDA compile (not part of the 8 minutes; cached afterwards)
GRACE_S = 15  # after its budget, an app gets this long to write its partial report
SMOKE_SLACK = 10  # --smoke runs on CPU: each app gets 10x its GPU budget, the total is not capped


def load_check(app: str) -> Any:
    """The ``CHECK`` of ``shared/scripts/gpu/<app>.py`` (3d's module is ``three_d``)."""
    import importlib

    module = importlib.import_module(f"gpu.{'three_d' if app == '3d' else app}")
    return module.CHECK


def dry_run(app: str) -> dict[str, Any]:
    """Plan, API names resolved, recipes parsed by the app's own CLI, models built on the meta device."""
    import torch
    from gpu.common import parse_recipe, resolve

    check = load_check(app)
    report: dict[str, Any] = {"plan": check.plan, "budget_s": check.budget_s, "errors": []}
    for name in check.apis:
        try:
            resolve(name)
        except Exception as exc:  # noqa: BLE001 - every failure is reported, none stops the others
            report["errors"].append(f"api {name}: {type(exc).__name__}: {exc}")
    report["recipes"] = {}
    for i, recipe in enumerate(check.recipes):
        try:
            parsed = parse_recipe(recipe)
            report["recipes"][
                f"{i}: {recipe.command} {recipe.path or ''} {' '.join(map(str, recipe.required))}"
            ] = sorted(parsed)
        except BaseException as exc:  # noqa: BLE001 - jsonargparse may raise SystemExit
            report["errors"].append(f"recipe {recipe.path} ({recipe.command}): {type(exc).__name__}: {exc}")
    report["models"] = {}
    try:
        builders = check.models()
    except Exception as exc:  # noqa: BLE001
        builders = {}
        report["errors"].append(f"models: {type(exc).__name__}: {exc}")
    for name, build in builders.items():
        try:
            with torch.device("meta"):
                model = build()
            report["models"][name] = sum(p.numel() for p in model.parameters())
        except Exception as exc:  # noqa: BLE001
            report["errors"].append(f"model {name}: {type(exc).__name__}: {exc}")
    report["limits"] = [f"{lim.metric} {lim.op} {lim.value:g}" for lim in check.limits]
    report["passed"] = not report["errors"]
    return report


def run_app(app: str, out: Path, smoke: bool) -> dict[str, Any]:
    """Run one app's check in this process: metrics, peak memory, thresholds judged."""
    import torch
    from gpu.common import COMPLETED, Context, peak_memory_gib, reset_peak_memory

    check = load_check(app)
    device = "cuda" if torch.cuda.is_available() and not smoke else "cpu"
    ctx = Context(out=out / app, smoke=smoke, device=device)
    if ctx.out.exists():
        shutil.rmtree(ctx.out)  # the check's own working folder: every command starts a fresh run in it
    ctx.out.mkdir(parents=True)
    reset_peak_memory()
    start = time.perf_counter()
    report: dict[str, Any] = {"device": device, "smoke": smoke}
    try:
        report["metrics"] = check.run(ctx)
        report["error"] = None
    except BaseException as exc:  # noqa: BLE001 - recorded; the driver carries on with the next app
        report["metrics"] = {}
        report["error"] = f"{type(exc).__name__}: {exc}"
        report["traceback"] = traceback.format_exc()[-4000:]
    report["engine_runs"] = COMPLETED  # in order; what finished before a failure or a timeout
    report["seconds"] = time.perf_counter() - start
    report["peak_memory_gib"] = peak_memory_gib()
    judged = [lim.judge(report["metrics"]) for lim in check.limits] if not smoke else []
    report["checks"] = judged
    report["passed"] = report["error"] is None and all(c["passed"] for c in judged)
    return report


def _budget_spent(signum: int, frame: Any) -> None:
    raise TimeoutError("the driver's budget for this app ran out")


def run_child(app: str, out: Path, smoke: bool, budget: float, prepare: bool = False) -> dict[str, Any]:
    """``run_app`` (or the app's prepare step) in a fresh process, killed after ``budget`` seconds (a hang
    or a crash stays contained)."""
    stem = f"{app}.prepare" if prepare else app
    out.mkdir(parents=True, exist_ok=True)
    part = out / f"{stem}.part.json"
    part.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", app, "--out", str(out)]
    cmd += ["--smoke"] if smoke else []
    cmd += ["--prepare"] if prepare else []
    start = time.perf_counter()
    log = (out / f"{stem}.log").open("w")
    # its own session, so a timeout ends the app's helper processes (sandbox workers, env pools) too
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        code: int | None = proc.wait(timeout=budget)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the child writes what it has, then stops
        try:
            proc.wait(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        code = None
    finally:
        log.close()
    if part.is_file():
        report = json.loads(part.read_text())
        if code is None:
            report["error"] = f"timed out after {budget:.0f} s ({report.get('error')})"
            report["passed"] = False
    else:
        reason = f"timed out after {budget:.0f} s" if code is None else f"process exited with {code}"
        report = {"metrics": {}, "error": reason, "checks": [], "passed": False, "peak_memory_gib": None}
    report["wall_s"] = time.perf_counter() - start
    report["log"] = f"{stem}.log"
    return report


def environment() -> dict[str, Any]:
    import platform

    import torch

    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__}
    if torch.cuda.is_available():
        env |= {"device": torch.cuda.get_device_name(0), "cuda": torch.version.cuda}
    else:
        env["device"] = "cpu"
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="plan, parse recipes, build models on meta")
    parser.add_argument("--smoke", action="store_true", help="run the pipelines at tiny sizes (CPU is fine)")
    parser.add_argument(
        "--only", default=",".join(APPS), help=f"comma-separated apps (default {','.join(APPS)})"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-out/gpu-check"), help="working folder")
    parser.add_argument("--json", type=Path, default=None, help="report path (default <out>/gpu_check.json)")
    parser.add_argument(
        "--budget", type=float, default=None, help=f"total wall seconds (default {TOTAL_BUDGET_S})"
    )
    parser.add_argument(
        "--prepare",
        action="store_true",
        help=f"only the one-time set-up (gsplat's CUDA compile), up to {PREPARE_BUDGET_S} s; a GPU run does it first",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.budget is None:
        args.budget = float("inf") if args.smoke else TOTAL_BUDGET_S
    apps = [a.strip() for a in args.only.split(",") if a.strip()]
    unknown = sorted(set(apps) - set(APPS))
    if unknown:
        parser.error(f"--only: unknown app(s) {unknown}; choose from {list(APPS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("WARMSTART_RUNS", str((args.out / "runs").resolve()))
    os.environ.setdefault("WARMSTART_CACHE", str((args.out / "cache").resolve()))

    if args.child:
        if args.prepare:
            check, name = load_check(args.child), f"{args.child}.prepare"
            try:
                report = {"metrics": check.prepare() if check.prepare else {}, "error": None, "passed": True}
            except Exception as exc:  # noqa: BLE001 - recorded; the app's own check names it again
                report = {"metrics": {}, "error": f"{type(exc).__name__}: {exc}", "passed": False}
        else:
            signal.signal(signal.SIGTERM, _budget_spent)
            report, name = run_app(args.child, args.out, args.smoke), args.child
        (args.out / f"{name}.part.json").write_text(json.dumps(report, indent=1, default=str))
        return 0

    import torch

    mode = "dry-run" if args.dry_run else "smoke" if args.smoke else "gpu"
    if mode == "gpu" and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device here; use --dry-run (CI) or --smoke (CPU wiring check)",
            file=sys.stderr,
        )
        return 2
    result: dict[str, Any] = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": mode,
        "environment": environment(),
        "budget_s": args.budget if args.budget != float("inf") else None,
        "apps": {},
    }
    if mode == "gpu" or args.prepare:
        # one-time set-up, outside the timed budget: reported apart, a failure is the app's check's to name
        result["prepare"] = {}
        for app in apps:
            if load_check(app).prepare is not None:
                report = run_child(app, args.out, False, PREPARE_BUDGET_S, prepare=True)
                result["prepare"][app] = report
                print(f"[prepare] {app} ({report['wall_s']:.0f} s): {json.dumps(report.get('metrics', {}))}")
        if args.prepare:
            return 0
    start = time.perf_counter()
    for app in apps:
        if mode == "dry-run":
            report = dry_run(app)
            status = "ok" if report["passed"] else "FAIL"
            print(
                f"[{status}] {app}: {len(report['recipes'])} recipe(s) parse, models on meta: {report['models']}"
            )
            for line in report["plan"]:
                print(f"       would run: {line}")
            for error in report["errors"]:
                print(f"       error: {error}")
        else:
            left = args.budget - (time.perf_counter() - start)
            own = load_check(app).budget_s * (SMOKE_SLACK if args.smoke else 1)
            budget = min(own, max(left, 0.0))
            if budget < 10:
                report = {"error": "skipped: the total budget is spent", "passed": False, "checks": []}
            else:
                report = run_child(app, args.out, args.smoke, budget)
            status = "pass" if report["passed"] else "FAIL"
            figures = {k: v for k, v in report.get("metrics", {}).items() if isinstance(v, int | float)}
            print(
                f"[{status}] {app} ({report.get('wall_s', 0):.0f} s): {json.dumps(figures, default=str)[:400]}"
            )
            for c in report.get("checks", []):
                if not c["passed"]:
                    print(f"       failed: {c['metric']} = {c['value']} (needs {c['op']} {c['threshold']:g})")
            if report.get("error"):
                print(f"       error: {report['error']}")
        result["apps"][app] = report
    result["wall_s"] = time.perf_counter() - start
    result["passed"] = all(r["passed"] for r in result["apps"].values())
    path = args.json or args.out / "gpu_check.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"{'passed' if result['passed'] else 'FAILED'} in {result['wall_s']:.0f} s; report: {path}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
