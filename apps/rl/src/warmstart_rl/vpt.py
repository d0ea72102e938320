"""VPT end to end: inverse dynamics on a few labelled episodes, pseudo-labels for the videos, behaviour
cloning of a causal policy, and PPO fine-tuning in stable-baselines3 from the cloned weights with a KL
penalty to the frozen pretrained policy.

Seed: *Video PreTraining (VPT): Learning to Act by Watching Unlabeled Online Videos* (Baker et al.,
arXiv 2206.11795); the IDM-as-pretraining view follows *Inverse Dynamics Pretraining Learns Good
Representations for Multitask Imitation* (arXiv 2305.16985; as a representation: :mod:`warmstart_rl.idmrepr`).
Implemented: the non-causal IDM (a window of past and future frames and their differences) trained in rounds
until it clears a quality gate (held-out accuracy over chance by a margin; ``idm-label`` refuses an IDM that
did not), labelling by arg-max with confidences, BC with the core engine, a check that the BC start beats a
random policy, PPO from the BC
weights with ``rho * KL(pi_pretrained || pi_theta)`` added to SB3's PPO loss and decayed geometrically per
update. Left out: VPT's IDM/policy architecture (3D conv + ResNet + transformer over 128 frames), the
hierarchical action space, and the data-filtering classifier.

The KL-regularised PPO update lives in :mod:`warmstart_rl.klppo`.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from warmstart.engine import Engine, EngineConfig
from warmstart.errors import CheckpointError, ConfigError, DataError
from warmstart_rl.data import (
    Corpus,
    EnvConfig,
    Episode,
    causal_stack_indices,
    default_frame_stack,
    episode_returns,
    greedy_return,
    make_policy_env,
    stack_frames,
    to_chw,
)
from warmstart_rl.klppo import kl_ppo_class
from warmstart_rl.models import (
    EncoderConfig,
    IDMConfig,
    InverseDynamicsModel,
    PixelEncoder,
    PixelPolicy,
    PolicyConfig,
    load_model,
    model_spec,
    save_model,
)

log = logging.getLogger(__name__)


# -- datasets -------------------------------------------------------------------------------------
def window_indices(steps: int, context: int) -> np.ndarray:
    """Frame indices of every transition's window, clipped at the episode edges: (T, 2k + 2)."""
    offsets = np.arange(-context, context + 2)  # o_{t-k} .. o_{t+1+k}
    return np.clip(np.arange(steps)[:, None] + offsets[None, :], 0, steps)


class WindowDataset(Dataset):
    """Items ``{"window": (W, C, H, W_img) float, "action": ()}`` over labelled transitions."""

    def __init__(self, episodes: list[Episode], actions: list[np.ndarray], context: int) -> None:
        self.frames = [e.frames for e in episodes]
        self.index = [(i, t) for i, e in enumerate(episodes) for t in range(e.steps)]  # (episode, transition)
        self.windows = [window_indices(e.steps, context) for e in episodes]
        self.actions = actions

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        i, t = self.index[item]
        window = to_chw(self.frames[i][self.windows[i][t]])  # (W, C, H, W_img)
        return {"window": torch.from_numpy(window), "action": torch.tensor(int(self.actions[i][t]))}


class FrameDataset(Dataset):
    """Items ``{"obs": (k * C, H, W) float, "action": ()}``: the causal stack o_{t-k+1} .. o_t (the episode's
    first frame repeated before it, as :func:`warmstart_rl.data.make_policy_env` pads) with the (true or
    pseudo) action a_t; never a frame after o_t."""

    def __init__(self, episodes: list[Episode], actions: list[np.ndarray], frame_stack: int = 1) -> None:
        self.frames = [e.frames for e in episodes]
        self.index = np.array([(i, t) for i, e in enumerate(episodes) for t in range(e.steps)], np.int64)
        self.stacks = [causal_stack_indices(e.steps, frame_stack) for e in episodes]  # (T, k) each
        self.act = np.concatenate(actions).astype(np.int64)  # (N,)

    def __len__(self) -> int:
        return len(self.act)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        i, t = self.index[item]
        obs = stack_frames(self.frames[i][self.stacks[i][t]])  # (H, W, k * C)
        return {"obs": torch.from_numpy(to_chw(obs[None])[0]), "action": torch.tensor(self.act[item])}


