"""light_fit: the in-process loop for many tiny fits — it trains, seeds, clips, guards and takes closures."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from warmstart.engine import light_fit
from warmstart.engine.guard import TrainingGuard
from warmstart.errors import ConfigError, DataError, NonFiniteError
from warmstart.optim import OptimizerConfig, ScheduleConfig


def regression(n: int = 64, batch: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]


def mse(model: nn.Module):
    def loss(batch):
        x, y = batch
        return nn.functional.mse_loss(model(x).squeeze(-1), y)

    return loss


def test_light_fit_trains_and_cycles_the_batches() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    losses = light_fit(model, mse(model), regression(), steps=60, lr=0.05)
    assert len(losses) == 60  # 8 batches cycled past their end
    assert losses[-1] < 0.05 * losses[0]


def test_light_fit_is_seeded_and_accepts_a_task_style_loss() -> None:
    def run() -> torch.Tensor:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 1))

        def loss(batch):
            x, y = batch
            return nn.functional.mse_loss(model(x).squeeze(-1), y), {"extra": 1.0}

        light_fit(model, loss, regression(), steps=10, lr=0.01, seed=7)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.equal(run(), run())


def test_light_fit_equals_a_plain_loop_with_the_same_optimizer() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    plain = nn.Linear(4, 1)
    plain.load_state_dict(model.state_dict())
    batches = regression()
    light_fit(
        model,
        mse(model),
        batches,
        steps=8,
        lr=0.1,
        optimizer=OptimizerConfig(name="sgd", momentum=0.0),
        grad_clip_norm=None,
    )
    opt = torch.optim.SGD(plain.parameters(), lr=0.1)
    for batch in batches:
        opt.zero_grad()
        mse(plain)(batch).backward()
        opt.step()
    for a, b in zip(model.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_light_fit_schedule_and_clipping_apply() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt_cfg = OptimizerConfig(name="sgd", momentum=0.0)

    def loss(batch):
        return mse(model)(batch) * 1e4  # a huge gradient: clipping bounds each step

    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    light_fit(
        model,
        loss,
        regression(),
        steps=1,
        lr=0.1,
        optimizer=opt_cfg,
        grad_clip_norm=0.5,
        schedule=ScheduleConfig(name="constant"),
    )
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert float((after - before).norm()) == pytest.approx(0.1 * 0.5, rel=1e-4)


def test_light_fit_nan_guard_stops_or_skips() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    calls = {"n": 0}

    def poisoned(batch):
        calls["n"] += 1
        loss = mse(model)(batch)
        return loss * float("nan") if calls["n"] == 3 else loss

    with pytest.raises(NonFiniteError, match=r"step 3\b"):
        light_fit(model, poisoned, regression(), steps=5, lr=0.01)
    calls["n"] = 0
    losses = light_fit(model, poisoned, regression(), steps=5, lr=0.01, nonfinite="skip")
    assert len(losses) == 5 and all(torch.isfinite(p).all() for p in model.parameters())


def test_light_fit_catches_an_exploding_but_finite_loss() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    calls = {"n": 0}

    def blows_up(batch):  # finite throughout, but a million times its median from step 12 on
        calls["n"] += 1
        return mse(model)(batch) * (1e6 if calls["n"] >= 12 else 1.0)

    with pytest.raises(NonFiniteError, match=r"step 12 .*exploded"):
        light_fit(model, blows_up, regression(), steps=50, lr=0.01)


def test_light_fit_refuses_bad_arguments_and_a_dry_iterator() -> None:
    model = nn.Linear(4, 1)
    with pytest.raises(ConfigError, match="steps"):
        light_fit(model, mse(model), regression(), steps=0)
    with pytest.raises(ConfigError, match="lr"):
        light_fit(model, mse(model), regression(), steps=2, lr=-1.0)
    with pytest.raises(DataError, match="ran out at step 3"):
        light_fit(model, mse(model), iter(regression(16)), steps=5)


def test_light_fit_gives_two_pass_optimizers_a_closure() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    calls = {"n": 0}

    def counted(batch):
        calls["n"] += 1
        return mse(model)(batch)

    one = regression()[:1]  # the same batch each step: its loss must fall
    losses = light_fit(model, counted, one, steps=4, lr=0.05, optimizer=OptimizerConfig(name="sam"))
    assert calls["n"] == 8 and losses[-1] < losses[0]


def test_guard_ignores_a_converged_loss_bumping_back_and_keeps_its_state() -> None:
    guard = TrainingGuard(explode_factor=100.0)
    for value in [1.0, 0.8, 0.5, 0.2, 0.1] + [1e-6] * 20:
        assert guard.diagnose(value, None) == ""
        guard.accept(value)
    assert guard.diagnose(0.5, None) == ""  # back to an early level: a bump, not an explosion
    assert "exploded" in guard.diagnose(5.0, None)
    other = TrainingGuard(explode_factor=100.0)
    other.load_state_dict(guard.state_dict())
    assert other.diagnose(5.0, None) == guard.diagnose(5.0, None)


def test_guard_running_median_is_the_median_of_its_window() -> None:
    import random
    import statistics

    rng = random.Random(0)
    guard = TrainingGuard(window=7)
    for _ in range(60):
        guard.accept(rng.random())
        assert len(guard.history) <= 7
        assert guard._median() == pytest.approx(statistics.median(guard.history), abs=1e-12)


def test_training_drops_lightnings_nvml_check_and_restores_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from warmstart.engine import light

    name = "PYTORCH_NVML_BASED_CUDA_CHECK"
    monkeypatch.setattr(light, "_USER_NVML_CHECK", None)  # as if Lightning, not the user, set it
    monkeypatch.setenv(name, "1")
    model = nn.Linear(4, 1)
    seen: list = []

    def loss(batch):
        seen.append(os.environ.get(name))
        return mse(model)(batch)

    light_fit(model, loss, regression(), steps=3)
    assert seen == [None, None, None] and os.environ[name] == "1"
    monkeypatch.setattr(light, "_USER_NVML_CHECK", "1")  # the user's own setting is left alone
    seen.clear()
    light_fit(model, loss, regression(), steps=2)
    assert seen == ["1", "1"]
