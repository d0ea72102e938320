"""ContextWM: the maths of the world model and the imagination learner, and its CLI commands end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from warmstart_rl.cli import app
from warmstart_rl.contextwm import Replay, WorldModel, WorldModelConfig, lambda_returns, symlog

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
    bonus = IntrinsicBonus(6, AgentConfig(intrinsic=1.0, intrinsic_k=3, intrinsic_window=2), dim=16)
    seen = torch.randn(1, 4, 6).repeat(8, 1, 1)  # the same clip, 8 times
    for _ in range(3):
        familiar = bonus.rewards(seen)
    assert familiar.shape == (8, 3)  # one bonus per full window (T - window + 1 of them)
    novel = bonus.rewards(torch.randn(8, 4, 6) * 3)
    assert novel.mean() > 5 * familiar.mean() + 1e-3
    assert len(bonus.queue) == 3 * 8 * 3 + 8 * 3 and bonus.mean > 0


def test_intrinsic_bonus_enters_the_reward_heads_target_as_in_apv() -> None:
    """APV's code adds beta * r_int to the reward of the windows' first steps; the reward head learns that
    sum there and nothing on the last window - 1 steps."""
    torch.manual_seed(0)
    model = WorldModel(3, 20, TINY).with_actions(3)
    batch = {
        "obs": torch.rand(2, 5, 3, 20, 20),
        "is_first": torch.tensor([[1.0, 0, 0, 0, 0]] * 2),
        "action": torch.nn.functional.one_hot(torch.randint(3, (2, 5)), 3).float(),
        "reward": torch.zeros(2, 5),
        "cont": torch.ones(2, 5),
    }
    seen: list[torch.Tensor] = []

    def bonus(af_feat: torch.Tensor) -> torch.Tensor:
        seen.append(af_feat)
        return torch.full((2, 3), 2.0)  # windows of 3 steps: the first 3 steps get r + 2

    _, metrics, states = model.loss(batch, use_actions=True, reward_bonus=bonus)
    assert not seen[0].requires_grad and seen[0].shape == (2, 5, 12)  # detached action-free features
    with torch.no_grad():
        feat = torch.cat([states["h"], states["z"]], -1)[:, :3]  # (2, 3, F): the windows' first steps
        expected = (model.reward(feat).squeeze(-1) - symlog(torch.full((2, 3), 2.0))).pow(2).mean()
        plain = (model.reward(torch.cat([states["h"], states["z"]], -1)).squeeze(-1)).pow(2).mean()
    assert metrics["reward_loss"] == pytest.approx(float(expected), rel=1e-5)
    assert abs(float(expected) - float(plain)) > 0.1  # the bonus changed the target


def test_arms_of_a_seed_share_the_prefill_and_the_new_parts_initialisation() -> None:
    """Paired seeds: a scratch and a pretrained world model see the identical random prefill (same replay
    hash), and the stacked RSSM they get is initialised identically."""
    from warmstart_rl.agent import AgentConfig, train_agent
    from warmstart_rl.data import EnvConfig

    env = EnvConfig(max_episode_steps=20)
    config = AgentConfig(total_steps=14, prefill=12, train_every=100, batch_size=2, clip_length=4, horizon=2)
    torch.manual_seed(5)
    scratch, pretrained = WorldModel(0, 20, TINY), WorldModel(0, 20, TINY)
    a = train_agent(env, config, scratch, seed=3)
    b = train_agent(env, config, pretrained, seed=3)
    assert a["prefill_digest"] and a["prefill_digest"] == b["prefill_digest"]
    for key, value in scratch.ac_rssm.state_dict().items():
        torch.testing.assert_close(value, pretrained.ac_rssm.state_dict()[key])
    c = train_agent(env, config, WorldModel(0, 20, TINY), seed=4)
    assert c["prefill_digest"] != a["prefill_digest"]  # the hash does see the data


def test_bench_metrics_threshold_and_area() -> None:
    """Steps-to-threshold is the VPT helper's (first step where the last-10 mean reaches it); the area is
    the mean return of the episodes after the prefill; the threshold is a fraction of the expert's return."""
    from warmstart_rl.bench_worldmodel import WorldModelBenchConfig, expert_threshold, mean_return_after

    curve = [(100, 0.0), (200, 1.0), (300, 0.5), (400, 1.0)]
    assert mean_return_after(curve, 150) == pytest.approx(2.5 / 3)
    assert np.isnan(mean_return_after(curve, 400))
    threshold, expert = expert_threshold(WorldModelBenchConfig(expert_episodes=5, threshold_fraction=0.5))
    assert 0.8 < expert <= 1.0 and threshold == pytest.approx(0.5 * expert)
    assert expert_threshold(WorldModelBenchConfig(threshold=0.3)) == (
        0.3,
        pytest.approx(float("nan"), nan_ok=True),
    )


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


