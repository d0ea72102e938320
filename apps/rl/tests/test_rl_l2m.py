"""L2M: the pooled LoRA modulators on a Decision Transformer, key retrieval, claiming (no forgetting), the
trajectories and windows, the cached pretrained DT, and the CLI command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from warmstart_rl.cli import app
from warmstart_rl.l2m import (
    DTConfig,
    L2MConfig,
    ModulatedDT,
    PooledLoRA,
    TaskSpec,
    Trajectories,
    build_dt,
    dt_logits,
    forgetting,
    l2m_learn_task,
    record_trajectories,
    task_env,
    window_batch,
)

CONTEXT = 4


def _dt() -> nn.Module:
    torch.manual_seed(0)
    return build_dt(DTConfig(hidden=16, layers=1, heads=2, dropout=0.0), CONTEXT, 50).eval()


@pytest.fixture(scope="module")
def trajectories() -> Trajectories:
    return record_trajectories(TaskSpec("MiniGrid-Empty-5x5-v0", [1, 0, 2]), 3, 0.3, CONTEXT, 50, seed=0)


def test_pooled_lora_starts_at_the_base_and_routes_per_sample() -> None:
    from transformers.pytorch_utils import Conv1D

    g = torch.Generator().manual_seed(0)
    for base, columns in ((nn.Linear(5, 6), None), (Conv1D(6, 5), torch.tensor([0, 1, 4, 5]))):
        layer = PooledLoRA(base, pool=3, rank=2, alpha=4.0, generator=g, columns=columns)
        x = torch.randn(6, 2, 5, generator=g)
        layer.slot = torch.tensor([0, 1, 2, 0, 1, 2])
        torch.testing.assert_close(layer(x), base(x))  # B = 0: every modulator is the identity
        with torch.no_grad():
            layer.lora_b[1].normal_(generator=g)
        out = layer(x)
        on_one = layer.slot == 1
        torch.testing.assert_close(out[~on_one], base(x)[~on_one])  # other slots unaffected
        cols = columns if columns is not None else torch.arange(6)
        expected = base(x[on_one])
        expected[..., cols] += 2.0 * x[on_one] @ layer.lora_a[1].T @ layer.lora_b[1].T
        torch.testing.assert_close(out[on_one], expected)
        layer.slot = torch.ones(6, dtype=torch.long)  # the one-modulator fast path agrees
        torch.testing.assert_close(layer(x)[on_one], expected)
        if columns is not None:  # the fused c_attn: the key third is never modulated
            torch.testing.assert_close(layer(x)[..., 2:4], base(x)[..., 2:4])


def test_retrieval_is_top1_cosine_among_allowed_keys() -> None:
    model = ModulatedDT(_dt(), pool=4, rank=2, alpha=2.0)
    dim = model.keys[0].shape[0]
    with torch.no_grad():
        for i in range(4):
            model.keys[i].zero_()
            model.keys[i][i] = 1.0 + i  # scale must not matter (cosine)
    query = torch.zeros(3, dim)
    query[0, 2], query[1, 0], query[2, 3] = 1.0, 5.0, 0.2
    assert model.retrieve(query, [0, 1, 2, 3]).tolist() == [2, 0, 3]
    assert model.retrieve(query, [1, 3]).tolist()[2] == 3
    with pytest.raises(Exception, match="exhausted"):
        model.retrieve(query, [])


def test_windows_stay_in_their_episode_and_labels_replay_the_permuted_expert(trajectories) -> None:
    win = trajectories.window
    assert win.shape == (len(trajectories), CONTEXT)
    idx = torch.arange(len(trajectories))
    assert (win[:, -1] == idx).all()  # each window ends at its own step
    valid = win >= 0
    assert (
        trajectories.episode[win.clamp(min=0)][valid] == trajectories.episode[:, None].expand_as(win)[valid]
    ).all()
    assert (valid.sum(1) == torch.clamp(trajectories.timestep + 1, max=CONTEXT)).all()
    batch = window_batch(trajectories, idx[:5])
    assert batch["states"].shape == (5, CONTEXT, 147) and (batch["labels"][~valid[:5]] == -100).all()
    # returns-to-go: the episode's return at every step (MiniGrid pays at the goal only), positive
    first = trajectories.episode == 0
    assert torch.allclose(trajectories.rtg[first], trajectories.rtg[first][0]) and trajectories.rtg[0] > 0
    # replaying the expert labels in the permuted environment reaches the goal
    env = task_env(TaskSpec("MiniGrid-Empty-5x5-v0", [1, 0, 2]), 50)
    env.reset(seed=0)
    from warmstart_rl.data import minigrid_expert_action

    reward, done = 0.0, False
    while not done:
        expert = [1, 0, 2].index(minigrid_expert_action(env))
        _, reward, terminated, truncated, _ = env.step(expert)
        done = terminated or truncated
    assert reward > 0.5
    env.close()


def test_query_and_prediction_never_read_the_current_action(trajectories) -> None:
    model = ModulatedDT(_dt(), pool=2, rank=2, alpha=4.0)
    with torch.no_grad():
        for p in model.slot_parameters(0):
            p.normal_()
    batch = window_batch(trajectories, torch.arange(6, 12))
    other = dict(batch, actions=batch["actions"].clone())
    other["actions"][:, -1] = torch.roll(other["actions"][:, -1], 1, dims=-1)  # a different current action
    torch.testing.assert_close(model.query(batch), model.query(other))
    slot = torch.zeros(6, dtype=torch.long)
    torch.testing.assert_close(model.logits(batch, slot)[:, -1], model.logits(other, slot)[:, -1])
    assert all(layer.slot is None for layer in model.layers)  # routing is cleared after the call


def test_claimed_modulators_are_frozen_so_an_earlier_task_is_not_forgotten(trajectories) -> None:
    dt = _dt()
    model = ModulatedDT(dt, pool=3, rank=2, alpha=4.0)
    config = L2MConfig(task_steps=6, batch_size=8, lr=1e-2)
    g = torch.Generator().manual_seed(0)
    second = record_trajectories(TaskSpec("MiniGrid-Empty-6x6-v0", [2, 1, 0]), 2, 0.3, CONTEXT, 50, seed=1)
    l2m_learn_task(model, trajectories, 0, config, g)
    slot0 = model.claimed()
    assert len(slot0) == 1 and model.owner[slot0[0]] == 0
    batch = window_batch(trajectories, torch.arange(len(trajectories)))
    slots = torch.full((len(trajectories),), slot0[0])
    before = model.logits(batch, slots).detach().clone()
    assert not torch.allclose(before, dt_logits(dt, batch))  # the modulator did learn something
    key_before = model.keys[slot0[0]].detach().clone()
    backbone = {k: v.clone() for k, v in dt.state_dict().items()}
    l2m_learn_task(model, second, 1, config, g)
    assert set(model.claimed()) - set(slot0)  # task 1 got its own slot
    torch.testing.assert_close(model.logits(batch, slots), before, rtol=0, atol=0)
    torch.testing.assert_close(model.keys[slot0[0]], key_before, rtol=0, atol=0)
    base = {k.replace(".base.", "."): v for k, v in model.dt.state_dict().items() if "lora" not in k}
    for k, v in backbone.items():
        torch.testing.assert_close(base[k], v, rtol=0, atol=0)  # the DT itself never moves


def test_forgetting_is_the_drop_from_the_best_accuracy() -> None:
    matrix = [[0.9], [0.5, 0.8], [0.7, 0.6, 1.0]]
    assert forgetting(matrix) == pytest.approx(((0.9 - 0.7) + (0.8 - 0.6)) / 2)
    assert forgetting([[1.0]]) == 0.0


TINY = [
    "--setup.seeds",
    "1",
    "--setup.episodes",
    "3",
    "--setup.pretrain_steps",
    "4",
    "--setup.task_steps",
    "3",
]
TINY += ["--setup.eval_episodes", "1", "--setup.context", "3", "--setup.max_steps", "30", "--setup.pool", "2"]
TINY += ["--setup.dt", '{"hidden": 16, "layers": 1, "heads": 2}', "--setup.batch_size", "8"]
TINY += ["--setup.pretrain_tasks", '[{"env_id": "MiniGrid-Empty-5x5-v0"}]']
TINY += ["--setup.new_tasks", '[{"env_id": "MiniGrid-Empty-6x6-v0", "permutation": [1, 0, 2]}]']


def test_l2m_command_end_to_end_and_the_pretrained_dt_is_cached(tmp_path) -> None:
    from warmstart_rl.l2m import pretrained_dt, record_all

    out = tmp_path / "a"
    assert app.main(["l2m", *TINY, "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"pretrained (frozen)", "full fine-tuning", "shared LoRA", "l2m"}
    assert (out / "plot.png").is_file() and (out / "accuracy_matrices.png").is_file()
    assert "](accuracy_matrices.png)" in (out / "report.md").read_text()
    matrices = json.loads((out / "matrices.json").read_text())[0]
    assert matrices["tasks"] == ["Empty-5x5", "Empty-6x6/102"]
    for arm in ("full fine-tuning", "shared LoRA", "l2m"):
        assert [len(row) for row in matrices["matrix"][arm]] == [1, 2]
        assert all(0.0 <= a <= 1.0 for row in matrices["matrix"][arm] for a in row)
    assert np.isfinite(matrices["returns"]["l2m"]).all()
    # the pretrained DT is one cached artifact in transformers' format: the same config finds it again
    folders = list((tmp_path / "cache" / "rl.l2m-dt").glob("[0-9a-f]*"))
    assert len(folders) == 1 and matrices["pretraining"]["folder"] == str(folders[0])
    setup = results["config"]
    cfg = L2MConfig(
        **{k: v for k, v in setup.items() if k not in ("tasks", "dt")},
        dt=DTConfig(**setup["dt"]),
        pretrain_tasks=[TaskSpec("MiniGrid-Empty-5x5-v0")],
        new_tasks=[TaskSpec("MiniGrid-Empty-6x6-v0", [1, 0, 2])],
    )
    dt, meta = pretrained_dt(cfg, record_all(cfg)[0])
    assert meta["folder"] == str(folders[0]) and dt.config.hidden_size == 16


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--setup.new_tasks", '[{"env_id": "CartPole-v1"}]'], "MiniGrid"),
        (
            ["--setup.new_tasks", '[{"env_id": "MiniGrid-Empty-6x6-v0", "permutation": [0, 0, 2]}]'],
            "permutation",
        ),
        (["--setup.pool", "1"], "pool"),
    ],
)
def test_l2m_bad_input_is_one_line_exit_2(tmp_path, capsys, one_line_error, extra, needle) -> None:
    assert app.main(["l2m", "--out", str(tmp_path / "o"), *extra]) == 2
    assert needle in one_line_error(capsys)
    assert not (tmp_path / "o" / "results.json").exists()
