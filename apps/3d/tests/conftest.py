import pytest
import torch

torch.set_num_threads(1)  # the CI box is shared: one thread avoids oversubscription stalls


@pytest.fixture(autouse=True)
def _runs_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("WARMSTART_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("WARMSTART_CACHE", str(tmp_path / "cache"))  # cached bench sources stay in the test
