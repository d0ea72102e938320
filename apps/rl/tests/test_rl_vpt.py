"""VPT maths: IDM windows, the policy's causal frame stack, the BC -> SB3 weight hand-off (with the stack), the
KL term, threshold and curve helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from warmstart_rl.bench import return_curve
from warmstart_rl.data import EnvConfig, Episode, make_policy_env, rollout, to_chw
from warmstart_rl.models import (
    EncoderConfig,
    IDMConfig,
    InverseDynamicsModel,
    PixelPolicy,
    PolicyConfig,
    load_model,
    model_spec,
    save_model,
)
from warmstart_rl.vpt import (
    FrameDataset,
    load_policy_into_ppo,
    policy_kwargs,
    steps_to_threshold,
    window_indices,
)

ENV = EnvConfig(env_id="MiniGrid-Empty-Random-5x5-v0")


@given(steps=st.integers(1, 30), context=st.integers(0, 3))
def test_window_is_non_causal_and_clipped(steps: int, context: int) -> None:
    idx = window_indices(steps, context)
    assert idx.shape == (steps, 2 * context + 2)
    assert idx.min() >= 0 and idx.max() <= steps
    t = np.arange(steps)
    # the window always contains the transition's own frames o_t and o_{t+1} (it looks into the future)
    assert (idx[:, context] == t).all() and (idx[:, context + 1] == t + 1).all()
    assert (np.diff(idx, axis=1) >= 0).all()


def test_bc_frame_stack_is_the_envs_and_causal() -> None:
    # BC's dataset rebuilds, from single recorded frames, exactly the stack the policy env hands PPO, and
    # item t never depends on a frame after o_t
    k = 3
    env = make_policy_env(ENV, k, seed=0)
    stacked, actions, _ = rollout(env, lambda obs: int(env.action_space.sample()), seed=4)  # (T+1, H, W, 3k)
    env.close()
    assert stacked.shape[1:] == (20, 20, 3 * k)
    frames = np.ascontiguousarray(stacked[..., -3:])  # the current frame is the last channel block
    data = FrameDataset([Episode("e", frames, actions, labelled=True)], [actions], frame_stack=k)
    for t in range(len(actions)):
        torch.testing.assert_close(data[t]["obs"], torch.from_numpy(to_chw(stacked[t : t + 1])[0]))
    t = len(actions) // 2
    before = data[t]["obs"].clone()
    frames[t + 1 :] = 255 - frames[t + 1 :]  # change the future: o_{t+1} ..
    torch.testing.assert_close(data[t]["obs"], before)
    assert not torch.equal(data[t + 1]["obs"], before)


def _ppo(policy_config: PolicyConfig, kl: float = 0.0, reference=None):
    from stable_baselines3.common.vec_env import DummyVecEnv

    from warmstart_rl.klppo import kl_ppo_class

    k = policy_config.frame_stack or 1
    venv = DummyVecEnv([lambda: make_policy_env(ENV, k, seed=0)])
    return kl_ppo_class()(
        "CnnPolicy",
        venv,
        n_steps=32,
        batch_size=16,
        n_epochs=1,
        seed=0,
        device="cpu",
        policy_kwargs=policy_kwargs(policy_config),
        reference=reference,
        kl_coef=kl,
    )


@pytest.mark.parametrize(("frame_stack", "diff"), [(1, False), (4, True)])
def test_bc_weights_reach_sb3_unchanged(frame_stack: int, diff: bool) -> None:
    # after the hand-off, SB3's action distribution on any observation (a frame stack of k frames, with
    # their differences) is exactly the BC policy's softmax
    torch.manual_seed(3)
    config = PolicyConfig(EncoderConfig(frame_diff=diff), frame_stack=frame_stack)
    bc = PixelPolicy(3, 20, 3, config).eval()
    model = _ppo(config)
    assert model.observation_space.shape == (3 * frame_stack, 20, 20)
    obs = torch.randint(0, 256, (5, 3 * frame_stack, 20, 20)).float()  # SB3 divides raw pixels by 255
    with torch.no_grad():
        before = model.policy.get_distribution(obs).distribution.probs
        load_policy_into_ppo(model, bc)
        after = model.policy.get_distribution(obs).distribution.probs
        expected = torch.softmax(bc(obs / 255.0), -1)
    assert not torch.allclose(before, expected, atol=1e-3)  # SB3's own init differs
    torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-6)


def test_kl_to_pretrained_is_zero_at_init_and_pulls_back() -> None:
    # at the hand-off the KL to the reference is 0; after PPO updates with a large rho it stays smaller
    # than without the penalty (same seed, same rollouts up to the policy change)
    torch.manual_seed(0)
    config = PolicyConfig()
    bc = PixelPolicy(3, 20, 3, config).eval()
    kls = {}
    for rho in (0.0, 5.0):
        model = _ppo(config, kl=rho, reference=PixelPolicy(3, 20, 3, config).eval())
        model.reference.load_state_dict(bc.state_dict())
        load_policy_into_ppo(model, bc)
        obs = torch.randint(0, 256, (64, 3, 20, 20)).float()
        with torch.no_grad():
            p0 = model.policy.get_distribution(obs).distribution.logits.log_softmax(-1)
            ref = bc(obs / 255.0).log_softmax(-1)
            assert float((ref.exp() * (ref - p0)).sum(-1).mean()) < 1e-6
        model.learn(256)
        with torch.no_grad():
            p1 = model.policy.get_distribution(obs).distribution.logits.log_softmax(-1)
        kls[rho] = float((ref.exp() * (ref - p1)).sum(-1).mean())
    assert kls[5.0] < kls[0.0]


def test_model_round_trip(tmp_path) -> None:
    idm = InverseDynamicsModel(3, 20, 3, IDMConfig(context=1))
    save_model(idm, tmp_path / "idm", "idm", model_spec(IDMConfig(context=1), 3, [20, 20, 3], {}))
    loaded, spec = load_model(tmp_path / "idm", "idm")
    x = torch.rand(2, 4, 3, 20, 20)
    torch.testing.assert_close(loaded(x), idm(x))
    from warmstart.errors import CheckpointError

    with pytest.raises(CheckpointError, match="holds a rl.idm model where a rl.policy is needed"):
        load_model(tmp_path / "idm", "policy")


@settings(max_examples=30)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=40), st.floats(0.05, 1.0))
def test_steps_to_threshold_is_first_crossing(returns: list[float], threshold: float) -> None:
    curve = [(10 * (i + 1), r) for i, r in enumerate(returns)]
    hit = steps_to_threshold(curve, threshold, window=3)
    means = [np.mean(returns[max(0, i - 2) : i + 1]) for i in range(len(returns))]
    crossing = [10 * (i + 1) for i in range(2, len(returns)) if means[i] >= threshold]
    assert hit == (crossing[0] if crossing else None)


def test_return_curve_grid() -> None:
    curve = [(5, 0.0), (12, 1.0), (30, 1.0)]
    assert return_curve(curve, every=10, total=30, window=2) == [(10, 0.0), (20, 0.5), (30, 1.0)]


@given(st.lists(st.integers(0, 3), min_size=1, max_size=50))
def test_class_weights_give_every_present_action_equal_total_weight(actions: list[int]) -> None:
    from warmstart_rl.vpt import class_weights

    labels = np.asarray(actions)
    weights = class_weights(labels, 4).numpy()
    totals = np.bincount(labels, minlength=4) * weights  # each present class: N / A
    present = np.bincount(labels, minlength=4) > 0
    np.testing.assert_allclose(totals[present], len(labels) / 4, rtol=1e-5)
    assert (weights[~present] == 0).all()


def test_finetune_takes_a_stacked_policy_with_differences() -> None:
    # finetune_ppo builds the stacked env from the BC policy's own frame_stack and accepts its weights
    from warmstart_rl.vpt import PPOConfig, finetune_ppo

    config = PolicyConfig(EncoderConfig(frame_diff=True), frame_stack=2)
    bc = PixelPolicy(3, 20, 3, config).eval()
    ppo = PPOConfig(total_steps=32, n_envs=1, n_steps=32, batch_size=16, n_epochs=1, start_check_episodes=0)
    result = finetune_ppo(ENV, ppo, config, bc, seed=0)
    assert result["model"].observation_space.shape == (6, 20, 20) and result["steps"] == 32
