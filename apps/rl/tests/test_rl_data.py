"""Corpus format, experts and bad-input checks of warmstart_rl.data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from warmstart.errors import ConfigError, DataError
from warmstart_rl.data import (
    EnvConfig,
    collect,
    default_frame_stack,
    load_corpus,
    make_env,
    make_policy_env,
    minigrid_expert_action,
)

ENV = EnvConfig(env_id="MiniGrid-Empty-Random-5x5-v0")


def test_make_env_gives_pixels_and_discrete_actions() -> None:
    env = make_env(ENV, seed=0)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (20, 20, 3) and obs.dtype == np.uint8
    assert env.action_space.n == 3
    env.close()


def test_atari_policy_env_stacks_the_last_four_frames() -> None:
    # ALE's per-family default: the policy sees 4 frames (oldest first, fused along channels); the reset
    # pads with the first frame, and each step shifts the stack by one frame
    assert default_frame_stack("ALE/Breakout-v5") == 4 and default_frame_stack(ENV.env_id) == 1
    config = EnvConfig("ALE/Breakout-v5", sticky_actions=0.0)
    env = make_policy_env(config, default_frame_stack(config.env_id), seed=0)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 12) and obs.dtype == np.uint8
    blocks = [obs[..., 3 * j : 3 * j + 3] for j in range(4)]
    assert all(np.array_equal(b, blocks[0]) for b in blocks)
    nxt, *_ = env.step(1)  # FIRE
    np.testing.assert_array_equal(nxt[..., :9], obs[..., 3:])
    env.close()
    with pytest.raises(ConfigError, match="frame_stack"):
        make_policy_env(ENV, 0)


def test_expert_reaches_goal_in_shortest_path() -> None:
    # the BFS expert must finish every episode, in no more steps than rotations + Manhattan distance allow
    env = make_env(ENV, seed=0)
    for seed in range(5):
        env.reset(seed=seed)
        u = env.unwrapped
        goal = next(
            (x, y)
            for x in range(u.width)
            for y in range(u.height)
            if u.grid.get(x, y) is not None and u.grid.get(x, y).type == "goal"
        )
        bound = abs(goal[0] - u.agent_pos[0]) + abs(goal[1] - u.agent_pos[1]) + 3
        steps, done, reward = 0, False, 0.0
        while not done:
            _, reward, terminated, truncated, _ = env.step(minigrid_expert_action(env))
            steps, done = steps + 1, terminated or truncated
        assert reward > 0 and steps <= bound


def test_collect_writes_npz_index_and_hides_truth(tmp_path) -> None:
    summary = collect(tmp_path / "c", ENV, episodes=6, labelled=2, noise=0.0, seed=1)
    index = [json.loads(line) for line in (tmp_path / "c" / "index.jsonl").read_text().splitlines()]
    assert len(index) == 6 and sum(r["labelled"] for r in index) == 2
    with np.load(tmp_path / "c" / index[3]["file"]) as unlabelled:
        assert set(unlabelled.files) == {"frames"}  # videos: frames only
    corpus = load_corpus(tmp_path / "c")
    for episode, record in zip(corpus.episodes, index, strict=True):
        assert episode.frames.shape == (record["steps"] + 1, 20, 20, 3)
    truth = corpus.truth(corpus.unlabelled[0])
    assert truth is not None and len(truth) == corpus.unlabelled[0].steps
    assert summary["mean_return"] > 0.5  # a noiseless expert succeeds


def test_unknown_env_and_continuous_actions_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="not a registered"):
        make_env(EnvConfig(env_id="NoSuchEnv-v9"))
    with pytest.raises(ConfigError, match="not Discrete"):
        make_env(EnvConfig(env_id="Pendulum-v1", size=16, actions=None))


def test_mixed_resolutions_and_bad_actions_are_data_errors(tmp_path) -> None:
    root = tmp_path / "c"
    collect(root, ENV, episodes=3, labelled=2, noise=0.5, seed=0)
    index = [json.loads(line) for line in (root / "index.jsonl").read_text().splitlines()]
    first = root / index[0]["file"]
    with np.load(first) as f:
        frames, actions, rewards = f["frames"], f["actions"], f["rewards"]
    np.savez_compressed(first, frames=frames, actions=np.full_like(actions, 7), rewards=rewards)
    with pytest.raises(DataError, match="outside the action space"):
        load_corpus(root)
    np.savez_compressed(first, frames=frames[:, :10], actions=actions, rewards=rewards)
    with pytest.raises(DataError, match="mixed resolutions"):
        load_corpus(root)


def test_random_return_is_seeded_and_below_the_expert() -> None:
    from warmstart_rl.data import EnvConfig, episode_returns, make_env, minigrid_expert_action, random_return

    env_config = EnvConfig(max_episode_steps=20)
    first = random_return(env_config, 20, seed=3)
    assert first == random_return(env_config, 20, seed=3)  # seeded
    env = make_env(env_config)
    expert = episode_returns(lambda obs: minigrid_expert_action(env), env, 20, seed=3)
    env.close()
    assert 0.0 <= first < 0.7 < min(expert)  # episodes cut at 20 steps: random rarely arrives in time


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".gif"])
def test_plain_video_files_round_trip_through_pyav(tmp_path, suffix) -> None:
    from warmstart_rl.data import load_videos, read_video, write_video

    frames = np.zeros((8, 24, 32, 3), np.uint8)
    for t in range(8):  # a white bar sliding right, on a red background
        frames[t, :, :, 0] = 200
        frames[t, :, 3 * t : 3 * t + 6] = 255
    path = write_video(tmp_path / f"clip{suffix}", frames)
    decoded = read_video(path)
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    error = np.abs(decoded.astype(int) - frames).mean(axis=(1, 2, 3))
    assert error.max() < 12  # lossy codecs, but every frame decodes to its own picture
    green = decoded[:, 12, :, 1].astype(float)  # (T, W): the bar's row profile
    centre = (green * np.arange(32)).sum(1) / green.sum(1)
    assert np.all(np.diff(centre) > 1.5)  # the frames come back in order (the bar moves 3 px a frame)
    # a folder mixing a video file and an .npz episode; non-square frames are resized to the target's size
    np.savez_compressed(tmp_path / "ep.npz", frames=frames[:5])
    videos, info = load_videos([tmp_path], 16)
    assert sorted(v.shape for v in videos) == [(5, 16, 16, 3), (8, 16, 16, 3)]
    assert info["sources"][0]["episodes"] == 2


def test_truncated_video_file_is_one_line_or_skipped(tmp_path) -> None:
    from warmstart_rl.data import load_videos, write_video

    frames = np.full((6, 16, 16, 3), 128, np.uint8)
    good = write_video(tmp_path / "good.mp4", frames)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(good.read_bytes()[:40])
    with pytest.raises(DataError, match="bad.mp4"):
        load_videos([tmp_path], 16)
    videos, info = load_videos([tmp_path], 16, on_bad_file="skip")
    assert len(videos) == 1 and info["skipped_files"] == 1
