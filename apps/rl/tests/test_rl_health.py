"""No silent failures: per-env defaults, the IDM quality gate, a BC start below random, RoboFuME's classifier
health, truncated files, reward scaling, env steps/s, and every model reloading with one call."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from warmstart.errors import ConfigError, DataError
from warmstart_rl.cli import app
from warmstart_rl.data import EnvConfig, collect, load_corpus, make_env

ENV = ["--env.env_id", "MiniGrid-Empty-Random-5x5-v0"]
FAST = ["--engine.train.max_steps", "30", "--engine.logging.progress", "none"]


# -- per-env defaults ------------------------------------------------------------------------------
def test_minigrid_subset_does_not_leak_into_atari() -> None:
    grid = EnvConfig().resolved()
    assert (grid.size, grid.actions) == (20, 3)
    env = make_env(EnvConfig("ALE/Breakout-v5"))
    try:
        assert env.action_space.n == 4  # Breakout's full minimal action set, not MiniGrid's first 3
        assert env.observation_space.shape == (64, 64, 3)
        assert env.unwrapped._frameskip == 4  # ALE v5's own frame skip
    finally:
        env.close()
    env = make_env(EnvConfig("ALE/Breakout-v5", frame_skip=2, sticky_actions=0.0))
    try:
        assert env.unwrapped._frameskip == 2
    finally:
        env.close()
    full = make_env(EnvConfig(actions=None))
    try:
        assert full.action_space.n == 7  # null keeps every MiniGrid action
    finally:
        full.close()
    assert EnvConfig("CartPole-v1").resolved().size == 64
    with pytest.raises(ConfigError, match="ALE games only"):
        EnvConfig("CartPole-v1", frame_skip=2).resolved()


def test_collect_reports_env_steps_per_s(tmp_path, capsys) -> None:
    summary = collect(tmp_path / "c", EnvConfig(), episodes=3, labelled=1, seed=0)
    steps = [json.loads(line)["steps"] for line in (tmp_path / "c" / "index.jsonl").read_text().splitlines()]
    assert summary["env_steps"] == sum(steps) > 0
    assert summary["env_steps_per_s"] > 0
    assert (
        app.main(["collect", *ENV, "--episodes", "2", "--labelled", "1", "--out", str(tmp_path / "d")]) == 0
    )
    assert "env_steps_per_s" in capsys.readouterr().out
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    assert meta["env"]["size"] == 20 and meta["env"]["actions"] == 3  # the resolved env is what is saved


# -- the IDM quality gate --------------------------------------------------------------------------
def test_idm_gate_figures() -> None:
    from warmstart_rl.vpt import idm_gate

    at_chance = idm_gate({"idm/heldout_acc": 0.17, "idm/majority_share": 0.1}, 6, 0.1)
    assert not at_chance["passed"] and "0.170" in at_chance["line"] and "0.167" in at_chance["line"]
    # chance is the larger of 1/A and the majority share: always predicting the common action is no skill
    majority = idm_gate({"idm/heldout_acc": 0.65, "idm/majority_share": 0.6}, 3, 0.1)
    assert not majority["passed"] and majority["chance"] == pytest.approx(0.6)
    assert idm_gate({"idm/heldout_acc": 0.9, "idm/majority_share": 0.4}, 3, 0.1)["passed"]
    assert not idm_gate({"idm/heldout_acc": float("nan")}, 3, 0.1)["passed"]


def _scrambled_corpus(tmp_path) -> str:
    """A corpus whose labelled actions are random relabelings: no IDM can beat chance on it."""
    data = tmp_path / "corpus"
    assert app.main(["collect", *ENV, "--episodes", "12", "--labelled", "8", "--out", str(data)]) == 0
    rng = np.random.default_rng(0)
    for line in (data / "index.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["labelled"]:
            path = data / record["file"]
            with np.load(path) as f:
                arrays = dict(f)
            arrays["actions"] = rng.integers(0, 3, size=len(arrays["actions"]))
            np.savez_compressed(path, **arrays)
    return str(data)


def test_idm_label_refuses_an_idm_at_chance_unless_forced(tmp_path, capsys, one_line_error) -> None:
    data = _scrambled_corpus(tmp_path)
    idm = tmp_path / "idm"
    argv = ["idm-train", "--data", data, *FAST, "--idm.max_rounds", "1", "--idm.heldout_fraction", "0.4"]
    assert app.main([*argv, "--out", str(idm)]) == 0
    assert "IDM did not learn" in capsys.readouterr().out.strip().splitlines()[-1]  # the run's last line
    spec = json.loads((idm / "idm" / "config.json").read_text())
    assert spec["metrics"]["idm/gate_passed"] == 0.0
    assert app.main(["idm-label", "--data", data, "--model", str(idm)]) == 2
    err = one_line_error(capsys)
    assert "IDM did not learn" in err and "chance" in err and "--force" in err
    assert app.main(["idm-label", "--data", data, "--model", str(idm), "--force", "true"]) == 0
    assert "labelled anyway" in capsys.readouterr().out


def test_finetune_warns_when_the_bc_start_is_below_random() -> None:
    from warmstart_rl.models import PixelPolicy, PolicyConfig
    from warmstart_rl.vpt import PPOConfig, check_start

    torch.manual_seed(0)
    policy = PixelPolicy(3, 20, 3, PolicyConfig())
    with torch.no_grad():
        policy.head.weight.zero_()
        policy.head.bias.copy_(torch.tensor([20.0, 0.0, 0.0]))  # always turn left: never reaches the goal
    env = EnvConfig(max_episode_steps=30)
    check = check_start(policy, env, PPOConfig(start_check_episodes=6), seed=0)
    assert check["bc_return"] == 0.0 and check["random_return"] > 0.0
    assert check["below_random"] and "below a random policy" in check["line"]


# -- RoboFuME's classifier health ----------------------------------------------------------------------
def test_classifier_health_lines() -> None:
    from warmstart_rl.robofume import classifier_health

    never = classifier_health({"classifier/balanced_acc": 0.5, "classifier/tpr": 0.0}, 0.1)
    assert not never["healthy"] and "never fires" in never["line"]
    chance = classifier_health({"classifier/balanced_acc": 0.55, "classifier/tpr": 0.4}, 0.1)
    assert not chance["healthy"] and "at chance" in chance["line"]
    assert not classifier_health(
        {"classifier/balanced_acc": float("nan"), "classifier/tpr": float("nan")}, 0.1
    )["healthy"]
    assert classifier_health({"classifier/balanced_acc": 0.9, "classifier/tpr": 0.8}, 0.1)["healthy"]
    # the reset-free initial-state (backward) classifier: the same checks, its own name in the line
    initial = {"initial_classifier/balanced_acc": 0.72, "initial_classifier/tpr": 0.8}
    assert classifier_health(initial, 0.1, "initial_classifier")["healthy"]
    low = classifier_health(initial, 0.25, "initial_classifier")
    assert not low["healthy"] and low["line"].startswith("initial-state classifier at chance")
    silent = {"initial_classifier/balanced_acc": 0.5, "initial_classifier/tpr": 0.0}
    assert (
        "initial-state classifier never fires" in classifier_health(silent, 0.1, "initial_classifier")["line"]
    )
    # one line for the run: the unhealthy part first, each part kept under its own key
    from warmstart_rl.robofume import combined_health

    both = combined_health(
        classifier_health({"classifier/balanced_acc": 0.9, "classifier/tpr": 0.8}, 0.1), low
    )
    assert not both["healthy"] and both["line"].startswith("initial-state classifier at chance")
    assert both["success_classifier"]["healthy"] and not both["initial_classifier"]["healthy"]


def test_unhealthy_classifier_falls_back_or_stops(tmp_path, capsys, one_line_error) -> None:
    data = tmp_path / "demos"
    assert (
        app.main(["collect", "--episodes", "6", "--labelled", "6", "--noise", "0.1", "--out", str(data)]) == 0
    )
    # a margin no classifier can clear makes the run take its fallback
    argv = [
        "robofume",
        "--data",
        str(data),
        *FAST,
        "--options.eval_episodes",
        "1",
        "--options.online_steps",
        "30",
    ]
    argv += ["--options.batch_size", "8", "--options.health_margin", "0.6"]
    out = tmp_path / "rf"
    capsys.readouterr()
    assert app.main([*argv, "--out", str(out)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("warning: success classifier") and "environment's reward instead" in last
    health = json.loads((out / "health.json").read_text())
    assert health["reward_source"] == "env" and not health["healthy"]
    assert app.main([*argv, "--options.reward_fallback", "stop"]) == 2
    assert "--options.reward_fallback env" in one_line_error(capsys)
    # reset-free: the initial-state classifier fails the same margin; the run falls back to resets (and then
    # the success classifier to the env reward), both said in the last line and health.json, or it stops
    rf = [*argv, "--options.reset_free", "true", "--options.online_steps", "0"]  # decided before online
    assert app.main([*rf, "--out", str(tmp_path / "rf-resets")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("warning: success classifier") and "environment's reward instead" in last
    assert "initial-state classifier" in last and "with resets instead" in last
    health = json.loads((tmp_path / "rf-resets" / "health.json").read_text())
    assert health["fine_tuning"] == "resets" and not health["initial_classifier"]["healthy"]
    assert not (tmp_path / "rf-resets" / "qnet-backward").exists()  # no backward task was run
    # the stop branch through the library (the CLI's one-line DataError is checked above): no parser build
    from warmstart.engine import quick_config
    from warmstart_rl.robofume import RoboFuMEConfig, run_robofume

    stop = RoboFuMEConfig(online_steps=0, reset_free=True, health_margin=0.6, initial_fallback="stop")
    with pytest.raises(DataError, match="--options.initial_fallback resets"):
        run_robofume(load_corpus(data), stop, quick_config(30, 8, 1e-3, 0, warmup=0))


# -- truncated files -------------------------------------------------------------------------------
def test_truncated_episode_is_one_line_or_skipped(tmp_path, capsys, one_line_error) -> None:
    data = tmp_path / "corpus"
    assert app.main(["collect", *ENV, "--episodes", "6", "--labelled", "4", "--out", str(data)]) == 0
    bad = data / "episodes" / "ep-000001.npz"
    bad.write_bytes(bad.read_bytes()[:50])
    capsys.readouterr()
    assert app.main(["idm-train", "--data", str(data), *FAST]) == 2
    err = one_line_error(capsys)
    assert str(bad) in err and "truncated" in err
    with pytest.raises(DataError, match="ep-000001"):
        load_corpus(data)
    corpus = load_corpus(data, on_bad_file="skip")
    assert corpus.meta["skipped_files"] == 1 and len(corpus.episodes) == 5
    out = tmp_path / "idm"
    assert (
        app.main(["idm-train", "--data", str(data), *FAST, "--on_bad_file", "skip", "--out", str(out)]) == 0
    )


def test_truncated_policy_weights_are_one_line(tmp_path, capsys, one_line_error) -> None:
    from warmstart_rl.models import PixelPolicy, PolicyConfig, model_spec, save_model

    policy = PixelPolicy(3, 20, 3, PolicyConfig())
    folder = save_model(
        policy, tmp_path / "bc" / "policy", "policy", model_spec(PolicyConfig(), 3, [20, 20, 3], {})
    )
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    capsys.readouterr()
    assert app.main(["finetune", "--policy", str(tmp_path / "bc"), "--ppo.total_steps", "64"]) == 2
    assert "model.safetensors" in one_line_error(capsys)


def test_legacy_layout_truncated_weights_are_one_line(tmp_path) -> None:
    from warmstart.errors import CheckpointError
    from warmstart_rl.models import PolicyConfig, load_model, model_spec

    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"kind": "policy", **model_spec(PolicyConfig(), 3, [20, 20, 3], {})})
    )
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_model(folder, "policy")


# -- reward scaling --------------------------------------------------------------------------------
def test_symlog_round_trip_and_reward_head_on_the_env_scale() -> None:
    from warmstart_rl.worldmodel import WorldModel, WorldModelConfig, symexp, symlog

    x = torch.tensor([-30.0, -1.0, 0.0, 0.5, 5.0, 30.0])
    torch.testing.assert_close(symexp(symlog(x)), x)
    assert symlog(torch.tensor(30.0)) < 3.5  # Atari-scale rewards are squashed for the regression
    torch.manual_seed(0)
    model = WorldModel(2, 16, WorldModelConfig(channels=[4, 8], deter=8, stoch=4, hidden=8))
    last = model.reward[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(float(symlog(torch.tensor(30.0))))
    feat = torch.randn(2, 3, model.feat_dim)
    torch.testing.assert_close(model.predict_reward(feat), torch.full((2, 3), 30.0))
    batch = {
        "obs": torch.rand(2, 3, 3, 16, 16),
        "is_first": torch.tensor([[1.0, 0, 0]] * 2),
        "action": torch.zeros(2, 3, 2),
        "reward": torch.full((2, 3), 30.0),
        "cont": torch.ones(2, 3),
    }
    _, metrics, _ = model.loss(batch, use_actions=True)
    assert metrics["reward_loss"] < 1e-8  # the head is scored on symlog(r), where it is exact


# -- replay ----------------------------------------------------------------------------------------
def test_replay_is_preallocated_and_grows() -> None:
    from warmstart_rl.agent import Replay

    replay = Replay(2, capacity=2)
    frame = np.zeros((4, 4, 3), np.uint8)
    for i in range(5):
        replay.add(frame + i, i % 2 if i else -1, float(i), i == 0, False)
    assert len(replay) == 5 and replay.capacity == 8 and replay.obs.shape == (8, 4, 4, 3)
    batch = replay.sample(3, 5, np.random.default_rng(0))
    torch.testing.assert_close(batch["reward"][0], torch.arange(5.0))
    assert batch["obs"][0, 4].max() == pytest.approx(4 / 255)


# -- every model reloads with one call; the first layout still loads -------------------------------
def test_every_rl_model_reloads_with_one_call(tmp_path) -> None:
    from warmstart_rl.agent import ActorCritic, save_agent
    from warmstart_rl.models import (
        IDMConfig,
        InverseDynamicsModel,
        PixelPolicy,
        PolicyConfig,
        load_model,
        model_spec,
    )
    from warmstart_rl.models import save_model as save_rl
    from warmstart_rl.worldmodel import WorldModel, WorldModelConfig, save_world_model

    torch.manual_seed(0)
    idm = InverseDynamicsModel(4, 16, 3, IDMConfig())
    policy = PixelPolicy(4, 16, 3, PolicyConfig())
    world = WorldModel(0, 16, WorldModelConfig(channels=[4, 8], deter=8, stoch=4, hidden=8))
    agent = ActorCritic(12, 4, 8)
    save_rl(idm, tmp_path / "idm", "idm", model_spec(IDMConfig(), 4, [16, 16, 3], {"env_id": "x"}))
    save_rl(
        policy, tmp_path / "policy", "policy", model_spec(PolicyConfig(), 4, [16, 16, 3], {"env_id": "x"})
    )
    save_rl(policy, tmp_path / "clf", "success-classifier", model_spec(PolicyConfig(), 4, [16, 16, 3], {}))
    save_world_model(world, tmp_path / "wm", None)
    save_agent(agent, tmp_path / "agent", {"env_id": "x"})
    x = torch.rand(2, 4, 3, 16, 16)
    assert torch.equal(InverseDynamicsModel.from_pretrained(tmp_path / "idm")(x), idm(x))
    obs = torch.rand(2, 3, 16, 16)
    assert torch.equal(PixelPolicy.from_pretrained(tmp_path / "policy")(obs), policy(obs))
    assert torch.equal(load_model(tmp_path / "clf", "success-classifier")[0](obs), policy(obs))
    reloaded = WorldModel.from_pretrained(tmp_path / "wm")
    assert reloaded.n_actions == 0 and torch.equal(reloaded.encode(obs), world.encode(obs))
    feat = torch.rand(2, 12)
    assert torch.equal(ActorCritic.from_pretrained(tmp_path / "agent").actor(feat), agent.actor(feat))
    assert (tmp_path / "idm" / "README.md").read_text().count("VPT") >= 1  # the model card


def test_first_layout_folders_still_load(tmp_path) -> None:
    from safetensors.torch import save_file

    from warmstart_rl.models import EncoderConfig, IDMConfig, InverseDynamicsModel
    from warmstart_rl.vpt import load_idm
    from warmstart_rl.worldmodel import WorldModel, WorldModelConfig, load_world_model

    torch.manual_seed(0)
    old_idm = InverseDynamicsModel(3, 20, 3, IDMConfig(diff=False))
    folder = tmp_path / "run" / "idm"
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in old_idm.state_dict().items()}, str(folder / "model.safetensors"))
    model_cfg = {"encoder": {"channels": [16, 32, 32], "features_dim": 64}, "context": 1, "hidden": 64}
    spec = {
        "kind": "idm",
        "model": model_cfg,
        "n_actions": 3,
        "frame_shape": [20, 20, 3],
        "env": {},
        "metrics": {},
    }
    (folder / "config.json").write_text(json.dumps(spec))
    idm, loaded = load_idm(tmp_path / "run")
    x = torch.rand(2, 4, 3, 20, 20)
    assert torch.equal(idm(x), old_idm(x)) and idm.config.encoder == EncoderConfig()
    cfg = WorldModelConfig(channels=[4, 8], deter=8, stoch=4, hidden=8)
    old_wm = WorldModel(3, 20, cfg)
    wm_dir = tmp_path / "wm"
    wm_dir.mkdir()
    save_file({k: v.contiguous() for k, v in old_wm.state_dict().items()}, str(wm_dir / "model.safetensors"))
    raw = {k: v for k, v in cfg.__dict__.items() if k != "reward_transform"}
    (wm_dir / "config.json").write_text(
        json.dumps({"kind": "contextwm", "model": raw, "n_actions": 3, "frame_shape": [20, 20, 3], "env": {}})
    )
    wm, _ = load_world_model(wm_dir)
    assert wm.config.reward_transform == "none"  # its reward head was trained on raw rewards
    obs = torch.rand(1, 3, 20, 20)
    assert torch.equal(wm.encode(obs), old_wm.encode(obs))


# -- ContextWM on other environments' videos --------------------------------------------------------
def test_worldmodel_pretrains_on_other_envs_videos_and_finetunes_on_the_target(
    tmp_path, capsys, one_line_error
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):  # plain .npz episodes of some other "environment" at another size, no actions
        np.savez_compressed(
            other / f"clip{i}.npz", frames=rng.integers(0, 255, (12, 32, 32, 3), dtype=np.uint8)
        )
    corpus = tmp_path / "grid"
    argv = ["collect", "--env.env_id", "MiniGrid-Empty-6x6-v0", "--env.size", "24", "--episodes", "4"]
    assert app.main([*argv, "--labelled", "0", "--out", str(corpus)]) == 0
    pre = tmp_path / "pre"
    arch = ["--model.channels", "[4, 8]", "--model.deter", "8", "--model.stoch", "4", "--model.hidden", "8"]
    argv = ["worldmodel-pretrain", "--videos", f"[{other}, {corpus}]", "--size", "20", *arch]
    argv += ["--options.clip_length", "6", *FAST, "--engine.train.micro_batch_size", "4", "--out", str(pre)]
    assert app.main(argv) == 0
    meta = json.loads((pre / "worldmodel" / "config.json").read_text())
    assert meta["config"]["n_actions"] == 0 and meta["config"]["image_size"] == 20 and meta["env"] is None
    assert [s["env_id"] for s in meta["sources"]] == ["unknown", "MiniGrid-Empty-6x6-v0"]
    capsys.readouterr()
    agent = ["--agent.total_steps", "40", "--agent.prefill", "30", "--agent.train_every", "10"]
    agent += ["--agent.batch_size", "2", "--agent.clip_length", "6", "--agent.horizon", "3"]
    assert app.main(["worldmodel-finetune", "--model", str(pre), *agent]) == 2  # which target?
    assert "--env.env_id" in one_line_error(capsys)
    out = tmp_path / "ft"
    assert app.main(["worldmodel-finetune", "--model", str(pre), *ENV, *agent, "--out", str(out)]) == 0
    ft = json.loads((out / "worldmodel" / "config.json").read_text())
    assert ft["config"]["n_actions"] == 3 and ft["env"]["env_id"] == "MiniGrid-Empty-Random-5x5-v0"


# -- inverse dynamics as a representation -------------------------------------------------------------
def test_idm_repr_bench_writes_report(tmp_path) -> None:
    out = tmp_path / "repr"
    argv = [
        "bench",
        "--kind",
        "idm-repr",
        "--representation.seeds",
        "1",
        "--representation.play_episodes",
        "3",
    ]
    argv += ["--representation.demos", "1", "--representation.heldout_episodes", "1"]
    argv += ["--representation.pretrain_steps", "3", "--representation.bc_steps", "3"]
    argv += ["--representation.eval_episodes", "1", "--representation.max_episode_steps", "10"]
    assert app.main([*argv, "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"scratch", "inverse dynamics", "forward dynamics", "contrastive"}
    for method in results["methods"].values():
        assert len(method["values"]) == 1 and 0.0 <= method["values"][0] <= 1.0


def test_inverse_dynamics_pretraining_learns_the_executed_action() -> None:
    from warmstart_rl.idmrepr import Pretrainer, ReprConfig, record
    from warmstart_rl.models import EncoderConfig

    config = ReprConfig(size=12, max_episode_steps=15)
    play = record("MiniGrid-Empty-Random-5x5-v0", config, 6, 0.5, 0)
    torch.manual_seed(0)
    model = Pretrainer("inverse dynamics", 12, EncoderConfig([8, 8], 16))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    idx = torch.arange(len(play.action))
    with torch.no_grad():
        first = model.loss(play, idx).item()
    for _ in range(60):
        loss = model.loss(play, idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert model.loss(play, idx).item() < 0.7 * first  # o_t, o_{t+1} -> a_t is learnable on MiniGrid