def test_context_attention_mask_hides_tokens_only_while_training() -> None:
    """ContextWM's context attention mask (ratio 0.75): while training each frame's cross-attention sees a
    random quarter of the context tokens (never none), in eval mode all of them, deterministically."""
    torch.manual_seed(0)
    model = WorldModel(3, 20, TINY)  # 20 px -> 5 x 5 = 25 context tokens
    feat, frames = torch.randn(64, 12), torch.rand(64, 3, 20, 20)
    tokens = model.context_tokens(frames)
    hidden = model.decoder.context_mask(tokens)
    assert hidden.shape == (64, 25) and (hidden.sum(-1) == 19).all()  # round(0.75 x 25) hidden, 6 kept
    assert len({tuple(row.tolist()) for row in hidden}) > 1  # drawn per frame
    model.eval()
    full = model.decoder(feat, tokens)
    torch.testing.assert_close(full, model.decoder(feat, tokens))
    model.train()
    masked = model.decoder(feat, tokens)
    assert not torch.allclose(masked, full)
    unmasked = WorldModel(
        3, 20, WorldModelConfig(channels=[4, 8], deter=8, stoch=4, hidden=8, context_mask=0.0)
    )
    unmasked.load_state_dict(model.state_dict())
    torch.testing.assert_close(unmasked.decoder(feat, tokens), full)  # training mode, no mask: as eval
    one = WorldModel(3, 20, WorldModelConfig(channels=[4, 8], deter=8, stoch=4, hidden=8, context_mask=1.0))
    assert (one.decoder.context_mask(tokens).sum(-1) == 24).all()  # one token is always kept


def test_reinitialise_draws_only_the_named_parts_afresh_and_leaves_the_global_rng() -> None:
    """The 'encoder only' transfer: the named parts are new (seeded by the seed alone), every other weight
    is the pretrained one, and the global RNG is untouched (the stacked RSSM starts as in every arm)."""
    torch.manual_seed(0)
    pretrained = WorldModel(3, 20, TINY)
    before = {k: v.clone() for k, v in pretrained.state_dict().items()}
    torch.manual_seed(7)
    pretrained.reinitialise(["rssm", "decoder"], seed=3)
    after_rng = torch.rand(1)
    torch.manual_seed(7)
    assert torch.equal(after_rng, torch.rand(1))
    again = WorldModel(3, 20, TINY)
    again.load_state_dict(before)
    again.reinitialise(["rssm", "decoder"], seed=3)
    fresh = ("rssm", "decoder", "context_encoder")
    state = pretrained.state_dict()
    for key, value in state.items():
        torch.testing.assert_close(value, again.state_dict()[key])  # the seed alone fixes the new parts
        if key.split(".")[0] not in fresh:
            assert torch.equal(value, before[key]), key  # the encoder, embedding and heads are kept
    for part in fresh:
        assert any(not torch.equal(v, before[k]) for k, v in state.items() if k.startswith(part + "."))
    with pytest.raises(Exception, match="use any of encoder, rssm, decoder"):
        pretrained.reinitialise(["reward"], seed=0)


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
    assert finetuned["wm/intrinsic"] > 0 and np.isfinite(finetuned["wm/reward_loss"])
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
    assert app.main(["worldmodel-finetune", "--model", str(pre), "--agent.reinit", "[heads]", *agent]) == 2
    assert "--agent.reinit 'heads': use any of encoder, rssm, decoder" in _one_line_error(capsys)


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
    argv += ["--worldmodel.random_episodes", "3", "--worldmodel.expert_episodes", "3"]
    assert app.main([*argv, "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert (out / "plot.png").is_file() and "Sample efficiency" in (out / "report.md").read_text()
    assert set(results["methods"]) == {
        "scratch",
        "contextwm same-env videos",
        "contextwm other-env videos",
        "contextwm other-env videos + APV bonus",
        "contextwm same-env videos, encoder only",
        "contextwm other-env videos, encoder only",
        "random policy",
    }
    from warmstart import cache

    assert len([a for a in cache.list_artifacts() if a.kind == "rl.worldmodel-source"]) == 2
    for method in results["methods"].values():
        assert len(method["values"]) == 1 and 0.0 <= method["values"][0] <= 1.0
    config = results["config"]
    assert config["paired_prefill"] is True and 0.5 < config["threshold"] < config["expert_return"]
    assert set(config["paired"]) == set(results["methods"]) - {"scratch", "random policy"}


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
