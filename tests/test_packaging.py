"""Packaging: every package builds a wheel and an sdist with honest metadata; the core wheel installs and
runs alone; each app's wheel + the core's wheel install and run alone (no monorepo-only dependency).

Fresh virtual environments reuse uv's cache and the workspace lock's versions (as constraints), so no
new torch is fetched and each install takes seconds.
"""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APPS = sorted(p.name for p in (ROOT / "apps").iterdir() if (p / "pyproject.toml").exists())
DOMAIN_LIBS = {
    "torchgeo",
    "gsplat",
    "fairseq2",
    "gymnasium",
    "stable-baselines3",
    "open-clip-torch",
    "rasterio",
}


def uv(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "uv", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=900
    )
    assert proc.returncode == 0, f"uv {' '.join(args)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    uv("build", "--all-packages", "--out-dir", str(out), "--quiet")
    uv(
        "export",
        "--all-packages",
        "--no-hashes",
        "--no-emit-workspace",
        "--no-dev",
        "--format",
        "requirements-txt",
        "--output-file",
        str(out / "constraints.txt"),
        "--quiet",
    )
    return out


def wheel(dist: Path, dist_name: str) -> Path:
    found = sorted(dist.glob(f"{dist_name.replace('-', '_')}-*.whl"))
    assert len(found) == 1, (dist_name, found)
    return found[0]


def metadata(whl: Path) -> email.message.Message:
    with zipfile.ZipFile(whl) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(zf.read(name))


def requirement_names(meta: email.message.Message) -> set[str]:
    import re

    return {re.split(r"[ <>=!~;\[]", r, maxsplit=1)[0].lower() for r in meta.get_all("Requires-Dist") or []}


def fresh_venv(tmp_path: Path, dist: Path, *wheels: Path) -> Path:
    venv = tmp_path / "venv"
    uv("venv", "--python", "3.12", "--quiet", str(venv))
    python = venv / "bin" / "python"
    uv(
        "pip",
        "install",
        "--quiet",
        # the workspace compiles bytecode on install (its uv setting); a throwaway venv need not: each
        # process compiles only what it imports, which is a small part of torch and the domain libraries
        "--no-compile-bytecode",
        "--python",
        str(python),
        "-c",
        str(dist / "constraints.txt"),
        *map(str, wheels),
    )
    return venv


def run(venv: Path, *cmd: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["WARMSTART_RUNS"] = str(cwd / "runs")
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_every_package_builds_with_metadata(dist: Path) -> None:
    root_version = next(
        line.split('"')[1]
        for line in (ROOT / "pyproject.toml").read_text().splitlines()
        if line.startswith("version")
    )
    for name in ["warmstart", *(f"warmstart-{app}" for app in APPS)]:
        meta = metadata(wheel(dist, name))
        assert meta["Name"] == name and meta["Version"] == root_version
        assert meta["Summary"] and meta["License-Expression"] == "Apache-2.0"
        assert meta["Requires-Python"] == ">=3.12"
        sdists = list(dist.glob(f"{name.replace('-', '_')}-{root_version}.tar.gz"))
        assert len(sdists) == 1, name
        with tarfile.open(sdists[0]) as tf:
            assert any(m.name.endswith("pyproject.toml") for m in tf.getmembers())
        requires = requirement_names(meta)
        if name == "warmstart":
            assert not requires & DOMAIN_LIBS, requires & DOMAIN_LIBS
        else:
            assert "warmstart" in requires
            assert not {r for r in requires if r.startswith("warmstart-")}, "apps never depend on each other"
            with zipfile.ZipFile(wheel(dist, name)) as zf:
                ep = zf.read(next(n for n in zf.namelist() if n.endswith("entry_points.txt"))).decode()
            assert "[warmstart.apps]" in ep and f"{name} = " in ep


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_core_wheel_installs_and_runs_alone(dist: Path, tmp_path: Path) -> None:
    venv = fresh_venv(tmp_path, dist, wheel(dist, "warmstart"))
    modules = [
        "warmstart."
        + ".".join(p.relative_to(ROOT / "packages/warmstart/src/warmstart").with_suffix("").parts)
        for p in sorted((ROOT / "packages/warmstart/src/warmstart").rglob("*.py"))
        if p.name != "__init__.py"
    ]
    code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)\nprint('ok')"
    assert run(venv, "python", "-c", code, *modules, cwd=tmp_path).stdout.strip() == "ok"
    assert "tour" in run(venv, "warmstart", "--help", cwd=tmp_path).stdout
    assert "no warmstart apps installed" in run(venv, "warmstart", "apps", cwd=tmp_path).stdout
    assert run(venv, "warmstart", "--version", cwd=tmp_path).stdout.strip().startswith("warmstart 0.")
    listed = uv("pip", "list", "--python", str(venv / "bin" / "python")).stdout.lower()
    assert not any(lib in listed for lib in DOMAIN_LIBS)


@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("app", APPS)
def test_app_wheel_with_the_core_installs_and_runs_alone(app: str, dist: Path, tmp_path: Path) -> None:
    venv = fresh_venv(tmp_path, dist, wheel(dist, "warmstart"), wheel(dist, f"warmstart-{app}"))
    command = f"warmstart-{app}"
    assert "demo" in run(venv, command, "--help", cwd=tmp_path).stdout
    assert (
        run(venv, command, "--version", cwd=tmp_path).stdout.strip()
        == f"{command} " + metadata(wheel(dist, command))["Version"]
    )
    listed = run(venv, "warmstart", "apps", cwd=tmp_path).stdout
    assert app in listed and not any(other in listed.split() for other in APPS if other != app)
    run(venv, command, "demo", "--out", str(tmp_path / "demo"), cwd=tmp_path, timeout=900)
    shutil.rmtree(venv, ignore_errors=True)


def test_one_container_file_lints_clean_and_serves_every_app() -> None:
    """One root Dockerfile with ``ARG APP`` (no per-app copies). No Docker engine runs here, so it is checked
    by hadolint (syntax + practices) and by reading: the app's wheel and console script come from APP."""
    dockerfile = ROOT / "Dockerfile"
    hadolint = Path(sys.executable).parent / "hadolint"
    proc = subprocess.run([str(hadolint), "--no-color", str(dockerfile)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = dockerfile.read_text()
    assert "\nARG APP\n" in text
    assert "dist/warmstart-*.whl dist/warmstart_${APP}-*.whl" in text  # the core's wheel and the app's only
    assert '/opt/venv/bin/warmstart-${APP}" /usr/local/bin/warmstart-app' in text
    assert 'ENTRYPOINT ["warmstart-app"]' in text
    assert 'if [ -z "$APP" ]' in text  # a build without --build-arg APP stops with the fix
    assert not [p for p in (ROOT / "apps").glob("*/Dockerfile")], "per-app Dockerfiles: use the root one"
    for app in APPS:  # every app's console script is named warmstart-<app> (what the symlink points at)
        assert (
            f'warmstart-{app} = "warmstart_{app.replace("-", "_")}.cli:'
            in (ROOT / "apps" / app / "pyproject.toml").read_text()
        )
