"""Gymnasium rollouts on disk: pixel environments, experts, and the episode corpus VPT learns from.

Seed: *Video PreTraining (VPT): Learning to Act by Watching Unlabeled Online Videos* (Baker et al.,
arXiv 2206.11795). This module builds pixel-observation environments from any gymnasium id (MiniGrid,
Atari through ale-py, classic control through ``rgb_array`` rendering), rolls out a policy (scripted
expert with noise, random, or a stable-baselines3 checkpoint) and records episodes as compressed NPZ
arrays with a JSONL index: a large *unlabelled* part (frames only, VPT's "videos") and a small
*labelled* part (frames, actions, rewards). Plain video files (.mp4, .avi, .webm, .gif, ...) are read and
written with PyAV (:func:`read_video`, :func:`write_video`) for ContextWM's video pretraining.
Environment defaults are per family (:meth:`EnvConfig.resolved`: MiniGrid's 3 navigation actions at 20 px,
an ALE game's full minimal action set at 64 px with ALE's own frame skip); an unreadable episode file is one
line naming it, or skipped and counted (``on_bad_file='skip'``); :func:`load_videos` reads frames-only
videos of any environment for ContextWM's pretraining.

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
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from warmstart.errors import CheckpointError, ConfigError, DataError

log = logging.getLogger(__name__)

FORMAT = "warmstart-rl-episodes/1"


@dataclass
class EnvConfig:
    env_id: str = "MiniGrid-Empty-Random-5x5-v0"
    """A registered gymnasium id (MiniGrid-*, ALE/*, CartPole-v1, ...)."""
    size: int | None = None
    """Side of the square pixel observation; null: the env family's default (MiniGrid 20, ALE 64, other 64).
    MiniGrid renders at tile size = size // grid width."""
    actions: int | Literal["auto"] | None = "auto"
    """Keep only the first N discrete actions; null keeps all; 'auto': the family's default (MiniGrid: its
    3 navigation actions left/right/forward; ALE: the game's full minimal action set; others: all)."""
    max_episode_steps: int | None = None
    """Truncate episodes after this many steps (null: the environment's own limit)."""
    frame_skip: int | None = None
    """ALE only: emulator frames per step (null: ALE v5's own, 4)."""
    sticky_actions: float | None = None
    """ALE only: repeat_action_probability (null: ALE v5's own, 0.25)."""

    def resolved(self) -> EnvConfig:
        """The same config with the family defaults filled in (what ``make_env`` builds, what is saved)."""
        family = env_family(self.env_id)
        size = self.size if self.size is not None else DEFAULT_SIZE[family]
        actions = self.actions
        if actions == "auto":
            actions = 3 if family == "minigrid" else None
        if family != "ale" and (self.frame_skip is not None or self.sticky_actions is not None):
            raise ConfigError(
                f"--env.frame_skip / --env.sticky_actions apply to ALE games only, not {self.env_id}; "
                f"leave them null"
            )
        return replace(self, size=size, actions=actions)


DEFAULT_SIZE = {"minigrid": 20, "ale": 64, "other": 64}
"""Observation side per env family: MiniGrid's 5x5 grid at 4 px a tile; 64 px for Atari (the 64-84 px range
of DreamerV3 / DQN), and 64 for classic control (at 32 px a cart's one-step displacement is sub-pixel)."""


DEFAULT_FRAME_STACK = {"minigrid": 1, "ale": 4, "other": 1}
"""Frames the policy sees per step (a causal stack) per env family: Atari's 4 (DQN / SB3's AtariWrapper:
a single frame hides the ball's direction); MiniGrid and classic control are Markov in one frame."""


def default_frame_stack(env_id: str, frame_stack: int | None = None) -> int:
    """``frame_stack`` if given, else the env family's default (:data:`DEFAULT_FRAME_STACK`)."""
    return int(frame_stack) if frame_stack is not None else DEFAULT_FRAME_STACK[env_family(env_id)]


def env_family(env_id: str) -> str:
    """'minigrid', 'ale' or 'other' (classic control and anything rendered through ``rgb_array``)."""
    if env_id.startswith("MiniGrid") or env_id.startswith("BabyAI"):
        return "minigrid"
    if env_id.startswith("ALE/"):
        return "ale"
    return "other"


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
    config = config.resolved()
    if config.size < 8:
        raise ConfigError(f"--env.size {config.size}: observations must be at least 8 pixels wide")
    if config.env_id.startswith("MiniGrid"):
        from minigrid.wrappers import ImgObsWrapper, RGBImgObsWrapper

        env = gym.make(config.env_id)
        tile = max(1, config.size // env.unwrapped.width)
        env = ImgObsWrapper(RGBImgObsWrapper(env, tile_size=tile))
    elif config.env_id.startswith("ALE/"):
        ale_kwargs: dict[str, Any] = {}
        if config.frame_skip is not None:
            ale_kwargs["frameskip"] = config.frame_skip
        if config.sticky_actions is not None:
            ale_kwargs["repeat_action_probability"] = config.sticky_actions
        env = gym.make(config.env_id, obs_type="rgb", **ale_kwargs)
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


def stack_frames(frames: np.ndarray) -> np.ndarray:
    """(..., k, H, W, C) frames, oldest first -> (..., H, W, k * C): a causal frame stack fused along channels
    (channel block j holds frame t - k + 1 + j). The one layout of the env wrapper and the BC dataset."""
    k, h, w, c = frames.shape[-4:]
    moved = np.moveaxis(frames, -4, -2)  # (..., H, W, k, C)
    return moved.reshape(*frames.shape[:-4], h, w, k * c)


def causal_stack_indices(steps: int, frame_stack: int) -> np.ndarray:
    """Frame indices of the causal stack at every step t = 0 .. steps - 1: (steps, k) = t - k + 1 .. t, clipped
    at 0 (the first frame repeated, as gymnasium's ``FrameStackObservation(padding_type='reset')`` pads)."""
    offsets = np.arange(-frame_stack + 1, 1)
    return np.clip(np.arange(steps)[:, None] + offsets[None, :], 0, None)


def make_policy_env(config: EnvConfig, frame_stack: int = 1, seed: int | None = None):
    """:func:`make_env` as the policy sees it: with ``frame_stack`` k > 1, each observation is the last k
    frames (gymnasium's ``FrameStackObservation``, padded at reset with the first frame) fused along channels
    by :func:`stack_frames`: (size, size, 3k) uint8. SB3's PPO, the BC evaluation and the start check all
    act through this env, so the BC policy and PPO see the same causal stack."""
    import gymnasium as gym
    from gymnasium.wrappers import FrameStackObservation, TransformObservation

    env = make_env(config, seed=seed)
    if frame_stack < 1:
        raise ConfigError(f"--policy.frame_stack {frame_stack}: must be >= 1")
    if frame_stack == 1:
        return env
    h, w, c = env.observation_space.shape
    stacked = FrameStackObservation(env, frame_stack, padding_type="reset")
    space = gym.spaces.Box(0, 255, (h, w, c * frame_stack), np.uint8)
    return TransformObservation(stacked, lambda obs: stack_frames(np.asarray(obs)), space)


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


def breakout_expert_action(env: Any) -> int:
    """Follow the ball with the paddle from the console RAM (ball x at 99, y at 101, paddle x at 72); FIRE
    to serve. Scores ~50-60 a game with 10 % random actions (random play: ~1.5)."""
    ram = env.unwrapped.ale.getRAM()
    ball_x, ball_y, paddle = int(ram[99]), int(ram[101]), int(ram[72])
    if ball_x == 0 or ball_y == 0:
        return 1  # FIRE: no ball in play
    offset = ball_x - (paddle + 8)
    return 2 if offset > 3 else 3 if offset < -3 else 0  # RIGHT / LEFT / NOOP


SCRIPTED_EXPERTS = {
    "MiniGrid": minigrid_expert_action,
    "CartPole": cartpole_expert_action,
    "ALE/Breakout": breakout_expert_action,
}
"""Scripted experts by env-id prefix: the 'scripted' collection policy."""


def make_policy(kind: str, env: Any, env_config: EnvConfig, noise: float, rng: np.random.Generator):
    """A callable ``obs -> action``: 'scripted' (expert with epsilon noise), 'random', or an SB3 .zip path."""
    n = env.action_space.n
    if kind == "random":
        return lambda obs: int(rng.integers(n))
    if kind == "scripted":
        experts = [e for prefix, e in SCRIPTED_EXPERTS.items() if env_config.env_id.startswith(prefix)]
        if not experts:
            raise ConfigError(
                f"--policy scripted: no scripted expert for {env_config.env_id} "
                f"({', '.join(p + '*' for p in SCRIPTED_EXPERTS)}); use --policy random or an SB3 checkpoint .zip"
            )
        expert = experts[0]

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


def episode_returns(
    act: Any, env: Any, episodes: int, seed: int, on_reset: Any = None, max_steps: int | None = None
) -> list[float]:
    """Returns of ``episodes`` episodes of ``act(obs) -> action`` in ``env`` (reset seeds seed, seed+1, ...),
    each cut after ``max_steps`` steps when given.

    ``on_reset()`` is called before each episode (for policies that keep a history). The one evaluation
    loop of the app: VPT's greedy BC policy, RoboFuME's greedy Q policy, L2M, the random reference.
    """
    returns = []
    for i in range(episodes):
        if on_reset is not None:
            on_reset()
        obs, _ = env.reset(seed=seed + i)
        done, total, steps = False, 0.0, 0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            steps += 1
            done = terminated or truncated or (max_steps is not None and steps >= max_steps)
        returns.append(total)
    return returns


def greedy_return(net: Any, env_config: EnvConfig, episodes: int, seed: int, frame_stack: int = 1) -> float:
    """Mean return of ``argmax net(obs)`` (policy logits or Q-values) over ``episodes`` episodes; with
    ``frame_stack`` k > 1 the net sees the last k frames (:func:`make_policy_env`)."""
    import torch

    env = make_policy_env(env_config, frame_stack)

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

    Returns a summary (episodes, frames, mean return, labelled count, env steps and env steps/s).
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
    env_config = env_config.resolved()
    env = make_env(env_config, seed=seed)
    rng = np.random.default_rng(seed)
    act = make_policy(policy, env, env_config, noise, rng)
    env_seconds, env_steps = 0.0, 0
    (out / "episodes").mkdir(parents=True, exist_ok=True)
    (out / "truth").mkdir(exist_ok=True)
    returns, n_frames = [], 0
    with open(out / "index.jsonl", "w") as index:
        for i in range(episodes):
            t0 = time.perf_counter()
            frames, actions, rewards = rollout(env, act, seed=seed * 100_003 + i)
            env_seconds += time.perf_counter() - t0
            env_steps += len(actions)
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
        "env_steps": env_steps,
        "env_steps_per_s": env_steps / max(env_seconds, 1e-9),
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
        return read_npz(path, ("actions",))["actions"] if path.is_file() else None

    def pseudo(self, episode: Episode) -> np.ndarray | None:
        path = self.root / "pseudo" / Path(episode.name).name
        return read_npz(path, ("actions",))["actions"] if path.is_file() else None


OnBadFile = Literal["error", "skip"]
"""What a loader does with an unreadable episode file: stop with one line naming it, or skip and count it."""


def read_npz(path: Path, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The arrays ``keys`` (+ ``optional`` ones present) of an ``.npz``; a truncated or corrupt file, or one
    without a needed array, is a :class:`DataError` naming it."""
    import zipfile

    try:
        with np.load(path) as arrays:
            missing = [k for k in keys if k not in arrays.files]
            if missing:
                raise DataError(
                    f"{path}: no {missing[0]!r} array (has {arrays.files}); re-record the episode"
                )
            return {k: arrays[k] for k in (*keys, *optional) if k in arrays.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise DataError(
            f"{path}: unreadable episode file ({type(exc).__name__}: truncated or corrupt); re-record it, "
            f"delete it from the index, or pass --on_bad_file skip"
        ) from None


def load_corpus(root: Path, on_bad_file: OnBadFile = "error") -> Corpus:
    """Read and validate a corpus directory (see the module docstring for the layout).

    Raises :class:`DataError` naming the file for a missing index, a truncated episode (``on_bad_file``
    'skip': skipped, counted in ``meta['skipped_files']`` and logged), mixed resolutions, or labelled
    actions outside the action space.
    """
    if on_bad_file not in ("error", "skip"):
        raise ConfigError(f"--on_bad_file {on_bad_file!r}: use 'error' or 'skip'")
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
    skipped: list[str] = []
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
        try:
            arrays = read_npz(path, ("frames",), ("actions", "rewards"))
        except DataError:
            if on_bad_file == "error":
                raise
            skipped.append(str(path))
            continue
        frames, actions, rewards = arrays["frames"], arrays.get("actions"), arrays.get("rewards")
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
    if skipped:
        log.warning("skipped %d unreadable episode file(s) in %s (first: %s)", len(skipped), root, skipped[0])
    meta = meta | {"skipped_files": len(skipped)}
    if not episodes:
        raise DataError(f"{index_path} lists no readable episodes")
    return Corpus(root, meta, episodes)


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, size, size, 3) uint8 by Pillow's box filter (the env wrapper's resize)."""
    from PIL import Image

    if frames.shape[1:3] == (size, size):
        return frames
    return np.stack(
        [
            np.asarray(Image.fromarray(f).resize((size, size), Image.Resampling.BOX), dtype=np.uint8)
            for f in frames
        ]
    )


VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".gif")
"""Plain video files :func:`read_video` decodes (through PyAV, FFmpeg's libraries)."""


def read_video(path: Path, max_frames: int | None = None) -> np.ndarray:
    """The frames of a plain video file (.mp4, .avi, .webm, .mkv, .mov, .gif) as (T, H, W, 3) uint8 RGB,
    decoded with PyAV; an unreadable or empty file is a :class:`DataError` naming it."""
    import av

    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path}: no video stream in it; pass video files or episode folders")
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise DataError(
            f"{path}: unreadable video file ({type(exc).__name__}: truncated, corrupt or not a video); "
            f"re-encode it or pass --on_bad_file skip"
        ) from None
    if not frames:
        raise DataError(f"{path}: the video holds no frames")
    return np.stack(frames).astype(np.uint8)


def write_video(path: Path, frames: np.ndarray, fps: int = 15) -> Path:
    """Write (T, H, W, 3) uint8 frames as a video file with PyAV (the codec from the suffix: .gif as GIF,
    .webm as VP9, others as MPEG-4 part 2, all built into PyAV's wheels); even sides for the yuv codecs."""
    import av

    path = Path(path)
    codec, pix = {".gif": ("gif", "rgb8"), ".webm": ("libvpx-vp9", "yuv420p")}.get(
        path.suffix.lower(), ("mpeg4", "yuv420p")
    )
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = int(frames.shape[1]), int(frames.shape[2])
        stream.pix_fmt = pix
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), "rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _checked_frames(path: Path, frames: np.ndarray) -> np.ndarray:
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise DataError(f"{path}: frames must be (T, H, W, 3) uint8, got {frames.dtype} {frames.shape}")
    return frames


def load_videos(
    folders: list[Path], size: int | None, on_bad_file: OnBadFile = "error"
) -> tuple[list[np.ndarray], dict]:
    """Frames-only videos of *any* environment or camera, resized to ``size`` (ContextWM's in-the-wild
    pretraining data). Each entry is a corpus written by ``collect`` (its actions are ignored), a folder of
    ``.npz`` files with a ``frames`` array (T, H, W, 3) uint8 and/or plain video files (.mp4, .avi, .webm,
    .mkv, .mov, .gif; decoded by :func:`read_video`), or one such video file. ``size`` None: the first
    video's height; frames of other sizes or aspect ratios are box-resized to ``size`` x ``size``.
    Returns (videos, {sources, skipped_files}).
    """
    videos: list[np.ndarray] = []
    sources: list[dict[str, Any]] = []
    skipped = 0
    for folder in map(Path, folders):
        if (folder / "meta.json").is_file():
            corpus = load_corpus(folder, on_bad_file)
            clips = [e.frames for e in corpus.episodes]
            skipped += corpus.meta["skipped_files"]
            env_id = corpus.meta["env"]["env_id"]
        elif folder.is_dir() or (folder.is_file() and folder.suffix.lower() in VIDEO_SUFFIXES):
            clips = []
            if folder.is_file():
                files = [folder]
            else:
                files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".npz", *VIDEO_SUFFIXES))
            if not files:
                raise DataError(
                    f"--videos {folder}: no corpus (meta.json), no .npz episodes and no video files "
                    f"({', '.join(VIDEO_SUFFIXES)}) in it"
                )
            for path in files:
                try:
                    if path.suffix.lower() == ".npz":
                        frames = read_npz(path, ("frames",))["frames"]
                    else:
                        frames = read_video(path)
                except DataError:
                    if on_bad_file == "error":
                        raise
                    skipped += 1
                    continue
                clips.append(_checked_frames(path, frames))
            env_id = "unknown"
        else:
            raise DataError(f"--videos {folder}: no such folder or video file ({', '.join(VIDEO_SUFFIXES)})")
        if size is None and clips:
            size = int(clips[0].shape[1])
        videos += [resize_frames(c, size) for c in clips] if size is not None else clips
        sources.append({"folder": str(folder), "env_id": env_id, "episodes": len(clips)})
    if not videos:
        raise DataError(f"--videos {', '.join(map(str, folders))}: no readable episodes")
    return videos, {"sources": sources, "skipped_files": skipped}


def to_chw(frames: np.ndarray) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, C, H, W) float32 in [0, 1], as SB3 preprocesses image observations."""
    return np.ascontiguousarray(frames.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
