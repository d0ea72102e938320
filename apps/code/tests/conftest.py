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


@pytest.fixture(scope="module")
def sandbox(request):
    """One sandbox per test module: two workers, no guard, and the module's ``SANDBOX`` settings (fields of
    ``SandboxConfig``, e.g. ``SANDBOX = {"timeout_s": 3.0}``)."""
    from warmstart_code.sandbox import Sandbox, SandboxConfig

    options = {"workers": 2, "guard": False, **getattr(request.module, "SANDBOX", {})}
    with Sandbox(SandboxConfig(**options)) as sb:
        yield sb


@pytest.fixture(scope="session")
def tiny_continual() -> list[str]:
    """The ``continual`` command's options for a seconds-long run (2 steps, 8 train / 2 test tasks)."""
    return [
        "--options.steps",
        "2",
        "--options.train_tasks",
        "8",
        "--options.test_tasks",
        "2",
        "--options.batch_size",
        "4",
        "--options.fisher_samples",
        "2",
        "--options.max_new_tokens",
        "8",
    ]
