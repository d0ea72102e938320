"""L2M: the pooled LoRA modulators, key retrieval, claiming (no forgetting), demos, and the CLI command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from warmstart_rl.cli import app
from warmstart_rl.l2m import (
    Demos,
    L2MConfig,
    L2MPolicy,
    PooledLoRALinear,
    TaskSpec,
    forgetting,
    history_query,
    l2m_learn_task,
    permuted_env,
    record_demos,
)
from warmstart_rl.models import PixelPolicy, PolicyConfig


def _policy(size: int = 12) -> PixelPolicy:
    torch.manual_seed(0)
    return PixelPolicy(3, size, 3, PolicyConfig())


def test_pooled_lora_starts_at_the_base_and_routes_per_sample() -> None:
    g = torch.Generator().manual_seed(0)
    base = nn.Linear(5, 4)
    layer = PooledLoRALinear(base, pool=3, rank=2, alpha=4.0, generator=g)
    x = torch.randn(6, 5, generator=g)
    slot = torch.tensor([0, 1, 2, 0, 1, 2])
    torch.testing.assert_close(layer(x, slot), base(x))  # B = 0: every modulator is the identity
    with torch.no_grad():
        layer.lora_b[1].normal_(generator=g)
    out = layer(x, slot)
    on_one = slot == 1
    torch.testing.assert_close(out[~on_one], base(x)[~on_one])  # other slots unaffected
    expected = base(x[on_one]) + 2.0 * x[on_one] @ layer.lora_a[1].T @ layer.lora_b[1].T
    torch.testing.assert_close(out[on_one], expected)


def test_retrieval_is_top1_cosine_among_allowed_keys() -> None:
    model = L2MPolicy(_policy(), pool=4, rank=2, alpha=2.0)
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


def _synthetic_demos(n: int, seed: int, label_fn) -> Demos:
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(n, 3, 12, 12, generator=g)
    obs[:, seed % 3] += 1.0  # tasks differ in colour, so their queries differ
    labels = label_fn(obs)
    hist = torch.arange(n).unsqueeze(-1).repeat(1, 2)
    return Demos(obs, labels, hist, torch.arange(n))


def test_claimed_modulators_are_frozen_so_an_earlier_task_is_not_forgotten() -> None:
    model = L2MPolicy(_policy(), pool=4, rank=2, alpha=4.0)
    config = L2MConfig(task_steps=15, batch_size=16, lr=1e-2, key_coef=0.5)
    g = torch.Generator().manual_seed(0)
    first = _synthetic_demos(64, 0, lambda o: (o[:, 1, 0, 0] > 0.5).long())
    second = _synthetic_demos(64, 1, lambda o: 2 - (o[:, 1, 0, 0] > 0.5).long() * 2)
    l2m_learn_task(model, first, 0, config, g)
    slot0 = model.claimed()
    assert len(slot0) == 1 and model.owner[slot0[0]] == 0
    convs, _ = model.frozen_features(first.obs)
    slots = torch.full((64,), slot0[0])
    before = model.logits_from(convs, slots).detach().clone()
    key_before = model.keys[slot0[0]].detach().clone()
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    moved = l2m_learn_task(model, second, 1, config, g)
    assert moved["slots"] == 1.0 and set(model.claimed()) - set(slot0)  # task 1 got its own slot
    torch.testing.assert_close(model.logits_from(convs, slots), before, rtol=0, atol=0)
    torch.testing.assert_close(model.keys[slot0[0]], key_before, rtol=0, atol=0)
    for k, v in model.backbone.state_dict().items():
        torch.testing.assert_close(v, backbone_before[k], rtol=0, atol=0)
    # task 1's own modulator did learn (its B moved away from zero)
    slot1 = [s for s in model.claimed() if s not in slot0][0]
    assert model.head.lora_b[slot1].abs().sum() > 0


def test_forgetting_is_the_drop_from_the_best_accuracy() -> None:
    matrix = [[0.9], [0.5, 0.8], [0.7, 0.6, 1.0]]
    assert forgetting(matrix) == pytest.approx(((0.9 - 0.7) + (0.8 - 0.6)) / 2)
    assert forgetting([[1.0]]) == 0.0


def test_history_query_averages_each_samples_window() -> None:
    feats = torch.arange(12.0).view(6, 2)
    hist = torch.tensor([[0, 0], [0, 1], [1, 2]])
    torch.testing.assert_close(history_query(feats, hist), torch.tensor([[0.0, 1.0], [1.0, 2.0], [3.0, 4.0]]))


def test_demos_label_the_permuted_expert_and_stay_within_episodes() -> None:
    task = TaskSpec("MiniGrid-Empty-5x5-v0", [1, 0, 2])
    demos = record_demos(task, size=15, episodes=3, noise=0.0, history=3, seed=0)
    assert demos.obs.shape[1:] == (3, 15, 15) and len(demos.labels) == len(demos.history)
    idx = torch.arange(len(demos.labels))
    assert (demos.history <= idx[:, None]).all()
    assert (demos.episode[demos.history] == demos.episode[:, None]).all()
    # replaying the labels in the permuted environment reaches the goal like the expert (noise 0)
    env = permuted_env(task, 15)
    env.reset(seed=0)
    first = demos.labels[demos.episode == 0].tolist()
    rewards = [env.step(a)[1] for a in first]
    assert rewards[-1] > 0.5 and all(r == 0 for r in rewards[:-1])
    env.close()


def test_l2m_command_end_to_end(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("WARMSTART_RUNS", str(tmp_path / "runs"))
    out = tmp_path / "l2m"
    argv = ["l2m", "--seeds", "1", "--out", str(out), "--setup.size", "15", "--setup.episodes", "4"]
    argv += ["--setup.pretrain_steps", "20", "--setup.task_steps", "10", "--setup.eval_episodes", "1"]
    argv += ["--setup.pretrain_tasks", '[{"env_id": "MiniGrid-Empty-5x5-v0"}]']
    argv += ["--setup.new_tasks", '[{"env_id": "MiniGrid-Empty-6x6-v0", "permutation": [1, 0, 2]}]']
    assert app.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"pretrained (frozen)", "full fine-tuning", "l2m"}
    assert (out / "report.md").is_file() and (out / "plot.png").is_file()
    matrices = json.loads((out / "matrices.json").read_text())[0]
    assert matrices["tasks"] == ["Empty-5x5", "Empty-6x6/102"]
    for arm in ("full fine-tuning", "l2m"):
        assert [len(row) for row in matrices["matrix"][arm]] == [1, 2]
        assert all(0.0 <= a <= 1.0 for row in matrices["matrix"][arm] for a in row)
    assert np.isfinite(matrices["returns"]["l2m"]).all()


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
def test_l2m_bad_input_is_one_line_exit_2(tmp_path, monkeypatch, capsys, extra, needle) -> None:
    monkeypatch.setenv("WARMSTART_RUNS", str(tmp_path / "runs"))
    assert app.main(["l2m", "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
