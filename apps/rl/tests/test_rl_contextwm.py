"""ContextWM: the maths of the world model and the imagination learner, and its CLI commands end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from warmstart_rl.cli import app
from warmstart_rl.contextwm import Replay, WorldModel, WorldModelConfig, lambda_returns

TINY = WorldModelConfig(channels=[4, 8], deter=8, stoch=4, hidden=8)


@pytest.fixture(autouse=True)
def _runs(tmp_path, monkeypatch):
    monkeypatch.setenv("WARMSTART_RUNS", str(tmp_path / "runs"))


def test_zero_initialised_action_input_keeps_the_action_free_dynamics() -> None:
    torch.manual_seed(0)
    model = WorldModel(3, 20, WorldModelConfig(channels=[4, 8], deter=8, stoch=4, hidden=8, stack=False))
    h, z = torch.randn(5, 8), torch.randn(5, 4)
    actions = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 1, 0]), 3).float()
    free = model.rssm.img_step(h, z, None)
    conditioned = model.rssm.img_step(h, z, actions)
    for a, b in zip(free, conditioned, strict=True):
        torch.testing.assert_close(a, b)
    # ... and the action input is trainable: a gradient reaches it
    conditioned[1].sum().backward()
    assert model.rssm.action_in.weight.grad.abs().sum() > 0


def test_stacked_action_conditioned_rssm_reads_the_pretrained_action_free_features() -> None:
    """APV / ContextWM fine-tuning: the action-free RSSM stays (weights and action-free role), a fresh
    action-conditioned RSSM is stacked on it; imagination rolls out that one and its features change with
    the actions once trained, while the action-free features never depend on the actions."""
    torch.manual_seed(0)
    pretrained = WorldModel(0, 20, TINY)
    before = {k: v.clone() for k, v in pretrained.rssm.state_dict().items()}
    model = pretrained.with_actions(3)
    assert model.ac_rssm is not None and model.dynamics is model.ac_rssm and model.rssm.action_in is None
    for key, value in model.rssm.state_dict().items():
        torch.testing.assert_close(value, before[key])
    batch = {
        "obs": torch.rand(2, 5, 3, 20, 20),
        "is_first": torch.tensor([[1.0, 0, 0, 0, 0]] * 2),
        "action": torch.nn.functional.one_hot(torch.randint(3, (2, 5)), 3).float(),
        "reward": torch.rand(2, 5),
        "cont": torch.ones(2, 5),
    }
    loss, metrics, states = model.loss(batch, use_actions=True, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert model.ac_rssm.posterior[0].weight.grad.abs().sum() > 0  # the stacked model trains ...
    assert model.rssm.posterior[0].weight.grad.abs().sum() > 0  # ... and so does the action-free one
    assert states["af_feat"].shape == (2, 5, 12) and states["h"].shape == (2, 5, 8)
    other = {**batch, "action": torch.nn.functional.one_hot(torch.randint(3, (2, 5)), 3).float()}
    gen = torch.Generator
    torch.manual_seed(1)
    _, _, again = model.loss(batch, use_actions=True, generator=gen().manual_seed(0))
    torch.manual_seed(1)
    _, _, changed = model.loss(other, use_actions=True, generator=gen().manual_seed(0))
    torch.testing.assert_close(again["af_feat"], changed["af_feat"])  # action-free: no action reaches it
    # round trip: a stacked fine-tuned model reloads with its stacked RSSM
    clone = WorldModel.from_hub_config(model.hub_config())
    assert clone.ac_rssm is not None and clone.load_state_dict(model.state_dict()) is not None


def test_intrinsic_bonus_is_larger_for_novel_sequences() -> None:
    """APV's kNN bonus: a sequence seen many times scores below a new one, and it is normalised."""
    from warmstart_rl.agent import AgentConfig, IntrinsicBonus

    torch.manual_seed(0)
    bonus = IntrinsicBonus(6, 8, AgentConfig(intrinsic=1.0, intrinsic_k=3, intrinsic_window=2), dim=16)
    seen = torch.randn(1, 4, 6).repeat(8, 1, 1)  # the same clip, 8 times
    for _ in range(3):
        familiar = bonus.rewards(seen)
    assert torch.all(familiar[:, 0] == 0)  # no full window yet at the first step
    novel = bonus.rewards(torch.randn(8, 4, 6) * 3)
    assert novel[:, 1:].mean() > 5 * familiar[:, 1:].mean() + 1e-3
    assert len(bonus.queue) == 3 * 8 * 3 + 8 * 3 and bonus.mean > 0