class _ClassifierTask:
    """Cross-entropy on ``batch[key] -> batch['action']``; evaluate(): accuracy on a held-out set."""

    def __init__(
        self, model: nn.Module, key: str, heldout: Dataset | None, weight: torch.Tensor | None = None
    ) -> None:
        self.model, self.key, self.heldout, self.weight = model, key, heldout, weight

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        logits = self.model(batch[self.key])  # (B, A)
        weight = self.weight.to(logits.device) if self.weight is not None else None
        loss = F.cross_entropy(logits.float(), batch["action"], weight=weight)
        acc = (logits.argmax(-1) == batch["action"]).float().mean()
        return loss, {"acc": acc.item(), "samples": len(batch["action"])}

    def evaluate(self) -> dict[str, float]:
        if self.heldout is None or len(self.heldout) == 0:
            return {}
        return {"acc": accuracy(self.model, self.heldout, self.key)}


@torch.no_grad()
def predict(model: nn.Module, inputs: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Softmax probabilities of ``model`` on ``inputs`` in batches: (N, A)."""
    device = next(model.parameters()).device
    out = [
        torch.softmax(model(inputs[i : i + batch_size].to(device)).float(), -1).cpu()
        for i in range(0, len(inputs), batch_size)
    ]
    return torch.cat(out)


@torch.no_grad()
def accuracy(model: nn.Module, dataset: Dataset, key: str) -> float:
    items = [dataset[i] for i in range(len(dataset))]
    inputs = torch.stack([it[key] for it in items])
    target = torch.stack([it["action"] for it in items])
    was_training = model.training
    model.eval()
    probs = predict(model, inputs)
    model.train(was_training)
    return float((probs.argmax(-1) == target).float().mean())


def _fit_batch(engine: EngineConfig, n: int) -> EngineConfig:
    """The engine config with the micro-batch capped at the dataset size (tiny labelled sets)."""
    if n < 1:
        raise DataError("no training transitions: record more (or longer) labelled episodes")
    if engine.train.micro_batch_size <= n:
        return engine
    engine = copy.deepcopy(engine)
    engine.train.micro_batch_size = n
    return engine


def split_labelled(corpus: Corpus, heldout_fraction: float) -> tuple[list[Episode], list[Episode]]:
    labelled = corpus.labelled
    if not labelled:
        raise DataError(
            f"{corpus.root / 'index.jsonl'} has no labelled episodes; collect with --labelled > 0"
        )
    n_held = int(round(len(labelled) * heldout_fraction)) if len(labelled) > 1 else 0
    n_held = min(max(n_held, 1 if heldout_fraction > 0 and len(labelled) > 1 else 0), len(labelled) - 1)
    return labelled[: len(labelled) - n_held], labelled[len(labelled) - n_held :]


# -- 1. inverse dynamics --------------------------------------------------------------------------
@dataclass
class IDMTrainConfig:
    model: IDMConfig = field(default_factory=IDMConfig)
    """IDM architecture."""
    heldout_fraction: float = 0.2
    """Share of the labelled episodes held out to measure IDM accuracy."""
    gate_margin: float = 0.1
    """Quality gate: held-out accuracy must exceed chance (the larger of 1/A and the held-out majority
    share) by this much, or ``idm-label`` refuses to label with it."""
    max_rounds: int = 1
    """Train up to this many rounds of the engine's max_steps, stopping as soon as the gate is cleared."""


def idm_gate(metrics: dict[str, float], n_actions: int, margin: float) -> dict[str, Any]:
    """{passed, accuracy, chance, needed, line}: is the IDM's held-out accuracy over chance by ``margin``?"""
    acc = float(metrics.get("idm/heldout_acc", float("nan")))
    chance = max(1.0 / n_actions, float(metrics.get("idm/majority_share", 0.0)))
    needed = chance + margin
    passed = bool(np.isfinite(acc) and acc >= needed)
    if not np.isfinite(acc):
        line = "IDM quality unknown: no held-out episodes (record more labelled episodes)"
    elif passed:
        line = f"IDM held-out accuracy {acc:.3f} clears the gate (chance {chance:.3f} + {margin:g})"
    else:
        line = (
            f"IDM did not learn: held-out accuracy {acc:.3f} vs chance {chance:.3f} ({n_actions} actions; the "
            f"gate needs >= {needed:.3f}); its pseudo-labels would be noise"
        )
    return {"passed": passed, "accuracy": acc, "chance": chance, "needed": needed, "line": line}


def train_idm(
    corpus: Corpus, config: IDMTrainConfig, engine: EngineConfig, run_dir: Path | None
) -> tuple[InverseDynamicsModel, dict[str, float]]:
    """Train the IDM on the labelled episodes in up to ``max_rounds`` rounds until it clears the quality
    gate; returns the model and {train/held-out accuracy, chance, gate, ...} (``idm/gate_passed`` 0/1)."""
    train_eps, held_eps = split_labelled(corpus, config.heldout_fraction)
    shape = corpus.meta["frame_shape"]
    torch.manual_seed(engine.train.seed)
    model = InverseDynamicsModel(corpus.n_actions, shape[0], shape[2], config.model)
    train = WindowDataset(train_eps, [e.actions for e in train_eps], config.model.context)
    held = WindowDataset(held_eps, [e.actions for e in held_eps], config.model.context) if held_eps else None
    task = _ClassifierTask(model, "window", held)
    majority = 0.0
    if held_eps:
        counts = np.bincount(np.concatenate([e.actions for e in held_eps]), minlength=corpus.n_actions)
        majority = float(counts.max() / max(counts.sum(), 1))
    seconds, rounds, gate = 0.0, 0, {"passed": False}
    summary = None
    for rounds in range(1, max(config.max_rounds, 1) + 1):
        summary = Engine(_fit_batch(engine, len(train)), run_dir if rounds == 1 else None).fit(task, train)
        seconds += summary.seconds
        model.eval()
        held_acc = accuracy(model, held, "window") if held is not None else float("nan")
        model.train()
        gate = idm_gate(
            {"idm/heldout_acc": held_acc, "idm/majority_share": majority},
            corpus.n_actions,
            config.gate_margin,
        )
        if gate["passed"] or held is None:
            break
        log.info("IDM round %d: %s", rounds, gate["line"])
    model.eval()
    metrics = {
        "idm/train_acc": accuracy(model, train, "window"),
        "idm/heldout_acc": gate.get("accuracy", float("nan")),
        "idm/chance": gate.get("chance", 1.0 / corpus.n_actions),
        "idm/majority_share": majority,
        "idm/gate_needed": gate.get("needed", float("nan")),
        "idm/gate_passed": float(gate["passed"]),
        "idm/rounds": float(rounds),
        "idm/train_transitions": float(len(train)),
        "idm/seconds": seconds,
        "idm/samples_per_s": summary.samples_per_s if summary is not None else float("nan"),
    }
    (log.info if gate["passed"] else log.warning)(gate["line"])
    if run_dir is not None:
        spec = model_spec(config.model, corpus.n_actions, shape, corpus.meta["env"])
        save_model(
            model,
            Path(run_dir) / "idm",
            "idm",
            spec | {"metrics": metrics, "gate": {"margin": config.gate_margin, "line": gate["line"]}},
        )
    return model.cpu(), metrics


def check_idm_gate(
    spec: dict, source: Path, force: bool = False, margin: float | None = None
) -> dict[str, Any]:
    """The gate of a saved IDM (``spec`` from :func:`load_idm`); refuses a failed one unless ``force``."""
    metrics = spec.get("metrics", {})
    margin = margin if margin is not None else float(spec.get("gate", {}).get("margin", 0.1))
    gate = idm_gate(metrics, int(spec["n_actions"]), margin)
    if not gate["passed"] and not force:
        raise CheckpointError(
            f"--model {source}: {gate['line']}; train it longer or on more labelled episodes (or pass --force true)"
        )
    return gate


# -- 2. pseudo-labels -----------------------------------------------------------------------------
def label_corpus(corpus: Corpus, idm: InverseDynamicsModel, write: bool = True) -> dict[str, float]:
    """Pseudo-label every unlabelled episode (arg-max of the IDM); writes ``corpus/pseudo/*.npz``.

    Returns the labelled transition count, mean confidence and, where the corpus kept the true actions
    (``truth/``), the pseudo-label accuracy.
    """
    if corpus.meta["frame_shape"] != list(corpus.episodes[0].frames.shape[1:]):
        raise DataError(f"{corpus.root}: frames do not match meta.json frame_shape")
    context = (idm.window - 2) // 2
    idm.eval()
    correct = total_truth = 0
    confidences: list[float] = []
    n = 0
    if write:
        (corpus.root / "pseudo").mkdir(exist_ok=True)
    for episode in corpus.unlabelled:
        if episode.steps == 0:
            continue
        windows = episode_windows(episode.frames, context)  # (T, W, C, H, W_img)
        probs = predict(idm, windows)  # (T, A)
        actions = probs.argmax(-1).numpy().astype(np.int64)
        confidence = probs.max(-1).values.numpy().astype(np.float32)
        if write:
            np.savez_compressed(
                corpus.root / "pseudo" / Path(episode.name).name, actions=actions, confidence=confidence
            )
        truth = corpus.truth(episode)
        if truth is not None:
            correct += int((truth == actions).sum())
            total_truth += len(truth)
        confidences += confidence.tolist()
        n += len(actions)
    return {
        "label/transitions": float(n),
        "label/mean_confidence": float(np.mean(confidences)) if confidences else float("nan"),
        "label/accuracy_vs_truth": correct / total_truth if total_truth else float("nan"),
    }


def episode_windows(frames: np.ndarray, context: int) -> torch.Tensor:
    """(T+1, H, W, C) uint8 frames -> every transition's window (T, 2k + 2, C, H, W) float."""
    steps = frames.shape[0] - 1
    flat = to_chw(frames)  # (T+1, C, H, W)
    return torch.from_numpy(flat[window_indices(steps, context)])


# -- 3. behaviour cloning -------------------------------------------------------------------------
@dataclass
class BCConfig:
    model: PolicyConfig = field(default_factory=PolicyConfig)
    """Policy architecture (its encoder + head become SB3's features extractor + action net)."""
    labels: str = "pseudo"
    """'pseudo': labelled + IDM-labelled videos (VPT); 'labelled': the labelled episodes only."""
    heldout_fraction: float = 0.2
    """Share of the labelled episodes held out to measure action accuracy."""
    eval_episodes: int = 10
    """Episodes rolled out in the environment to measure the cloned policy's return."""
    class_balance: bool = False
    """Weight the cross-entropy by inverse action frequency (N / (A n_a)): a rare but decisive action
    (Breakout's FIRE, ~6 % of the expert's steps, without which no ball is served) is not drowned by the
    majority class."""


def class_weights(actions: np.ndarray, n_actions: int) -> torch.Tensor:
    """Inverse-frequency weights N / (A n_a) of the actions present (absent ones: 0): (A,)."""
    counts = np.bincount(actions, minlength=n_actions).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (n_actions * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def train_bc(
    corpus: Corpus, config: BCConfig, engine: EngineConfig, run_dir: Path | None, seed: int = 0
) -> tuple[PixelPolicy, dict[str, float]]:
    """Clone a causal policy from true + pseudo labels; returns the policy and its metrics."""
    if config.labels not in ("pseudo", "labelled"):
        raise DataError(f"--bc.labels {config.labels!r}: use 'pseudo' or 'labelled'")
    train_eps, held_eps = split_labelled(corpus, config.heldout_fraction)
    episodes, actions = list(train_eps), [e.actions for e in train_eps]
    if config.labels == "pseudo":
        missing = 0
        for episode in corpus.unlabelled:
            pseudo = corpus.pseudo(episode)
            if pseudo is None:
                missing += 1
                continue
            episodes.append(episode)
            actions.append(pseudo)
        if missing == len(corpus.unlabelled) and missing:
            raise DataError(
                f"{corpus.root / 'pseudo'}: no pseudo-labels; run `warmstart-rl idm-label` first or pass "
                f"--bc.labels labelled"
            )
    shape = corpus.meta["frame_shape"]
    stack = default_frame_stack(corpus.env_config.env_id, config.model.frame_stack)
    model_config = replace(config.model, frame_stack=stack)
    torch.manual_seed(engine.train.seed)
    policy = PixelPolicy(corpus.n_actions, shape[0], shape[2], model_config)
    train = FrameDataset(episodes, actions, stack)
    held = FrameDataset(held_eps, [e.actions for e in held_eps], stack) if held_eps else None
    weight = class_weights(train.act, corpus.n_actions) if config.class_balance else None
    task = _ClassifierTask(policy, "obs", held, weight)
    summary = Engine(_fit_batch(engine, len(train)), run_dir).fit(task, train)
    policy = policy.cpu().eval()
    metrics = {
        "bc/transitions": float(len(train)),
        "bc/heldout_acc": accuracy(policy, held, "obs") if held is not None else float("nan"),
        "bc/seconds": summary.seconds,
    }
    if config.eval_episodes > 0:
        metrics["bc/return"] = evaluate_policy(
            policy, corpus.env_config, config.eval_episodes, seed=10_000 + seed
        )
    if run_dir is not None:
        spec = model_spec(model_config, corpus.n_actions, shape, corpus.meta["env"])
        save_model(policy, Path(run_dir) / "policy", "policy", spec | {"metrics": metrics})
    return policy, metrics


@torch.no_grad()
def evaluate_policy(policy: PixelPolicy, env_config: EnvConfig, episodes: int, seed: int) -> float:
    """Mean episodic return of the greedy policy over ``episodes`` episodes (through its frame stack)."""
    return greedy_return(policy, env_config, episodes, seed, policy.frame_stack)


# -- 4. fine-tuning with stable-baselines3 PPO ----------------------------------------------------
def _extractor_class():
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    class PixelExtractor(BaseFeaturesExtractor):
        """SB3 features extractor holding the same :class:`PixelEncoder` as the BC policy."""

        def __init__(self, observation_space: Any, encoder: dict | None = None, frames: int = 1) -> None:
            config = EncoderConfig(**(encoder or {}))
            super().__init__(observation_space, config.features_dim)
            c, h, _ = observation_space.shape  # SB3 hands images channel-first (k stacked frames)
            self.encoder = PixelEncoder(c, h, config, frames)

        def forward(self, observations: torch.Tensor) -> torch.Tensor:
            return self.encoder(observations)  # (B, D)

    return PixelExtractor


def policy_kwargs(config: PolicyConfig) -> dict[str, Any]:
    """SB3 ``policy_kwargs`` whose actor is exactly :class:`PixelPolicy` (pi=[] -> action_net = head)."""
    return {
        "features_extractor_class": _extractor_class(),
        "features_extractor_kwargs": {
            "encoder": asdict(config.encoder),
            "frames": int(config.frame_stack or 1),
        },
        "net_arch": {"pi": [], "vf": list(config.value_hidden)},
        "share_features_extractor": True,
    }


def load_policy_into_ppo(model: Any, policy: PixelPolicy) -> None:
    """Copy the BC weights into a built PPO's policy (after SB3's orthogonal init, so they survive)."""
    state = {f"features_extractor.encoder.{k}": v for k, v in policy.encoder.state_dict().items()}
    state |= {f"action_net.{k}": v for k, v in policy.head.state_dict().items()}
    target = model.policy.state_dict()
    for key, value in state.items():
        if key not in target or target[key].shape != value.shape:
            raise CheckpointError(
                f"BC policy tensor {key} {tuple(value.shape)} does not fit the PPO policy "
                f"({tuple(target[key].shape) if key in target else 'absent'}); fine-tune with the BC config"
            )
    missing, unexpected = model.policy.load_state_dict(state, strict=False)
    assert not unexpected, unexpected


def _episode_logger_class():
    from stable_baselines3.common.callbacks import BaseCallback

    class EpisodeLogger(BaseCallback):
        """Records (env step, episodic return) of every finished episode (from Monitor's info)."""

        def __init__(self) -> None:
            super().__init__()
            self.curve: list[tuple[int, float]] = []

        def _on_step(self) -> bool:
            for info in self.locals.get("infos", []):
                if "episode" in info:
                    self.curve.append((int(self.num_timesteps), float(info["episode"]["r"])))
            return True

    return EpisodeLogger


@dataclass
class PPOConfig:
    total_steps: int = 8192
    """Environment steps of fine-tuning (the same for every arm of the bench)."""
    n_envs: int = 4
    """Parallel environments (DummyVecEnv)."""
    n_steps: int = 64
    """Rollout length per environment between updates."""
    batch_size: int = 64
    """PPO minibatch."""
    n_epochs: int = 4
    """PPO epochs per rollout."""
    lr: float = 3e-4
    """Adam learning rate (all arms)."""
    ent_coef: float = 0.01
    """Entropy bonus."""
    gamma: float = 0.99
    """Discount."""
    kl_coef: float = 0.0
    """VPT's KL-to-pretrained coefficient rho (0: plain PPO loss)."""
    kl_decay: float = 0.995
    """rho is multiplied by this after every PPO epoch."""
    start_check_episodes: int = 5
    """Episodes of the BC start (sampled actions, as PPO acts) and of a random policy, compared before
    fine-tuning: a start below random is reported (0 disables the check)."""
    start_check_steps: int = 2000
    """Step cap of each of those episodes (a policy that never serves a ball must not stall the check)."""


def finetune_ppo(
    env_config: EnvConfig,
    config: PPOConfig,
    policy_config: PolicyConfig,
    init: PixelPolicy | None,
    seed: int = 0,
    save_to: Path | None = None,
) -> dict[str, Any]:
    """Run PPO (from the BC policy when ``init`` is given, from scratch otherwise).

    Returns {curve: [(step, return)], steps_per_s, seconds, final_return}. With ``save_to`` the SB3 model
    is saved as ``save_to`` (.zip), loadable by ``PPO.load`` and by ``collect --policy``.
    """
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    if config.kl_coef < 0:
        raise ConfigError(f"--ppo.kl_coef {config.kl_coef}: must be >= 0")
    stack = (
        init.frame_stack
        if init is not None
        else default_frame_stack(env_config.env_id, policy_config.frame_stack)
    )
    policy_config = replace(policy_config, frame_stack=stack)
    probe = make_policy_env(env_config, stack)
    shape = probe.observation_space.shape
    probe.close()
    if init is not None:
        expected = init.frame_shape[2] * init.frame_stack  # k stacked frames (differences come after)
        if shape[2] != expected or init.head.out_features != probe.action_space.n:
            raise CheckpointError(
                f"the BC policy takes {expected}-channel frames and {init.head.out_features} actions; "
                f"{env_config.env_id} gives {shape} / Discrete({probe.action_space.n}); fine-tune on its env"
            )
    venv = DummyVecEnv(
        [
            lambda i=i: Monitor(make_policy_env(env_config, stack, seed=seed * 1000 + i))
            for i in range(config.n_envs)
        ]
    )
    kl_coef = config.kl_coef if init is not None else 0.0
    reference = copy.deepcopy(init) if (init is not None and kl_coef > 0) else None
    model = kl_ppo_class()(
        "CnnPolicy",
        venv,
        n_steps=config.n_steps,
        batch_size=config.batch_size,
        n_epochs=config.n_epochs,
        learning_rate=config.lr,
        ent_coef=config.ent_coef,
        gamma=config.gamma,
        policy_kwargs=policy_kwargs(policy_config),
        seed=seed,
        device="cpu",
        verbose=0,
        reference=reference,
        kl_coef=kl_coef,
        kl_decay=config.kl_decay,
    )
    start_check = None
    if init is not None:
        load_policy_into_ppo(model, init)
        if config.start_check_episodes > 0:
            start_check = check_start(init, env_config, config, seed)
    callback = _episode_logger_class()()
    start = time.perf_counter()
    model.learn(total_timesteps=config.total_steps, callback=callback)
    seconds = time.perf_counter() - start
    if save_to is not None:
        model.save(save_to)
    venv.close()
    curve = callback.curve
    tail = [r for _, r in curve[-20:]]
    return {
        "curve": curve,
        "steps": int(model.num_timesteps),
        "seconds": seconds,
        "steps_per_s": model.num_timesteps / seconds,
        "final_return": float(np.mean(tail)) if tail else float("nan"),
        "model": model,
        "start_check": start_check,
    }


def check_start(init: PixelPolicy, env_config: EnvConfig, config: PPOConfig, seed: int) -> dict[str, Any]:
    """Return of the BC start (actions sampled from its softmax) vs the uniformly random policy on the same
    reset seeds; ``below_random`` and a ``line`` say whether PPO starts below random play."""
    env = make_policy_env(env_config, init.frame_stack, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    n = int(env.action_space.n)
    rng = np.random.default_rng(seed)

    @torch.no_grad()
    def sample(obs: np.ndarray) -> int:
        logits = init(torch.from_numpy(to_chw(obs[None])))
        return int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen))

    kw = {"max_steps": config.start_check_steps}
    try:
        bc = float(np.mean(episode_returns(sample, env, config.start_check_episodes, 20_000 + seed, **kw)))
        rand = float(
            np.mean(
                episode_returns(
                    lambda o: int(rng.integers(n)), env, config.start_check_episodes, 20_000 + seed, **kw
                )
            )
        )
    finally:
        env.close()
    below = bc < rand
    line = (
        f"BC start is below a random policy ({bc:.3f} < {rand:.3f} over {config.start_check_episodes} episodes): "
        f"the pretrained policy hurts; check the IDM gate and the BC accuracy"
        if below
        else f"BC start {bc:.3f} vs random policy {rand:.3f} ({config.start_check_episodes} episodes)"
    )
    (log.warning if below else log.info)(line)
    return {"bc_return": bc, "random_return": rand, "below_random": below, "line": line}


def steps_to_threshold(curve: list[tuple[int, float]], threshold: float, window: int = 10) -> int | None:
    """First env step where the mean of the last ``window`` episode returns reaches ``threshold``."""
    returns: list[float] = []
    for step, ret in curve:
        returns.append(ret)
        if len(returns) >= window and float(np.mean(returns[-window:])) >= threshold:
            return step
    return None


def load_policy(path: Path) -> tuple[PixelPolicy, dict]:
    """A BC policy saved by ``bc`` (a run dir, or its ``policy/`` folder)."""
    path = Path(path)
    if (path / "policy" / "config.json").is_file():
        path = path / "policy"
    model, spec = load_model(path, "policy")
    return model.eval(), spec


def load_idm(path: Path) -> tuple[InverseDynamicsModel, dict]:
    path = Path(path)
    if (path / "idm" / "config.json").is_file():
        path = path / "idm"
    model, spec = load_model(path, "idm")
    return model.eval(), spec
