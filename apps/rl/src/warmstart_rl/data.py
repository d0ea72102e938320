"""Gymnasium rollouts on disk: pixel environments, experts, and the episode corpus VPT learns from.

Seed: *Video PreTraining (VPT): Learning to Act by Watching Unlabeled Online Videos* (Baker et al.,
arXiv 2206.11795). This module builds pixel-observation environments from any gymnasium id (MiniGrid,
Atari through ale-py, classic control through ``rgb_array`` rendering), rolls out a policy (scripted
expert with noise, random, or a stable-baselines3 checkpoint) and records episodes as compressed NPZ
arrays with a JSONL index: a large *unlabelled* part (frames only, VPT's "videos") and a small
*labelled* part (frames, actions, rewards). Videos are not written as MP4 (no codec dependency).

Corpus layout::

    corpus/meta.json                 format, environment config, action count, frame shape
    corpus/index.jsonl               one line per episode: file, labelled, steps, return, shape
    corpus/episodes/ep-000000.npz    frames (T+1, H, W, C) uint8 [+ actions (T,) int64, rewards (T,) f32]
    corpus/truth/ep-000000.npz       actions of an unlabelled episode, for measuring pseudo-label accuracy
                                     only (nothing that trains reads it)
    corpus/pseudo/ep-000000.npz      pseudo-labels written by ``idm label``: actions (T,), confidence (T,)
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from warmstart.errors import CheckpointError, ConfigError, DataError

log = logging.getLogger(__name__)

FORMAT = "warmstart-rl-episodes/1"


@dataclass
class EnvConfig:
    env_id: str = "MiniGrid-Empty-Random-5x5-v0"
    """A registered gymnasium id (MiniGrid-*, ALE/*, CartPole-v1, ...)."""
    size: int = 20
    """Side of the square pixel observation (MiniGrid: tile size = size // grid width)."""
    actions: int | None = 3
    """Keep only the first N discrete actions (MiniGrid navigation: left, right, forward); null keeps all."""
    max_episode_steps: int | None = None
    """Truncate episodes after this many steps (null: the environment's own limit)."""


# -- environments ---------------------------------------------------------------------------------
def _register_all() -> None:
    import gymnasium as gym

    try:
        import ale_py

        gym.register_envs(ale_py)
    except ImportError:  # pragma: no cover - ale-py is a dependency, but Atari stays optional
        pass
    with contextlib.suppress(ImportError):  # pragma: no cover - minigrid is a dependency
        import minigrid  # noqa: F401 - registers MiniGrid-* ids


def make_env(config: EnvConfig, seed: int | None = None):
    """A gymnasium env whose observations are (size, size, 3) uint8 pixels and whose actions are Discrete.

    Raises :class:`ConfigError` for an unknown id or an action space the pixel policy cannot take.
    """
    import gymnasium as gym
    from gymnasium.wrappers import AddRenderObservation, TimeLimit

    _register_all()
    if config.env_id not in gym.registry:
        close = [k for k in gym.registry if k.lower().startswith(config.env_id.split("-")[0].lower())][:3]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"--env.env_id {config.env_id!r} is not a registered gymnasium environment{hint}")
    if config.size < 8:
        raise ConfigError(f"--env.size {config.size}: observations must be at least 8 pixels wide")
    if config.env_id.startswith("MiniGrid"):
        from minigrid.wrappers import ImgObsWrapper, RGBImgObsWrapper

        env = gym.make(config.env_id)
        tile = max(1, config.size // env.unwrapped.width)
        env = ImgObsWrapper(RGBImgObsWrapper(env, tile_size=tile))
    elif config.env_id.startswith("ALE/"):
        env = gym.make(config.env_id, obs_type="rgb")
    else:
        env = gym.make(config.env_id, render_mode="rgb_array")
        if not _is_image(env.observation_space):
            env = AddRenderObservation(env, render_only=True)
    if not _is_image(env.observation_space):
        raise ConfigError(
            f"--env.env_id {config.env_id}: observation space {env.observation_space} is not an RGB image; "
            f"the pixel policy takes (H, W, 3) uint8 frames"
        )
    if env.observation_space.shape[:2] != (config.size, config.size):
        env = ResizeFrames(env, config.size)
    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise ConfigError(
            f"--env.env_id {config.env_id}: action space {env.action_space} is not Discrete; the pixel "
            f"policy (VPT's categorical head) takes discrete actions only"
        )
    if config.actions is not None and config.actions < env.action_space.n:
        env = ActionSubset(env, config.actions)
    if config.max_episode_steps is not None:
        env = TimeLimit(env, config.max_episode_steps)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def _is_image(space: Any) -> bool:
    import gymnasium as gym

    return (
        isinstance(space, gym.spaces.Box)
        and space.dtype == np.uint8
        and len(space.shape) == 3
        and space.shape[-1] == 3
    )


def _action_subset_class():
    import gymnasium as gym

    class _ActionSubset(gym.ActionWrapper):
        """Expose only the first ``n`` actions of a Discrete space (an identity map onto them)."""

        def __init__(self, env: gym.Env, n: int) -> None:
            super().__init__(env)
            self.action_space = gym.spaces.Discrete(n)

        def action(self, action: Any) -> int:
            return int(action)

    return _ActionSubset


def ActionSubset(env, n: int):  # noqa: N802 - a class built lazily so gymnasium is imported on demand
    return _action_subset_class()(env, n)


def _resize_class():
    import gymnasium as gym
    from PIL import Image

    class _ResizeFrames(gym.ObservationWrapper):
        """Box-filter resize of RGB frames with Pillow (gymnasium's ResizeObservation needs OpenCV)."""

        def __init__(self, env: gym.Env, size: int) -> None:
            super().__init__(env)
            self.size = size
            self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)

        def observation(self, observation: np.ndarray) -> np.ndarray:
            image = Image.fromarray(np.asarray(observation, dtype=np.uint8))
            return np.asarray(image.resize((self.size, self.size), Image.Resampling.BOX), dtype=np.uint8)

    return _ResizeFrames


def ResizeFrames(env, size: int):  # noqa: N802
    return _resize_class()(env, size)


# -- experts --------------------------------------------------------------------------------------
_DIRS = ((1, 0), (0, 1), (-1, 0), (0, -1))  # MiniGrid agent_dir 0..3: right, down, left, up


def minigrid_expert_action(env: Any) -> int:
    """Shortest-path action (0 left, 1 right, 2 forward) to the goal by BFS over (x, y, direction)."""
    grid = env.unwrapped.grid
    start = (*map(int, env.unwrapped.agent_pos), int(env.unwrapped.agent_dir))
    first: dict[tuple[int, int, int], int] = {start: -1}
    queue = deque([start])
    while queue:
        x, y, d = queue.popleft()
        cell = grid.get(x, y)
        if cell is not None and cell.type == "goal":
            return max(first[(x, y, d)], 0)
        dx, dy = _DIRS[d]
        nxt = [((x, y, (d - 1) % 4), 0), ((x, y, (d + 1) % 4), 1)]
        ahead = grid.get(x + dx, y + dy)
        if ahead is None or ahead.can_overlap():
            nxt.append(((x + dx, y + dy, d), 2))
        for state, action in nxt:
            if state not in first:
                first[state] = action if first[(x, y, d)] == -1 else first[(x, y, d)]
                queue.append(state)
    return 2  # no path: walk on


def cartpole_expert_action(env: Any) -> int:
    """A PD-style balance rule on the pole angle and angular velocity."""
    _, _, theta, theta_dot = env.unwrapped.state
    return int(3.0 * theta + theta_dot > 0)


def make_policy(kind: str, env: Any, env_config: EnvConfig, noise: float, rng: np.random.Generator):
    """A callable ``obs -> action``: 'scripted' (expert with epsilon noise), 'random', or an SB3 .zip path."""
    n = env.action_space.n
    if kind == "random":
        return lambda obs: int(rng.integers(n))
    if kind == "scripted":
        if env_config.env_id.startswith("MiniGrid"):
            expert = minigrid_expert_action
        elif env_config.env_id.startswith("CartPole"):
            expert = cartpole_expert_action
        else:
            raise ConfigError(
                f"--policy scripted: no scripted expert for {env_config.env_id} (MiniGrid-*, CartPole-*); "
                f"use --policy random or an SB3 checkpoint .zip"
            )

        def act(obs: np.ndarray) -> int:
            if rng.random() < noise:
                return int(rng.integers(n))
            return min(expert(env), n - 1)

        return act
    return sb3_policy(Path(kind), env)


def sb3_policy(path: Path, env: Any):
    """Load an SB3 PPO checkpoint and check it was trained on this observation/action space."""
    if not path.is_file():
        raise ConfigError(f"--policy {path}: not 'scripted', 'random' or an existing SB3 checkpoint .zip")
    from stable_baselines3 import PPO

    try:
        model = PPO.load(path, device="cpu")
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a bad file for the user
        raise CheckpointError(
            f"--policy {path}: not a readable SB3 PPO checkpoint ({type(exc).__name__})"
        ) from exc
    obs_space = model.observation_space
    shape = env.observation_space.shape
    transposed = (shape[2], shape[0], shape[1])
    if tuple(obs_space.shape) not in (tuple(shape), transposed) or model.action_space != env.action_space:
        raise CheckpointError(
            f"--policy {path}: trained on observations {obs_space.shape} / actions {model.action_space}, "
            f"but this environment has {shape} / {env.action_space}; collect from the environment it was "
            f"trained on"
        )

    def act(obs: np.ndarray) -> int:
        action, _ = model.predict(obs, deterministic=False)
        return int(action)

    return act


# -- recording ------------------------------------------------------------------------------------
@dataclass
class Episode:
    """One recorded episode; ``actions``/``rewards`` are None for unlabelled videos."""

    name: str
    frames: np.ndarray  # (T+1, H, W, C) uint8
    actions: np.ndarray | None = None  # (T,) int64
    rewards: np.ndarray | None = None  # (T,) float32
    labelled: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return int(self.frames.shape[0] - 1)


def rollout(env: Any, policy: Any, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One episode: frames (T+1, H, W, C) uint8, actions (T,), rewards (T,)."""
    obs, _ = env.reset(seed=seed)
    frames, actions, rewards = [obs], [], []
    done = False
    while not done:
        action = policy(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        frames.append(obs)
        actions.append(action)
        rewards.append(reward)
        done = terminated or truncated
    return np.stack(frames).astype(np.uint8), np.asarray(actions, np.int64), np.asarray(rewards, np.float32)


def episode_returns(act: Any, env: Any, episodes: int, seed: int, on_reset: Any = None) -> list[float]:
    """Returns of ``episodes`` episodes of ``act(obs) -> action`` in ``env`` (reset seeds seed, seed+1, ...).

    ``on_reset()`` is called before each episode (for policies that keep a history). The one evaluation
    loop of the app: VPT's greedy BC policy, RoboFuME's greedy Q policy, L2M, the random reference.
    """
    returns = []
    for i in range(episodes):
        if on_reset is not None:
            on_reset()
        obs, _ = env.reset(seed=seed + i)
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns


def greedy_return(net: Any, env_config: EnvConfig, episodes: int, seed: int) -> float:
    """Mean return of ``argmax net(obs)`` (policy logits or Q-values) over ``episodes`` episodes."""
    import torch

    env = make_env(env_config)

    @torch.no_grad()
    def act(obs: np.ndarray) -> int:
        return int(net(torch.from_numpy(to_chw(obs[None]))).argmax(-1))

    try:
        return float(np.mean(episode_returns(act, env, episodes, seed)))
    finally:
        env.close()


def random_return(env_config: EnvConfig, episodes: int, seed: int) -> float:
    """Mean return of the uniformly random policy: the reference a learner must beat."""
    env = make_env(env_config, seed=seed)
    try:
        return float(
            np.mean(episode_returns(lambda obs: int(env.action_space.sample()), env, episodes, seed))
        )
    finally:
        env.close()


def collect(
    out: Path,
    env_config: EnvConfig,
    episodes: int = 60,
    labelled: int = 10,
    policy: str = "scripted",
    noise: float = 0.2,
    seed: int = 0,
) -> dict[str, Any]:
    """Record ``episodes`` episodes into ``out``; the first ``labelled`` keep their actions.

    Returns a summary (episodes, frames, mean return, labelled count).
    """
    if episodes < 1 or not 0 <= labelled <= episodes:
        raise ConfigError(
            f"--episodes {episodes} / --labelled {labelled}: need 0 <= labelled <= episodes >= 1"
        )
    if not 0.0 <= noise <= 1.0:
        raise ConfigError(f"--noise {noise}: must lie in [0, 1]")
    out = Path(out)
    if (out / "index.jsonl").exists():
        raise DataError(f"{out / 'index.jsonl'} exists: {out} already holds a corpus; choose another --out")
    env = make_env(env_config, seed=seed)
    rng = np.random.default_rng(seed)
    act = make_policy(policy, env, env_config, noise, rng)
    (out / "episodes").mkdir(parents=True, exist_ok=True)
    (out / "truth").mkdir(exist_ok=True)
    returns, n_frames = [], 0
    with open(out / "index.jsonl", "w") as index:
        for i in range(episodes):
            frames, actions, rewards = rollout(env, act, seed=seed * 100_003 + i)
            name = f"ep-{i:06d}.npz"
            is_labelled = i < labelled
            if is_labelled:
                np.savez_compressed(out / "episodes" / name, frames=frames, actions=actions, rewards=rewards)
            else:
                np.savez_compressed(out / "episodes" / name, frames=frames)
                np.savez_compressed(out / "truth" / name, actions=actions, rewards=rewards)
            record = {
                "file": f"episodes/{name}",
                "labelled": is_labelled,
                "steps": int(len(actions)),
                "return": float(rewards.sum()),
                "shape": list(frames.shape[1:]),
            }
            index.write(json.dumps(record) + "\n")
            returns.append(float(rewards.sum()))
            n_frames += frames.shape[0]
    env.close()
    meta = {
        "format": FORMAT,
        "env": asdict(env_config),
        "n_actions": int(env.action_space.n),
        "frame_shape": list(env.observation_space.shape),
        "policy": policy,
        "noise": noise,
        "seed": seed,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    log.info("recorded %d episodes (%d labelled, %d frames) into %s", episodes, labelled, n_frames, out)
    return {
        "episodes": episodes,
        "labelled": labelled,
        "frames": n_frames,
        "mean_return": float(np.mean(returns)),
    }


# -- loading --------------------------------------------------------------------------------------
@dataclass
class Corpus:
    """A loaded corpus: every episode in memory (small corpora) plus its metadata."""

    root: Path
    meta: dict[str, Any]
    episodes: list[Episode]

    @property
    def n_actions(self) -> int:
        return int(self.meta["n_actions"])

    @property
    def env_config(self) -> EnvConfig:
        return EnvConfig(**self.meta["env"])

    @property
    def labelled(self) -> list[Episode]:
        return [e for e in self.episodes if e.labelled]

    @property
    def unlabelled(self) -> list[Episode]:
        return [e for e in self.episodes if not e.labelled]

    def truth(self, episode: Episode) -> np.ndarray | None:
        """Held-back true actions of an unlabelled episode (evaluation only), if recorded."""
        path = self.root / "truth" / Path(episode.name).name
        return np.load(path)["actions"] if path.is_file() else None

    def pseudo(self, episode: Episode) -> np.ndarray | None:
        path = self.root / "pseudo" / Path(episode.name).name
        return np.load(path)["actions"] if path.is_file() else None


def load_corpus(root: Path) -> Corpus:
    """Read and validate a corpus directory (see the module docstring for the layout).

    Raises :class:`DataError` naming the file for a missing index, mixed resolutions, or labelled actions
    outside the action space.
    """
    root = Path(root)
    meta_path, index_path = root / "meta.json", root / "index.jsonl"
    for path in (meta_path, index_path):
        if not path.is_file():
            raise DataError(
                f"{path} is missing: {root} is not a corpus; record one with `warmstart-rl collect`"
            )
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise DataError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    n_actions = int(meta["n_actions"])
    episodes: list[Episode] = []
    shape: tuple[int, ...] | None = None
    first_file = ""
    for line_no, line in enumerate(index_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            path = root / record["file"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise DataError(f"{index_path} line {line_no}: not an episode record ({exc})") from exc
        if not path.is_file():
            raise DataError(f"{path} (listed in {index_path} line {line_no}) is missing")
        with np.load(path) as arrays:
            frames = arrays["frames"]
            actions = arrays.get("actions")
            rewards = arrays.get("rewards")
        if frames.dtype != np.uint8 or frames.ndim != 4:
            raise DataError(f"{path}: frames must be (T+1, H, W, C) uint8, got {frames.dtype} {frames.shape}")
        if shape is None:
            shape, first_file = frames.shape[1:], str(path)
        elif frames.shape[1:] != shape:
            raise DataError(
                f"{path}: frames are {frames.shape[1:]} but {first_file} has {shape}; videos of mixed "
                f"resolutions — re-record or resize them to one size"
            )
        labelled = bool(record.get("labelled", actions is not None))
        if labelled:
            if actions is None or len(actions) != frames.shape[0] - 1:
                raise DataError(f"{path}: a labelled episode needs actions of length frames - 1")
            bad = actions[(actions < 0) | (actions >= n_actions)]
            if bad.size:
                raise DataError(
                    f"{path}: action {int(bad[0])} is outside the action space Discrete({n_actions}); "
                    f"fix the labels or the corpus' meta.json n_actions"
                )
        episodes.append(Episode(record["file"], frames, actions, rewards, labelled, record))
    if not episodes:
        raise DataError(f"{index_path} lists no episodes")
    return Corpus(root, meta, episodes)


def to_chw(frames: np.ndarray) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, C, H, W) float32 in [0, 1], as SB3 preprocesses image observations."""
    return np.ascontiguousarray(frames.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
