"""VPT end to end: inverse dynamics on a few labelled episodes, pseudo-labels for the videos, behaviour
cloning of a causal policy, and PPO fine-tuning in stable-baselines3 from the cloned weights with a KL
penalty to the frozen pretrained policy.

Seed: *Video PreTraining (VPT): Learning to Act by Watching Unlabeled Online Videos* (Baker et al.,
arXiv 2206.11795); the IDM-as-pretraining view follows *Inverse Dynamics Pretraining Learns Good
Representations for Multitask Imitation* (arXiv 2305.16985). Implemented: the non-causal IDM (a window of
past and future frames), labelling by arg-max with confidences, BC with the core engine, PPO from the BC
weights with ``rho * KL(pi_pretrained || pi_theta)`` added to SB3's PPO loss and decayed geometrically per
update. Left out: VPT's IDM/policy architecture (3D conv + ResNet + transformer over 128 frames), the
hierarchical action space, and the data-filtering classifier.

The PPO update (:meth:`KLPPO.train`) is stable-baselines3's ``PPO.train`` (MIT licence) restated with one
extra loss term; SB3 offers no hook to add a loss, so it is rewritten rather than patched.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from warmstart.engine import Engine, EngineConfig
from warmstart.errors import CheckpointError, ConfigError, DataError
from warmstart_rl.data import Corpus, EnvConfig, Episode, greedy_return, make_env, to_chw
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
    """Items ``{"obs": (C, H, W) float, "action": ()}``: o_t with the (true or pseudo) action a_t."""

    def __init__(self, episodes: list[Episode], actions: list[np.ndarray]) -> None:
        self.obs = np.concatenate([e.frames[:-1] for e in episodes])  # (N, H, W, C) uint8
        self.act = np.concatenate(actions).astype(np.int64)  # (N,)

    def __len__(self) -> int:
        return len(self.act)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        return {
            "obs": torch.from_numpy(to_chw(self.obs[item : item + 1])[0]),
            "action": torch.tensor(self.act[item]),
        }


class _ClassifierTask:
    """Cross-entropy on ``batch[key] -> batch['action']``; evaluate(): accuracy on a held-out set."""

    def __init__(self, model: nn.Module, key: str, heldout: Dataset | None) -> None:
        self.model, self.key, self.heldout = model, key, heldout

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        logits = self.model(batch[self.key])  # (B, A)
        loss = F.cross_entropy(logits.float(), batch["action"])
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


def train_idm(
    corpus: Corpus, config: IDMTrainConfig, engine: EngineConfig, run_dir: Path | None
) -> tuple[InverseDynamicsModel, dict[str, float]]:
    """Train the IDM on the labelled episodes; returns the model and {train/heldout accuracy, ...}."""
    train_eps, held_eps = split_labelled(corpus, config.heldout_fraction)
    shape = corpus.meta["frame_shape"]
    torch.manual_seed(engine.train.seed)
    model = InverseDynamicsModel(corpus.n_actions, shape[0], shape[2], config.model)
    train = WindowDataset(train_eps, [e.actions for e in train_eps], config.model.context)
    held = WindowDataset(held_eps, [e.actions for e in held_eps], config.model.context) if held_eps else None
    task = _ClassifierTask(model, "window", held)
    summary = Engine(_fit_batch(engine, len(train)), run_dir).fit(task, train)
    model.eval()
    metrics = {
        "idm/train_acc": accuracy(model, train, "window"),
        "idm/heldout_acc": accuracy(model, held, "window") if held is not None else float("nan"),
        "idm/train_transitions": float(len(train)),
        "idm/seconds": summary.seconds,
        "idm/samples_per_s": summary.samples_per_s,
    }
    if run_dir is not None:
        spec = model_spec(config.model, corpus.n_actions, shape, corpus.meta["env"])
        save_model(model, Path(run_dir) / "idm", "idm", spec | {"metrics": metrics})
    return model.cpu(), metrics


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
    torch.manual_seed(engine.train.seed)
    policy = PixelPolicy(corpus.n_actions, shape[0], shape[2], config.model)
    train = FrameDataset(episodes, actions)
    held = FrameDataset(held_eps, [e.actions for e in held_eps]) if held_eps else None
    summary = Engine(_fit_batch(engine, len(train)), run_dir).fit(_ClassifierTask(policy, "obs", held), train)
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
        spec = model_spec(config.model, corpus.n_actions, shape, corpus.meta["env"])
        save_model(policy, Path(run_dir) / "policy", "policy", spec | {"metrics": metrics})
    return policy, metrics


@torch.no_grad()
def evaluate_policy(policy: PixelPolicy, env_config: EnvConfig, episodes: int, seed: int) -> float:
    """Mean episodic return of the greedy policy over ``episodes`` episodes."""
    return greedy_return(policy, env_config, episodes, seed)


# -- 4. fine-tuning with stable-baselines3 PPO ----------------------------------------------------
def _extractor_class():
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    class PixelExtractor(BaseFeaturesExtractor):
        """SB3 features extractor holding the same :class:`PixelEncoder` as the BC policy."""

        def __init__(self, observation_space: Any, encoder: dict | None = None) -> None:
            config = EncoderConfig(**(encoder or {}))
            super().__init__(observation_space, config.features_dim)
            c, h, _ = observation_space.shape  # SB3 hands images channel-first
            self.encoder = PixelEncoder(c, h, config)

        def forward(self, observations: torch.Tensor) -> torch.Tensor:
            return self.encoder(observations)  # (B, D)

    return PixelExtractor


def policy_kwargs(config: PolicyConfig) -> dict[str, Any]:
    """SB3 ``policy_kwargs`` whose actor is exactly :class:`PixelPolicy` (pi=[] -> action_net = head)."""
    return {
        "features_extractor_class": _extractor_class(),
        "features_extractor_kwargs": {"encoder": asdict(config.encoder)},
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


def _kl_ppo_class():
    from gymnasium import spaces
    from stable_baselines3 import PPO
    from stable_baselines3.common.preprocessing import preprocess_obs
    from stable_baselines3.common.utils import explained_variance

    class KLPPO(PPO):
        """SB3 PPO plus ``kl_coef * kl_decay**n_updates * KL(pi_ref || pi_theta)`` (VPT's auxiliary loss)."""

        def __init__(
            self,
            *args: Any,
            reference: nn.Module | None = None,
            kl_coef: float = 0.0,
            kl_decay: float = 1.0,
            **kwargs: Any,
        ) -> None:
            super().__init__(*args, **kwargs)
            self.reference = reference.to(self.device).eval() if reference is not None else None
            if self.reference is not None:
                for p in self.reference.parameters():
                    p.requires_grad_(False)
            self.kl_coef, self.kl_decay = kl_coef, kl_decay

        def train(self) -> None:
            if self.reference is None or self.kl_coef == 0.0:
                return super().train()
            self.policy.set_training_mode(True)
            self._update_learning_rate(self.policy.optimizer)
            clip_range = self.clip_range(self._current_progress_remaining)
            clip_range_vf = (
                self.clip_range_vf(self._current_progress_remaining)
                if self.clip_range_vf is not None
                else None
            )
            coef = self.kl_coef * self.kl_decay**self._n_updates
            pg_losses, value_losses, entropy_losses, kl_refs, clip_fractions = [], [], [], [], []
            continue_training = True
            for _ in range(self.n_epochs):
                approx_kl_divs = []
                for data in self.rollout_buffer.get(self.batch_size):
                    actions = data.actions
                    if isinstance(self.action_space, spaces.Discrete):
                        actions = data.actions.long().flatten()
                    features = self.policy.extract_features(data.observations)
                    latent_pi, latent_vf = self.policy.mlp_extractor(features)
                    dist = self.policy._get_action_dist_from_latent(latent_pi)
                    log_prob, entropy = dist.log_prob(actions), dist.entropy()
                    values = self.policy.value_net(latent_vf).flatten()
                    advantages = data.advantages
                    if self.normalize_advantage and len(advantages) > 1:
                        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
                    ratio = torch.exp(log_prob - data.old_log_prob)
                    policy_loss = -torch.min(
                        advantages * ratio, advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
                    ).mean()
                    values_pred = (
                        values
                        if clip_range_vf is None
                        else data.old_values
                        + torch.clamp(values - data.old_values, -clip_range_vf, clip_range_vf)
                    )
                    value_loss = F.mse_loss(data.returns, values_pred)
                    entropy_loss = -torch.mean(entropy)
                    with torch.no_grad():
                        obs = preprocess_obs(
                            data.observations, self.observation_space, self.policy.normalize_images
                        )
                        ref_logp = torch.log_softmax(self.reference(obs), -1)  # (B, A)
                    logp = torch.log_softmax(dist.distribution.logits, -1)  # (B, A)
                    kl_ref = (ref_logp.exp() * (ref_logp - logp)).sum(-1).mean()
                    loss = (
                        policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss + coef * kl_ref
                    )
                    with torch.no_grad():
                        log_ratio = log_prob - data.old_log_prob
                        approx_kl = torch.mean((torch.exp(log_ratio) - 1) - log_ratio).item()
                    approx_kl_divs.append(approx_kl)
                    if self.target_kl is not None and approx_kl > 1.5 * self.target_kl:
                        continue_training = False
                        break
                    self.policy.optimizer.zero_grad()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                    self.policy.optimizer.step()
                    pg_losses.append(policy_loss.item())
                    value_losses.append(value_loss.item())
                    entropy_losses.append(entropy_loss.item())
                    kl_refs.append(kl_ref.item())
                    clip_fractions.append(torch.mean((torch.abs(ratio - 1) > clip_range).float()).item())
                self._n_updates += 1
                if not continue_training:
                    break
            explained_var = explained_variance(
                self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten()
            )
            self.logger.record("train/entropy_loss", float(np.mean(entropy_losses or [0.0])))
            self.logger.record("train/policy_gradient_loss", float(np.mean(pg_losses or [0.0])))
            self.logger.record("train/value_loss", float(np.mean(value_losses or [0.0])))
            self.logger.record("train/approx_kl", float(np.mean(approx_kl_divs or [0.0])))
            self.logger.record("train/kl_to_pretrained", float(np.mean(kl_refs or [0.0])))
            self.logger.record("train/kl_coef", coef)
            self.logger.record("train/clip_fraction", float(np.mean(clip_fractions or [0.0])))
            self.logger.record("train/explained_variance", float(explained_var))
            self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

    return KLPPO


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
    probe = make_env(env_config)
    shape = probe.observation_space.shape
    probe.close()
    if init is not None:
        expected = init.encoder.conv[0].in_channels
        if shape[2] != expected or init.head.out_features != probe.action_space.n:
            raise CheckpointError(
                f"the BC policy takes {expected}-channel frames and {init.head.out_features} actions; "
                f"{env_config.env_id} gives {shape} / Discrete({probe.action_space.n}); fine-tune on its env"
            )
    venv = DummyVecEnv(
        [lambda i=i: Monitor(make_env(env_config, seed=seed * 1000 + i)) for i in range(config.n_envs)]
    )
    kl_coef = config.kl_coef if init is not None else 0.0
    reference = copy.deepcopy(init) if (init is not None and kl_coef > 0) else None
    model = _kl_ppo_class()(
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
    if init is not None:
        load_policy_into_ppo(model, init)
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
    }


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