def test_decoder_reads_the_context_frame_only_in_contextwm() -> None:
    torch.manual_seed(0)
    feat = torch.randn(2, 12)
    frames = torch.rand(2, 3, 20, 20)
    with_context = WorldModel(3, 20, TINY)
    a = with_context.decoder(feat, with_context.context_tokens(frames))
    b = with_context.decoder(feat, with_context.context_tokens(frames.flip(0)))
    assert a.shape == (2, 3, 20, 20) and not torch.allclose(a, b)
    plain = WorldModel(3, 20, WorldModelConfig(channels=[4, 8], deter=8, stoch=4, hidden=8, context=False))
    assert plain.context_tokens(frames) is None and plain.context_encoder is None


def test_lambda_returns_limits() -> None:
    gen = torch.Generator().manual_seed(0)
    rewards, discounts = torch.rand(4, 3, generator=gen), 0.9 * torch.rand(4, 3, generator=gen)
    values = torch.rand(5, 3, generator=gen)
    # lam = 0: one-step TD targets
    torch.testing.assert_close(
        lambda_returns(rewards, discounts, values, 0.0), rewards + discounts * values[1:]
    )
    # lam = 1: discounted Monte-Carlo sum bootstrapped from the last value
    expected = values[-1]
    for t in reversed(range(4)):
        expected = rewards[t] + discounts[t] * expected
    torch.testing.assert_close(lambda_returns(rewards, discounts, values, 1.0)[0], expected)


def test_replay_clips_align_actions_and_episode_starts() -> None:
    replay = Replay(3)
    frame = np.zeros((20, 20, 3), np.uint8)
    replay.add(frame, -1, 0.0, True, False)
    replay.add(frame + 1, 2, 0.0, False, False)
    replay.add(frame + 2, 1, 1.0, False, True)
    replay.add(frame + 3, -1, 0.0, True, False)
    batch = replay.sample(4, 4, np.random.default_rng(0))
    assert batch["obs"].shape == (4, 4, 3, 20, 20)
    torch.testing.assert_close(
        batch["action"][0], torch.tensor([[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, 0.0]])
    )
    torch.testing.assert_close(batch["is_first"][0], torch.tensor([1, 0, 0, 1.0]))
    torch.testing.assert_close(batch["cont"][0], torch.tensor([1, 1, 0, 1.0]))
    torch.testing.assert_close(batch["reward"][0], torch.tensor([0, 0, 1, 0.0]))


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


ARCH = ["--channels", "[4,8]", "--deter", "16", "--stoch", "4", "--hidden", "16"]


def test_worldmodel_pretrain_and_finetune_end_to_end(tmp_path, capsys) -> None:
    data = tmp_path / "videos"
    assert (
        app.main(["collect", "--episodes", "12", "--labelled", "0", "--noise", "0.5", "--out", str(data)])
        == 0
    )
    pre = tmp_path / "wm"
    argv = [
        "worldmodel-pretrain",
        "--data",
        str(data),
        *[a.replace("--", "--model.", 1) if a.startswith("--") else a for a in ARCH],
    ]
    argv += [
        "--options.clip_length",
        "8",
        "--options.heldout_fraction",
        "0.25",
        "--engine.train.max_steps",
        "30",
    ]
    argv += [
        "--engine.train.micro_batch_size",
        "8",
        "--engine.optimizer.lr",
        "0.003",
        "--engine.logging.progress",
        "none",
    ]
    assert app.main([*argv, "--out", str(pre)]) == 0
    spec = json.loads((pre / "worldmodel" / "config.json").read_text())
    metrics = spec["metrics"]
    assert metrics["wm/heldout_recon"] < 0.5 * metrics["wm/heldout_recon_init"]  # it learned the videos
    assert spec["warmstart_kind"] == "rl.worldmodel" and spec["config"]["model"]["context"] is True
    assert spec["config"]["n_actions"] == 0  # pretrained action-free

    out = tmp_path / "ft"
    agent = ["--agent.total_steps", "60", "--agent.prefill", "40", "--agent.train_every", "10"]
    agent += ["--agent.batch_size", "4", "--agent.clip_length", "8", "--agent.horizon", "3"]
    bonus = ["--agent.intrinsic", "0.1", "--agent.intrinsic_k", "4"]  # APV's bonus on this run only
    assert app.main(["worldmodel-finetune", "--model", str(pre), *agent, *bonus, "--out", str(out)]) == 0
    finetuned = json.loads((out / "worldmodel" / "config.json").read_text())["metrics"]
    assert finetuned["wm/intrinsic"] > 0 and np.isfinite(finetuned["wm/intrinsic_loss"])
    curve = json.loads((out / "curve.json").read_text())
    assert all(0 < step <= 60 and 0.0 <= ret <= 1.0 for step, ret in curve)
    from safetensors.torch import load_file

    before = load_file(str(pre / "worldmodel" / "model.safetensors"))
    after = load_file(str(out / "worldmodel" / "model.safetensors"))
    assert not any(k.startswith("ac_rssm.") for k in before)  # pretrained action-free
    assert after["ac_rssm.action_in.weight"].abs().sum() > 0  # the stacked RSSM learned the actions
    from warmstart_rl.contextwm import ActorCritic, WorldModel

    assert WorldModel.from_pretrained(out / "worldmodel").n_actions == 3  # each reloads with one call
    assert ActorCritic.from_pretrained(out / "agent").n_actions == 3

    capsys.readouterr()
    assert app.main(["worldmodel-finetune", "--model", str(pre), "--env.size", "24", *agent]) == 2
    assert "pass --env.size 20" in _one_line_error(capsys)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["worldmodel-finetune", "--model", "/no/such/wm"], "config.json"),
        (["worldmodel-pretrain", "--data", "/no/such/corpus"], "is missing"),
        (["worldmodel-finetune", "--agent.total_steps", "10", "--agent.prefill", "20"], "must exceed"),
    ],
)
def test_worldmodel_bad_input_is_one_line_exit_2(argv, needle, capsys) -> None:
    assert app.main(argv) == 2
    assert needle in _one_line_error(capsys)


