"""Tiny networks: one torch thread is fastest and keeps the shared CI cores free."""

import os

import pytest
import torch

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Benches cache their pretrained sources: each test gets its own cache folder."""
    monkeypatch.setenv("WARMSTART_CACHE", str(tmp_path / "cache"))
