import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread(monkeypatch, tmp_path):
    """Tiny models on a shared 2-core machine: one intra-op thread avoids spin-wait contention."""
    monkeypatch.setenv("WARMSTART_RUNS", str(tmp_path / "runs"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
