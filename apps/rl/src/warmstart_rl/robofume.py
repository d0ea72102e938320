"""RoboFuME in miniature: offline RL (calibrated Q-learning) on prior demonstrations with a learned success
classifier as the only reward, then online fine-tuning driven by that classifier.

Seed: *Robot Fine-Tuning Made Easy: Pre-Training Rewards and Policies for Autonomous Real-World
Reinforcement Learning* (Yang et al., arXiv 2310.15145), whose offline stage is Cal-QL (*Calibrated Offline
RL Pre-Training for Efficient Online Fine-Tuning*, Nakamoto et al., arXiv 2303.05479). Implemented:

- a **success classifier** on single frames (a small CNN; the paper fine-tunes the MiniGPT-4 VLM), trained
  with the core engine on the demonstrations' final frames of successful episodes (goal images, positives)
  against every other frame (negatives); its detections are the reward ``r_t = 1[p(success | o_{t+1}) > 0.5]``
  and mark task completion, for offline *and* online data — the environment's reward is never read for
  learning (only to report the true return);
- **Cal-QL** for discrete actions, trained offline with the core engine: double-DQN TD loss plus the CQL
  regulariser ``alpha (logsumexp_a max(Q(s, a), V_mc(s)) - Q(s, a_data))`` whose push-down is clipped at the
  Monte-Carlo return-to-go of the (classifier-labelled) demonstration, Cal-QL's calibration;
- **online fine-tuning**: the same loss on a 50/50 mix of the offline data and new epsilon-greedy
  transitions (Cal-QL's mixing), rewards from the classifier.

- **reset-free fine-tuning** (``reset_free``, MiniGrid only: its episodes can be stepped on after the
  goal): a forward and a backward Q-network alternate without resets; the backward task's success is a
  second classifier of the initial-state distribution (the demonstrations' first frames); a phase that
  does not succeed within ``phase_steps`` is a human intervention (a reset), counted.

Left out: the VLM (an open_clip image tower is the pretrained backbone option), language task
specification, image augmentation, backward demonstrations (the backward policy learns online only).
Written by hand: SB3 has no offline or calibrated Q-learning.
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from warmstart.engine import Engine, EngineConfig
from warmstart.errors import ConfigError, DataError
from warmstart_rl.data import Corpus, EnvConfig, Episode, greedy_return, make_env, to_chw
from warmstart_rl.models import EncoderConfig, PixelPolicy, PolicyConfig, model_spec, save_model

log = logging.getLogger(__name__)


# -- 1. the success classifier (reward model) -----------------------------------------------------
class SuccessFrames(Dataset):
    """Items {"obs": (C, H, W), "label": ()}: 1 for the last frame of a successful episode (``positives =
    'goal'``) or for the first frame of every episode (``'initial'``: the reset-free backward task's success
    is being back in the initial-state distribution), else 0."""

    def __init__(self, episodes: list[Episode], positives: str = "goal") -> None:
        frames, labels = [], []
        for episode in episodes:
            success = episode.rewards is not None and float(episode.rewards.sum()) > 0
            y = np.zeros(len(episode.frames), np.float32)
            if positives == "initial":
                y[0] = 1.0
            else:
                y[-1] = 1.0 if success else 0.0
            frames.append(episode.frames)
            labels.append(y)
        self.frames, self.labels = np.concatenate(frames), np.concatenate(labels)  # (N, H, W, C), (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        return {
            "obs": torch.from_numpy(to_chw(self.frames[item : item + 1])[0]),
            "label": torch.tensor(self.labels[item]),
        }


class _ClassifierTask:
    def __init__(self, model: PixelPolicy, pos_weight: float, heldout: SuccessFrames | None) -> None:
        self.model, self.heldout = model, heldout
        self.pos_weight = torch.tensor(pos_weight)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        logit = self.model(batch["obs"]).squeeze(-1).float()  # (B,)
        loss = F.binary_cross_entropy_with_logits(
            logit, batch["label"], pos_weight=self.pos_weight.to(logit.device)
        )
        return loss, {
            "acc": ((logit > 0).float() == batch["label"]).float().mean().item(),
            "samples": len(logit),
        }

    def evaluate(self) -> dict[str, float]:
        return classifier_metrics(self.model, self.heldout) if self.heldout is not None else {}


@torch.no_grad()
def success_prob(model: nn.Module, frames: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """p(success) of (N, H, W, C) uint8 frames: (N,)."""
    device = next(model.parameters(), torch.empty(0)).device
    out = [
        torch.sigmoid(model(torch.from_numpy(to_chw(frames[i : i + batch_size])).to(device)).float())
        .squeeze(-1)
        .cpu()
        for i in range(0, len(frames), batch_size)
    ]
    return torch.cat(out).numpy()


def classifier_metrics(model: nn.Module, data: SuccessFrames) -> dict[str, float]:
    """Balanced accuracy, true-positive and false-positive rates at p > 0.5."""
    was_training = model.training
    model.eval()
    pred = success_prob(model, data.frames) > 0.5
    model.train(was_training)
    pos, neg = data.labels == 1, data.labels == 0
    tpr = float(pred[pos].mean()) if pos.any() else float("nan")
    fpr = float(pred[neg].mean()) if neg.any() else float("nan")
    return {"balanced_acc": 0.5 * (tpr + 1 - fpr), "tpr": tpr, "fpr": fpr}


def train_classifier(
    train_eps: list[Episode],
    held_eps: list[Episode],
    image_size: int,
    engine: EngineConfig,
    backbone: str = "cnn",
    weights: str | None = None,
    config_file: str | None = None,
    positives: str = "goal",
) -> tuple[nn.Module, dict[str, float]]:
    """The success classifier: a small CNN from scratch (``backbone = 'cnn'``) or an open_clip image tower
    (:mod:`warmstart_rl.clipreward`) fine-tuned from ``weights``; trained with the core engine. ``positives``:
    'goal' (the task's success) or 'initial' (the reset-free backward task's: the episodes' first frames)."""
    train = SuccessFrames(train_eps, positives)
    if train.labels.sum() == 0:
        raise DataError(
            "no successful demonstration (no episode with return > 0): no goal images to learn from"
        )
    held = SuccessFrames(held_eps, positives) if held_eps else None
    torch.manual_seed(engine.train.seed)
    if backbone == "cnn":
        model: nn.Module = PixelPolicy(1, image_size, 3, PolicyConfig(EncoderConfig([16, 32], 32)))
    else:
        from warmstart_rl.clipreward import build_clip_classifier

        model = build_clip_classifier(backbone, weights, config_file)
    pos_weight = float((train.labels == 0).sum() / max(train.labels.sum(), 1))
    engine = copy.deepcopy(engine)
    engine.train.micro_batch_size = min(engine.train.micro_batch_size, len(train))
    Engine(engine, None).fit(_ClassifierTask(model, pos_weight, held), train)
    model = model.cpu().eval()
    metrics = {f"classifier/{k}": v for k, v in classifier_metrics(model, held or train).items()}
    return model, metrics


# -- 2. offline Cal-QL ------------------------------------------------------------------------------
@dataclass
class Transitions:
    """Arrays of (o_t, a_t, r_t, o_{t+1}, done_t, mc_t); frames uint8 (N, H, W, C)."""

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    done: np.ndarray
    mc_return: np.ndarray

    def __len__(self) -> int:
        return len(self.action)

    def batch(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        return {
            "obs": torch.from_numpy(to_chw(self.obs[idx])),
            "action": torch.from_numpy(self.action[idx]),
            "reward": torch.from_numpy(self.reward[idx]),
            "next_obs": torch.from_numpy(to_chw(self.next_obs[idx])),
            "done": torch.from_numpy(self.done[idx]),
            "mc_return": torch.from_numpy(self.mc_return[idx]),
        }

    @staticmethod
    def concat(parts: list[Transitions]) -> Transitions:
        return Transitions(
            *(np.concatenate([getattr(p, k) for p in parts]) for k in Transitions.__dataclass_fields__)
        )


CLASSIFIERS = {
    "classifier": ("success classifier", "goal frames"),
    "initial_classifier": ("initial-state classifier", "initial frames"),
}
"""Metric prefix -> (name, what its positives are): the success (forward) and initial-state (backward,
reset-free) classifiers, checked by the same :func:`classifier_health`."""


def classifier_health(metrics: dict[str, float], margin: float, prefix: str = "classifier") -> dict[str, Any]:
    """{healthy, line}: does the classifier ``prefix`` ('classifier': success, 'initial_classifier': the
    reset-free initial-state one) fire on held-out positives, above chance?"""
    name, positives = CLASSIFIERS[prefix]
    acc, tpr = (
        metrics.get(f"{prefix}/balanced_acc", float("nan")),
        metrics.get(f"{prefix}/tpr", float("nan")),
    )
    if not np.isfinite(tpr) or tpr == 0:
        return {"healthy": False, "line": f"{name} never fires on held-out {positives} (TPR 0)"}
    if not np.isfinite(acc) or acc < 0.5 + margin:
        return {
            "healthy": False,
            "line": f"{name} at chance (balanced accuracy {acc:.3f}, needs >= {0.5 + margin:.2f})",
        }
    return {"healthy": True, "line": f"{name} healthy (balanced accuracy {acc:.3f}, TPR {tpr:.2f})"}


def env_reward_episode(
    frames: np.ndarray, actions: np.ndarray, rewards: np.ndarray, gamma: float
) -> Transitions:
    """Transitions of one episode with the environment's own rewards (the fallback reward source); the
    episode's last step is terminal, cut at the first positive reward as :func:`label_episode` cuts."""
    reward = np.asarray(rewards, np.float32)
    hits = np.flatnonzero(reward > 0)
    end = int(hits[0]) + 1 if hits.size else len(actions)
    reward = reward[:end]
    done = np.zeros(end, np.float32)
    done[-1] = 1.0
    mc = np.zeros(end, np.float32)
    running = 0.0
    for t in reversed(range(end)):
        running = reward[t] + gamma * running
        mc[t] = running
    return Transitions(frames[:end], actions[:end].astype(np.int64), reward, frames[1 : end + 1], done, mc)


def label_episode(
    frames: np.ndarray,
    actions: np.ndarray,
    classifier: nn.Module,
    gamma: float,
    terminated: bool = False,
) -> Transitions:
    """Transitions of one episode with classifier rewards; cut at the first detected success.

    r_t = 1[p(success | o_{t+1}) > 0.5], done_t = r_t, mc_t = sum_k gamma^k r_{t+k} (Cal-QL's reference value).
    ``terminated``: the episode ended in a terminal state without a detected success (e.g. a collision), so
    its last transition is terminal too (no bootstrap past it); a truncated one is not.
    """
    reward = (success_prob(classifier, frames[1:]) > 0.5).astype(np.float32)  # (T,)
    hits = np.flatnonzero(reward)
    end = int(hits[0]) + 1 if hits.size else len(actions)
    reward = reward[:end]
    mc = np.zeros(end, np.float32)
    running = 0.0
    for t in reversed(range(end)):
        running = reward[t] + gamma * running
        mc[t] = running
    done = reward.copy()
    if terminated and not hits.size:
        done[-1] = 1.0
    return Transitions(frames[:end], actions[:end].astype(np.int64), reward, frames[1 : end + 1], done, mc)


def calql_loss(
    q_net: nn.Module, target: nn.Module, batch: dict[str, torch.Tensor], gamma: float, alpha: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Double-DQN TD error + alpha * Cal-QL regulariser (CQL push-down clipped at the MC return)."""
    q = q_net(batch["obs"]).float()  # (B, A)
    q_data = q.gather(1, batch["action"][:, None]).squeeze(1)  # (B,)
    with torch.no_grad():
        next_action = q_net(batch["next_obs"]).argmax(-1, keepdim=True)  # (B, 1)
        next_q = target(batch["next_obs"]).float().gather(1, next_action).squeeze(1)
        td_target = batch["reward"] + gamma * (1 - batch["done"]) * next_q
    td = F.smooth_l1_loss(q_data, td_target)
    calibrated = torch.maximum(q, batch["mc_return"][:, None])  # (B, A): never push below V_mc(s)
    regulariser = (torch.logsumexp(calibrated, -1) - q_data).mean()
    return td + alpha * regulariser, {
        "td": td.item(),
        "calql_reg": regulariser.item(),
        "q": q_data.mean().item(),
    }


class TransitionDataset(Dataset):
    def __init__(self, data: Transitions) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.data.batch(np.asarray([item])).items()}


class _CalQLTask:
    """Offline Cal-QL under the core engine; the target network follows by Polyak averaging each step."""

    def __init__(self, model: PixelPolicy, gamma: float, alpha: float, tau: float) -> None:
        self.model, self.gamma, self.alpha, self.tau = model, gamma, alpha, tau
        self.target = copy.deepcopy(model).requires_grad_(False)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        online = getattr(self.model, "module", self.model)
        self.target.to(batch["obs"].device)
        with torch.no_grad():
            for t, o in zip(self.target.parameters(), online.parameters(), strict=True):
                t.lerp_(o, self.tau)
        loss, metrics = calql_loss(self.model, self.target, batch, self.gamma, self.alpha)
        return loss, metrics | {"samples": len(batch["action"])}


@torch.no_grad()
def calibration(q_net: nn.Module, data: Transitions, batch_size: int = 512) -> dict[str, float]:
    """Cal-QL's calibration on ``data`` (the offline transitions): the mean learned value max_a Q(s, a) and
    Q(s, a_data) against the Monte-Carlo return V_mc(s) they are clipped at, and the share of states whose
    value lies below V_mc - 0.05 (an under-estimate is what calibration is meant to prevent)."""
    was_training = q_net.training
    q_net.eval()
    values, q_data = [], []
    for i in range(0, len(data), batch_size):
        idx = np.arange(i, min(i + batch_size, len(data)))
        batch = data.batch(idx)
        q = q_net(batch["obs"]).float()
        values.append(q.max(-1).values)
        q_data.append(q.gather(1, batch["action"][:, None]).squeeze(1))
    q_net.train(was_training)
    v, qd, mc = torch.cat(values).numpy(), torch.cat(q_data).numpy(), data.mc_return
    return {
        "calql/value": float(v.mean()),
        "calql/q_data": float(qd.mean()),
        "calql/v_mc": float(mc.mean()),
        "calql/below_mc_share": float((v < mc - 0.05).mean()),
    }


def combined_health(success: dict[str, Any], initial: dict[str, Any] | None) -> dict[str, Any]:
    """The run's health: healthy when every classifier is; one line, the unhealthy parts first (the success
    classifier before the initial-state one), and each part under its own key."""
    parts = [p for p in (success, initial) if p is not None]
    ordered = [p for p in parts if not p["healthy"]] + [p for p in parts if p["healthy"]]
    return {
        "healthy": all(p["healthy"] for p in parts),
        "line": "; ".join(p["line"] for p in ordered),
        "success_classifier": success,
        "initial_classifier": initial,
    }


# -- 3. online fine-tuning ------------------------------------------------------------------------
@dataclass
class RoboFuMEConfig:
    online_steps: int = 2000
    """Environment steps of online fine-tuning (the same for the scratch baseline)."""
    pretrain: bool = True
    """Offline Cal-QL pretraining on the demonstrations (false: the online-from-scratch baseline)."""
    gamma: float = 0.95
    """Discount."""
    alpha: float = 1.0
    """Weight of the Cal-QL regulariser (offline and online)."""
    tau: float = 0.01
    """Polyak rate of the target network."""
    epsilon: float = 0.1
    """Epsilon-greedy exploration online."""
    batch_size: int = 64
    """Transitions per online update (half offline, half online when pretraining)."""
    lr: float = 3e-4
    """Adam learning rate online."""
    eval_episodes: int = 10
    """Greedy episodes scored with the true environment return."""
    heldout_fraction: float = 0.2
    """Share of the demonstrations held out to score the classifier."""
    health_margin: float = 0.1
    """The classifier is healthy when its balanced accuracy exceeds 0.5 by this much and it fires."""
    backbone: str = "cnn"
    """Success classifier backbone: 'cnn' (small, from scratch) or an open_clip architecture ('ViT-B-32',
    'hf-hub:org/name'; any name with --options.backbone_config)."""
    backbone_weights: str | None = None
    """open_clip pretrained tag or local checkpoint file for the backbone (null: random initialisation)."""
    backbone_config: str | None = None
    """A JSON open_clip model config {embed_dim, vision_cfg, text_cfg} for a custom architecture."""
    reset_free: bool = False
    """RoboFuME's reset-free mode: a forward (task) and a backward (return to the initial-state distribution)
    Q-network alternate without resets, each rewarded by its own classifier; a phase that does not succeed
    within ``phase_steps`` is a human intervention (a reset), counted. MiniGrid-* only (its episodes can be
    stepped on after the goal)."""
    phase_steps: int = 50
    """Steps a forward or backward phase may take before an intervention resets the environment."""
    reward_fallback: str = "env"
    """An unhealthy classifier (never fires / at chance): 'env' learns from the environment's reward
    instead (and says so), 'stop' ends the run with one line, 'classifier' keeps its reward anyway."""
    initial_fallback: str = "resets"
    """Reset-free mode with an unhealthy initial-state (backward) classifier, checked like the success
    classifier: 'resets' fine-tunes with resets instead (episodic, no backward task; said in the last line
    and health.json), 'stop' ends the run with one line, 'classifier' stays reset-free on its detections."""


def _calql_update(
    q_net: nn.Module,
    target: nn.Module,
    optimizer: torch.optim.Optimizer,
    offline: Transitions | None,
    pool: Transitions | None,
    rng: np.random.Generator,
    config: RoboFuMEConfig,
) -> None:
    """One online Cal-QL step on a 50/50 offline/online batch (either alone when the other is missing),
    gradient norm clipped at 10, then the target network's Polyak step."""
    if pool is None and offline is None:
        return
    if offline is not None and pool is not None:
        half = config.batch_size // 2
        parts = [
            (offline, rng.integers(len(offline), size=half)),
            (pool, rng.integers(len(pool), size=half)),
        ]
    else:
        data = pool if pool is not None else offline
        assert data is not None
        parts = [(data, rng.integers(len(data), size=config.batch_size))]
    batches = [d.batch(i) for d, i in parts]
    batch = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    loss, _ = calql_loss(q_net, target, batch, config.gamma, config.alpha)
    optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(q_net.parameters(), 10.0)
    optimizer.step()
    with torch.no_grad():
        for t, o in zip(target.parameters(), q_net.parameters(), strict=True):
            t.lerp_(o, config.tau)


def online_finetune(
    q_net: PixelPolicy,
    classifier: nn.Module,
    offline: Transitions | None,
    env_config: EnvConfig,
    config: RoboFuMEConfig,
    seed: int,
    reward_source: str = "classifier",
) -> dict[str, Any]:
    """Epsilon-greedy interaction; every step one Cal-QL update on offline + online data (classifier reward,
    or the environment's with ``reward_source = 'env'``)."""
    env = make_env(env_config, seed=seed)
    rng = np.random.default_rng(seed)
    target = copy.deepcopy(q_net).requires_grad_(False)
    optimizer = torch.optim.Adam(q_net.parameters(), lr=config.lr)
    online: list[Transitions] = []
    pool: Transitions | None = None
    frames, actions, rewards, curve = [], [], [], []
    obs, _ = env.reset(seed=seed)
    frames.append(obs)
    episode_return, episode, detections = 0.0, 0, 0
    start = time.perf_counter()
    for step in range(1, config.online_steps + 1):
        if rng.random() < config.epsilon:
            action = int(rng.integers(env.action_space.n))
        else:
            with torch.no_grad():
                action = int(q_net(torch.from_numpy(to_chw(obs[None]))).argmax())
        obs, reward, terminated, truncated, _ = env.step(action)
        episode_return += float(reward)  # reported only; learning uses the classifier
        frames.append(obs)
        actions.append(action)
        rewards.append(float(reward))
        if terminated or truncated:
            if reward_source == "env":
                labelled = env_reward_episode(
                    np.stack(frames), np.asarray(actions), np.asarray(rewards), config.gamma
                )
                detections += int(
                    (
                        label_episode(np.stack(frames), np.asarray(actions), classifier, config.gamma).reward
                    ).sum()
                )
            else:
                labelled = label_episode(
                    np.stack(frames), np.asarray(actions), classifier, config.gamma, terminated
                )
                detections += int(labelled.reward.sum())
            online.append(labelled)
            pool = Transitions.concat(online)
            curve.append((step, episode_return))
            episode += 1
            obs, _ = env.reset(seed=seed * 100_003 + episode)
            frames, actions, rewards, episode_return = [obs], [], [], 0.0
        _calql_update(q_net, target, optimizer, offline, pool, rng, config)
    env.close()
    seconds = time.perf_counter() - start
    tail = [r for _, r in curve[-20:]]
    return {
        "curve": curve,
        "final_train_return": float(np.mean(tail)) if tail else float("nan"),
        "success_detections": detections,
        "seconds": seconds,
    }


def reset_free_finetune(
    q_net: PixelPolicy,
    backward: PixelPolicy,
    classifier: nn.Module,
    initial_classifier: nn.Module,
    offline: Transitions | None,
    env_config: EnvConfig,
    config: RoboFuMEConfig,
    seed: int,
) -> dict[str, Any]:
    """RoboFuME's reset-free fine-tuning: the forward Q-network runs until ``classifier`` detects success, then
    the backward one until ``initial_classifier`` detects the initial-state distribution, and so on, with no
    reset; a phase that has not succeeded after ``phase_steps`` steps is an intervention (the environment is
    reset, as a person would), counted. Each phase is labelled by its own classifier and trains its own
    network by Cal-QL (the forward one on offline + online data, the backward one online only: there are no
    reset demonstrations). The environment's reward is read only to report the forward task's return."""
    if not env_config.env_id.startswith("MiniGrid"):
        raise ConfigError(
            f"--options.reset_free: {env_config.env_id} ends its episode at success; reset-free fine-tuning "
            f"needs an env that can be stepped on afterwards (MiniGrid-*)"
        )
    env = make_env(env_config, seed=seed)
    rng = np.random.default_rng(seed)
    nets = {"forward": q_net, "backward": backward}
    detectors = {"forward": classifier, "backward": initial_classifier}
    targets = {k: copy.deepcopy(v).requires_grad_(False) for k, v in nets.items()}
    optimizers = {k: torch.optim.Adam(v.parameters(), lr=config.lr) for k, v in nets.items()}
    online: dict[str, list[Transitions]] = {"forward": [], "backward": []}
    pools: dict[str, Transitions | None] = {"forward": None, "backward": None}
    successes = {"forward": 0, "backward": 0}
    obs, _ = env.reset(seed=seed)
    phase, frames, actions, phase_return = "forward", [obs], [], 0.0
    interventions, curve = 0, []
    start = time.perf_counter()
    for step in range(1, config.online_steps + 1):
        active, net = phase, nets[phase]
        if rng.random() < config.epsilon:
            action = int(rng.integers(env.action_space.n))
        else:
            with torch.no_grad():
                action = int(net(torch.from_numpy(to_chw(obs[None]))).argmax())
        obs, reward, _, _, _ = env.step(action)  # termination ignored: there is no reset to go to
        env.unwrapped.step_count = 0  # nor an episode clock: the phase budget is the only limit
        phase_return += float(reward)
        frames.append(obs)
        actions.append(action)
        detected = bool(success_prob(detectors[phase], obs[None])[0] > 0.5)
        if detected or len(actions) >= config.phase_steps:
            labelled = label_episode(np.stack(frames), np.asarray(actions), detectors[phase], config.gamma)
            online[phase].append(labelled)
            pools[phase] = Transitions.concat(online[phase])
            if phase == "forward":
                curve.append((step, min(phase_return, 1.0)))
            if detected:
                successes[phase] += 1
                phase = "backward" if phase == "forward" else "forward"
            else:
                interventions += 1
                obs, _ = env.reset(seed=seed * 100_003 + interventions)
                phase = "forward"
            frames, actions, phase_return = [obs], [], 0.0
        data = offline if active == "forward" else None
        _calql_update(net, targets[active], optimizers[active], data, pools[active], rng, config)
    env.close()
    tail = [r for _, r in curve[-20:]]
    return {
        "curve": curve,
        "final_train_return": float(np.mean(tail)) if tail else float("nan"),
        "success_detections": successes["forward"],
        "backward_successes": successes["backward"],
        "interventions": interventions,
        "seconds": time.perf_counter() - start,
    }


def run_robofume(
    corpus: Corpus,
    config: RoboFuMEConfig,
    engine: EngineConfig,
    env_config: EnvConfig | None = None,
    run_dir: Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Classifier -> (offline Cal-QL) -> online fine-tuning; returns metrics, the curve and the models.

    The classifier is trained in both arms (the scratch baseline gets the same learned reward); only the
    pretrained arm reads the demonstrations' actions.
    """
    if config.online_steps < 0 or not 0 <= config.epsilon <= 1:
        raise ConfigError(
            f"--options.online_steps {config.online_steps} / epsilon {config.epsilon}: out of range"
        )
    demos = corpus.labelled
    if not demos:
        raise DataError(
            f"{corpus.root / 'index.jsonl'} has no labelled episodes: RoboFuME needs demonstrations"
        )
    env_config = env_config or corpus.env_config
    n_held = min(int(round(len(demos) * config.heldout_fraction)), len(demos) - 1)
    train_eps, held_eps = demos[: len(demos) - n_held], demos[len(demos) - n_held :]
    shape = corpus.meta["frame_shape"]
    if config.reset_free and not env_config.env_id.startswith("MiniGrid"):
        raise ConfigError(
            f"--options.reset_free: {env_config.env_id} ends its episode at success; reset-free fine-tuning "
            f"needs an env that can be stepped on afterwards (MiniGrid-*)"
        )
    if config.reset_free and config.phase_steps < 1:
        raise ConfigError(f"--options.phase_steps {config.phase_steps}: must be >= 1")
    if config.reward_fallback not in ("env", "stop", "classifier"):
        raise ConfigError(
            f"--options.reward_fallback {config.reward_fallback!r}: use env, stop or classifier"
        )
    if config.initial_fallback not in ("resets", "stop", "classifier"):
        raise ConfigError(
            f"--options.initial_fallback {config.initial_fallback!r}: use resets, stop or classifier"
        )
    train = functools.partial(
        train_classifier,
        train_eps,
        held_eps,
        shape[0],
        engine,
        config.backbone,
        config.backbone_weights,
        config.backbone_config,
    )
    classifier, metrics = train()
    health = classifier_health(metrics, config.health_margin)
    metrics["classifier/healthy"] = float(health["healthy"])
    initial, initial_health, reset_free = None, None, config.reset_free
    if config.reset_free:  # the backward task's reward: the same checks, its own fallback
        initial, initial_metrics = train(positives="initial")
        metrics |= {k.replace("classifier/", "initial_classifier/"): v for k, v in initial_metrics.items()}
        initial_health = classifier_health(metrics, config.health_margin, "initial_classifier")
        metrics["initial_classifier/healthy"] = float(initial_health["healthy"])
        if not initial_health["healthy"]:
            if config.initial_fallback == "stop":
                raise DataError(
                    f"{corpus.root}: {initial_health['line']}: the backward task's reward would be noise; "
                    f"pass --options.initial_fallback resets to fine-tune with resets instead"
                )
            if config.initial_fallback == "resets":
                reset_free = False
                initial_health["line"] += "; fine-tuning with resets instead (no backward task)"
            else:
                initial_health["line"] += (
                    "; reset-free on its detections anyway (--options.initial_fallback classifier)"
                )
    metrics["reset_free/active"] = float(reset_free)
    reward_source = "classifier"
    if not health["healthy"] and reset_free and config.reward_fallback == "env":
        raise DataError(
            f"{corpus.root}: {health['line']}; reset-free fine-tuning has no environment reward to fall back "
            f"on (its backward task has none): record more successful demos, or pass --options.reward_fallback "
            f"classifier to keep the classifier's reward"
        )
    if not health["healthy"]:
        if config.reward_fallback == "stop":
            raise DataError(
                f"{corpus.root}: {health['line']}: its reward would be noise; record more successful demos, "
                f"or pass --options.reward_fallback env to learn from the environment's reward"
            )
        reward_source = config.reward_fallback
        health["line"] += (
            "; learning from the environment's reward instead"
            if reward_source == "env"
            else "; its reward is kept (--options.reward_fallback classifier)"
        )
    for part in (health, initial_health):
        if part is not None:
            log.warning(part["line"]) if not part["healthy"] else log.info(part["line"])
    torch.manual_seed(seed)
    q_net = PixelPolicy(corpus.n_actions, shape[0], shape[2], PolicyConfig())
    offline = None
    if config.pretrain:
        if reward_source == "env":
            missing = [e.name for e in demos if e.rewards is None]
            if missing:
                raise DataError(
                    f"{corpus.root / missing[0]}: no rewards recorded; the env-reward fallback needs them"
                )
            offline = Transitions.concat(
                [env_reward_episode(e.frames, e.actions, e.rewards, config.gamma) for e in demos]
            )
        else:
            offline = Transitions.concat(
                [label_episode(e.frames, e.actions, classifier, config.gamma) for e in demos]
            )
        metrics["offline/transitions"] = float(len(offline))
        metrics["offline/detected_successes"] = float(offline.reward.sum())
        task = _CalQLTask(q_net, config.gamma, config.alpha, config.tau)
        cfg = copy.deepcopy(engine)
        cfg.train.micro_batch_size = min(cfg.train.micro_batch_size, len(offline))
        cfg.optimizer.lr = config.lr
        Engine(cfg, None).fit(task, TransitionDataset(offline))
        q_net = q_net.cpu()
        metrics |= calibration(q_net, offline)
    q_net.eval()
    metrics["return/offline"] = greedy_return(q_net, env_config, config.eval_episodes, 10_000 + seed)
    online = {"curve": [], "success_detections": 0, "final_train_return": float("nan"), "seconds": 0.0}
    backward = None
    if reset_free:
        torch.manual_seed(seed + 1)
        backward = PixelPolicy(corpus.n_actions, shape[0], shape[2], PolicyConfig())
    if config.online_steps > 0:
        q_net.train()
        if backward is not None:
            assert initial is not None
            online = reset_free_finetune(
                q_net, backward, classifier, initial, offline, env_config, config, seed
            )
            metrics["reset_free/interventions"] = float(online["interventions"])
            metrics["reset_free/forward_successes"] = float(online["success_detections"])
            metrics["reset_free/backward_successes"] = float(online["backward_successes"])
        else:
            online = online_finetune(q_net, classifier, offline, env_config, config, seed, reward_source)
        q_net.eval()
    metrics["return/online"] = greedy_return(q_net, env_config, config.eval_episodes, 10_000 + seed)
    metrics["online/train_return"] = online["final_train_return"]
    metrics["online/success_detections"] = float(online["success_detections"])
    metrics["online/seconds"] = online["seconds"]
    if config.online_steps > 0 and online["success_detections"] == 0 and health["healthy"]:
        health["line"] = "success classifier never fired online: the learned reward was always 0"
        health["healthy"] = False
    if backward is not None and initial_health is not None and online.get("backward_successes", 1) == 0:
        initial_health["healthy"] = False
        initial_health["line"] = (
            "initial-state classifier never fired online: the backward task was never rewarded and every "
            "return to the start was an intervention"
        )
    health = combined_health(health, initial_health) | {
        "fine_tuning": "reset-free" if reset_free else "resets"
    }
    if run_dir is not None:
        env = corpus.meta["env"]
        if isinstance(classifier, PixelPolicy):
            save_model(
                classifier,
                Path(run_dir) / "classifier",
                "success-classifier",
                _spec(classifier, 1, shape, env),
            )
        else:  # the open_clip classifier: its own kind, reloads with ClipSuccessClassifier.from_pretrained
            classifier.hub_extra = {"env": env}
            classifier.save_pretrained(Path(run_dir) / "classifier")
        if backward is not None:
            save_model(
                backward.eval(),
                Path(run_dir) / "qnet-backward",
                "q-network",
                _spec(backward, corpus.n_actions, shape, env) | {"task": "backward (reset)"},
            )
        save_model(
            q_net,
            Path(run_dir) / "qnet",
            "q-network",
            _spec(q_net, corpus.n_actions, shape, env) | {"metrics": metrics},
        )
    return {
        "metrics": metrics,
        "curve": online["curve"],
        "q_net": q_net,
        "classifier": classifier,
        "health": health,
        "reward_source": reward_source,
    }


def _spec(model: PixelPolicy, n_out: int, shape: list[int], env: dict) -> dict:
    encoder = model.encoder
    config = PolicyConfig(
        EncoderConfig(
            [m.out_channels for m in encoder.conv if isinstance(m, nn.Conv2d)], encoder.features_dim
        )
    )
    return model_spec(config, n_out, shape, env)