def test_worldmodel_bench_writes_report(tmp_path) -> None:
    out = tmp_path / "bench"
    argv = ["bench", "--kind", "worldmodel", "--worldmodel.seeds", "1", "--worldmodel.total_steps", "40"]
    argv += ["--worldmodel.prefill", "36", "--worldmodel.videos", "6", "--worldmodel.pretrain_steps", "2"]
    argv += ["--worldmodel.random_episodes", "3"]
    assert app.main([*argv, "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert (out / "report.md").is_file() and (out / "plot.png").is_file()
    assert set(results["methods"]) == {
        "scratch",
        "contextwm same-env videos",
        "contextwm other-env videos",
        "random policy",
    }
    from warmstart import cache

    assert len([a for a in cache.list_artifacts() if a.kind == "rl.worldmodel-source"]) == 2
    for method in results["methods"].values():
        assert len(method["values"]) == 1 and 0.0 <= method["values"][0] <= 1.0


class _BanditModel(nn.Module):
    """A stand-in world model: the deterministic state remembers the last action, reward 1 for action 0."""

    n_actions = 3

    def __init__(self) -> None:
        super().__init__()
        self.rssm = self
        self.reward = lambda feat: feat[..., :1]  # one-hot of action 0
        self.predict_reward = lambda feat: feat[..., 0]
        self.cont = lambda feat: torch.full_like(feat[..., :1], 10.0)

    def img_step(self, h, z, action):
        return action, torch.zeros_like(z), torch.full_like(z, 1e-6)


def test_imagination_actor_learns_the_rewarded_action() -> None:
    """REINFORCE with the critic baseline on imagined rollouts must raise pi(rewarded action)."""
    from warmstart_rl.contextwm import ActorCritic, AgentConfig, imagine_update

    torch.manual_seed(0)
    agent = ActorCritic(3 + 2, 3, 16, unimix=0.01)
    opt = torch.optim.Adam(list(agent.actor.parameters()) + list(agent.critic.parameters()), lr=3e-3)
    start_h, start_z = torch.zeros(32, 3), torch.zeros(32, 2)
    config, scale = AgentConfig(horizon=4), [0.0]
    feat = torch.zeros(1, 5)
    before = agent.policy(feat).probs[0, 0].item()
    for _ in range(60):
        metrics = imagine_update(_BanditModel(), agent, opt, start_h, start_z, config, scale)
    after = agent.policy(feat).probs[0, 0].item()
    assert before < 0.5 and after > 0.8, (before, after)
    assert agent.policy(feat).probs.min() >= 0.01 / 3 - 1e-6  # unimix floor
    assert scale[0] > 0 and metrics["entropy"] < 1.0
