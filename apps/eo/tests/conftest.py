"""Shared fixtures: one tiny generated GeoTIFF folder per test session (4 scenes × 64 px × 3 frames)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from warmstart_eo.data import SynthConfig, synthesize

torch.set_num_threads(1)  # shared CPUs: tiny models run 10-20x faster single-threaded here


@pytest.fixture(scope="session")
def eo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eo") / "scenes"
    synthesize(root, SynthConfig(scenes=4, size=64, frames=3, seed=3, event_prob=1.0))
    return root
