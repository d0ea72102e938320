"""In-process properties of the engine loop: accumulation, NaN guard, closure steps, checkpoints, data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from warmstart.engine import Engine, EngineConfig, ResumableLoader, latest_checkpoint, load_checkpoint
from warmstart.engine.checkpoint import complete_checkpoints
from warmstart.errors import CheckpointError, NonFiniteError


class RegressionTask:
    """Linear regression y = x·w* with an optional poisoned step."""

    def __init__(self, poison_at: int | None = None) -> None:
        torch.manual_seed(0)
        self.model = nn.Linear(4, 1)
        self.calls = 0
        self.poison_at = poison_at

    def loss(self, batch):
        x, y = batch
        self.calls += 1
        loss = nn.functional.mse_loss(self.model(x).squeeze(-1), y)
        if self.poison_at is not None and self.calls == self.poison_at:
            loss = loss * float("nan")
        return loss, {}


def regression_data(n: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    return [(x[i], y[i]) for i in range(n)]


def quiet(config: EngineConfig) -> EngineConfig:
    config.logging.progress = "none"
    config.logging.tensorboard = False
    config.checkpoint.save_final = False
    return config


def test_gradient_accumulation_equals_the_large_batch() -> None:
    results = []
    for micro, accum in ((8, 1), (4, 2), (2, 4)):
        config = quiet(EngineConfig())
        config.train.max_steps = 5
        config.train.micro_batch_size = micro
        config.train.grad_accum_steps = accum
        config.train.grad_clip_norm = None
        config.optimizer.name = "sgd"
        config.optimizer.momentum = 0.0
        config.optimizer.lr = 0.05
        task = RegressionTask()
        # the permutation is per sample, so micro-batches 4+4 are exactly the batch of 8
        loader = ResumableLoader(regression_data(), micro, seed=0)
        Engine(config).fit(task, loader)
        results.append(torch.cat([p.detach().flatten() for p in task.model.parameters()]))
    torch.testing.assert_close(results[0], results[1], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(results[0], results[2], rtol=1e-6, atol=1e-6)


def test_training_reduces_the_loss() -> None:
    config = quiet(EngineConfig())
    config.train.max_steps = 60
    config.optimizer.lr = 0.05
    config.schedule.name = "constant"
    task = RegressionTask()
    data = regression_data()
    x = torch.stack([d[0] for d in data])
    y = torch.stack([d[1] for d in data])
    with torch.no_grad():
        before = float(nn.functional.mse_loss(task.model(x).squeeze(-1), y))
    summary = Engine(config).fit(task, data)
    with torch.no_grad():
        after = float(nn.functional.mse_loss(task.model(x).squeeze(-1), y))
    assert after < 0.1 * before
    assert summary.steps == 60 and summary.samples_per_s > 0


def test_nonfinite_loss_stops_with_the_step_named() -> None:
    config = quiet(EngineConfig())
    config.train.max_steps = 10
    with pytest.raises(NonFiniteError, match=r"step 3\b"):
        Engine(config).fit(RegressionTask(poison_at=3), regression_data())


def test_nonfinite_loss_can_skip_the_batch() -> None:
    config = quiet(EngineConfig())
    config.train.max_steps = 10
    config.train.nonfinite = "skip"
    task = RegressionTask(poison_at=3)
    summary = Engine(config).fit(task, regression_data())
    assert summary.skipped_steps == 1 and summary.steps == 10
    assert all(torch.isfinite(p).all() for p in task.model.parameters())


class ClosureSGD(torch.optim.SGD):
    """A two-pass optimizer stand-in: records that the engine handed it a closure that recomputes."""

    requires_closure = True

    def __init__(self, params, lr: float) -> None:
        super().__init__(params, lr=lr)
        self.closure_losses: list[float] = []

    def step(self, closure=None):
        assert closure is not None
        first_grad = [p.grad.clone() for group in self.param_groups for p in group["params"]]
        with torch.enable_grad():
            loss = closure()
        self.closure_losses.append(float(loss))
        second_grad = [p.grad for group in self.param_groups for p in group["params"]]
        for a, b in zip(first_grad, second_grad, strict=True):  # same batch, same point: same gradient
            torch.testing.assert_close(a, b)
        return super().step()


def test_two_pass_optimizers_get_a_closure(monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[ClosureSGD] = []

    def build(config, params):
        created.append(ClosureSGD(params, lr=config.lr))
        return created[-1]

    monkeypatch.setattr("warmstart.engine.loop.build_optimizer", build)
    config = quiet(EngineConfig())
    config.train.max_steps = 4
    config.train.grad_accum_steps = 2
    task = RegressionTask()
    Engine(config).fit(task, regression_data())
    assert len(created[0].closure_losses) == 4
    assert task.calls == 4 * 2 * 2  # two micro-batches, two passes, four steps


def test_checkpoints_metrics_and_retention(tmp_path: Path) -> None:
    config = quiet(EngineConfig())
    config.train.max_steps = 12
    config.checkpoint.every = 3
    config.checkpoint.keep_last = 2
    config.checkpoint.save_final = True
    config.logging.log_every = 4
    summary = Engine(config, tmp_path).fit(RegressionTask(), regression_data())
    assert [p.name for p in complete_checkpoints(tmp_path / "checkpoints")] == ["step-9", "step-12"]
    assert summary.checkpoint == str(tmp_path / "checkpoints" / "step-12")
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [4, 8, 12]
    assert all({"loss", "lr", "samples_per_s"} <= r.keys() for r in rows)
    model, optim, state = load_checkpoint(tmp_path / "checkpoints" / "step-12")
    assert state["step"] == 12 and set(model) == {"weight", "bias"} and "state" in optim


def test_half_written_checkpoints_are_ignored(tmp_path: Path) -> None:
    config = quiet(EngineConfig())
    config.train.max_steps = 4
    config.checkpoint.save_final = True
    Engine(config, tmp_path).fit(RegressionTask(), regression_data())
    # what a kill mid-write leaves: a temporary directory, or a step dir without meta.json
    (tmp_path / "checkpoints" / ".tmp-step-8").mkdir()
    (tmp_path / "checkpoints" / "step-9").mkdir()
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step-4"


def test_truncated_checkpoint_is_a_clear_error_and_is_kept(tmp_path: Path) -> None:
    config = quiet(EngineConfig())
    config.train.max_steps = 4
    config.checkpoint.save_final = True
    Engine(config, tmp_path).fit(RegressionTask(), regression_data())
    weights = tmp_path / "checkpoints" / "step-4" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors.*truncated"):
        Engine(config, tmp_path).fit(RegressionTask(), regression_data(), resume_from=tmp_path)
    assert weights.read_bytes() == data[: len(data) // 2]  # nothing overwritten


def test_resume_without_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        Engine(quiet(EngineConfig()), tmp_path).fit(RegressionTask(), regression_data(), resume_from=tmp_path)


def test_stop_at_then_resume_equals_one_run(tmp_path: Path) -> None:
    def run(stop_at, resume, out):
        config = quiet(EngineConfig())
        config.train.max_steps = 10
        config.train.stop_at = stop_at
        config.checkpoint.save_final = True
        task = RegressionTask()
        Engine(config, out).fit(task, regression_data(40), resume_from=resume)
        return torch.cat([p.detach().flatten() for p in task.model.parameters()])

    whole = run(None, None, tmp_path / "a")
    run(6, None, tmp_path / "b")
    resumed = run(None, tmp_path / "b", tmp_path / "b")
    assert torch.equal(whole, resumed)


def test_loader_state_round_trip_and_sharding() -> None:
    data = list(range(20))
    loader = ResumableLoader(data, 3, seed=5)
    it = iter(loader)
    for _ in range(7):  # crosses an epoch boundary (6 batches per epoch)
        next(it)
    state = loader.state_dict()
    expected = [next(it).tolist() for _ in range(4)]
    other = ResumableLoader(data, 3, seed=5)
    other.load_state_dict(state)
    it2 = iter(other)
    assert [next(it2).tolist() for _ in range(4)] == expected
    from warmstart.data.sampling import epoch_permutation

    fresh = iter(ResumableLoader(data, 3, seed=5))  # the shared seeded order, epoch after epoch
    for epoch in range(2):
        order = epoch_permutation(20, 5, epoch)[:18].view(6, 3).tolist()
        assert [next(fresh).tolist() for _ in range(6)] == order
    shards = [ResumableLoader(data, 2, seed=1, rank=r, world_size=2) for r in range(2)]
    seen = [set(torch.cat([b for _, b in zip(range(5), iter(s), strict=False)]).tolist()) for s in shards]
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 20


@pytest.mark.parametrize("name", ["sam", "sgd-sai", "sgd"])
def test_every_optimizer_trains_through_the_engine(name: str) -> None:
    config = quiet(EngineConfig())
    config.train.max_steps = 40
    config.optimizer.name = name
    config.optimizer.lr = 0.05
    config.schedule.name = "constant"
    task = RegressionTask()
    data = regression_data()
    x = torch.stack([d[0] for d in data])
    y = torch.stack([d[1] for d in data])
    with torch.no_grad():
        before = float(nn.functional.mse_loss(task.model(x).squeeze(-1), y))
    Engine(config).fit(task, data)
    with torch.no_grad():
        after = float(nn.functional.mse_loss(task.model(x).squeeze(-1), y))
    assert after < 0.5 * before
    if name == "sam":
        assert task.calls == 40 * 2  # two passes per step


GOLDEN = Path(__file__).with_name("golden_loss.json")


def test_golden_loss_curve(tmp_path: Path) -> None:
    """A tiny run's loss curve against a stored one: a change that silently alters training fails here.

    Regenerate deliberately with WARMSTART_REGEN_GOLDEN=1 (and say why in the commit)."""
    import os

    config = quiet(EngineConfig())
    config.train.max_steps = 20
    config.train.micro_batch_size = 4
    config.train.grad_accum_steps = 2
    config.optimizer.lr = 0.05
    config.schedule.warmup_steps = 3
    config.logging.log_every = 1
    Engine(config, tmp_path).fit(RegressionTask(), regression_data())
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    curve = {"loss": [r["loss"] for r in rows], "lr": [r["lr"] for r in rows]}
    if os.environ.get("WARMSTART_REGEN_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(curve, indent=1))
    golden = json.loads(GOLDEN.read_text())
    assert len(curve["loss"]) == len(golden["loss"]) == 20
    torch.testing.assert_close(torch.tensor(curve["lr"]), torch.tensor(golden["lr"]), rtol=1e-9, atol=0)
    torch.testing.assert_close(
        torch.tensor(curve["loss"]), torch.tensor(golden["loss"]), rtol=1e-4, atol=1e-6
    )


def test_an_unsharded_stream_is_split_by_rank_into_the_one_process_sequence() -> None:
    from warmstart.engine.data import BatchCursor

    def stream():  # a plain iterable of numbered micro-batches
        return iter([torch.tensor([i]) for i in range(12)])

    class Stream:
        def __iter__(self):
            return stream()

    one = BatchCursor(Stream())
    alone = [int(one.next()) for _ in range(8)]
    ranks = [BatchCursor(Stream(), rank=r, world_size=2) for r in range(2)]
    per_rank = [[int(c.next()) for _ in range(4)] for c in ranks]
    assert per_rank[0] != per_rank[1] and not set(per_rank[0]) & set(per_rank[1])
    # step s with 2 accumulation steps on 1 process == step s of 2 ranks with 1 each: the same 2 batches
    for s in range(4):
        assert sorted([per_rank[0][s], per_rank[1][s]]) == alone[2 * s : 2 * s + 2]
    resumed = BatchCursor(Stream(), rank=1, world_size=2)
    resumed.load_state_dict(ranks[1].state_dict())
    assert int(resumed.next()) == 9  # rank 1 continues with its own next batch


def test_a_stream_sharded_for_another_world_is_refused() -> None:
    from warmstart.data.packing import PackedStream
    from warmstart.engine.data import BatchCursor
    from warmstart.errors import DataError

    docs = [[1, 2, 3]] * 8
    own = PackedStream(docs, block_size=4, batch_size=2, eos_id=0, rank=1, world_size=2)
    assert BatchCursor(own, rank=1, world_size=2).stride == 1  # it shards itself: used as it is
    with pytest.raises(DataError, match="rank 1 of 2 but this process is rank 0 of 4"):
        BatchCursor(own, rank=0, world_size=4)
