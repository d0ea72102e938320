"""Set the one workspace version everywhere it is written: the root, the core, every app, and the apps'
pin on the core (they release in lockstep).

    uv run python shared/scripts/set_version.py 0.2.0 && uv lock
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VERSION = re.compile(r'^version = "[^"]+"$', re.M)
CORE_PIN = re.compile(r'"warmstart==[^"]+"')


def manifests() -> list[Path]:
    return [
        ROOT / "pyproject.toml",
        *sorted(ROOT.glob("packages/*/pyproject.toml")),
        *sorted(ROOT.glob("apps/*/pyproject.toml")),
    ]


def main() -> None:
    if len(sys.argv) != 2 or not re.fullmatch(r"\d+\.\d+\.\d+([.-]?\w+)?", sys.argv[1]):
        sys.exit("usage: set_version.py X.Y.Z")
    new = sys.argv[1]
    for path in manifests():
        text = path.read_text()
        text = VERSION.sub(f'version = "{new}"', text, count=1)
        text = CORE_PIN.sub(f'"warmstart=={new}"', text)
        path.write_text(text)
        print(f"{path.relative_to(ROOT)}: {new}")


if __name__ == "__main__":
    main()
