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

Left out: the VLM, the reset-free forward/backward policy pair (gymnasium resets the episode), language
task specification, image augmentation. Written by hand: SB3 has no offline or calibrated Q-learning.
"""

from __future__ import annotations

import copy
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
    """Items {"obs": (C, H, W), "label": ()}: 1 for the last frame of a successful episode, else 0."""

    def __init__(self, episodes: list[Episode]) -> None:
        frames, labels = [], []
        for episode in episodes:
            success = episode.rewards is not None and float(episode.rewards.sum()) > 0
            y = np.zeros(len(episode.frames), np.float32)
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
) -> tuple[nn.Module, dict[str, float]]:
    """The success classifier: a small CNN from scratch (``backbone = 'cnn'``) or an open_clip image tower
    (:mod:`warmstart_rl.clipreward`) fine-tuned from ``weights``; trained with the core engine."""
    train = SuccessFrames(train_eps)
    if train.labels.sum() == 0:
        raise DataError(
            "no successful demonstration (no episode with return > 0): no goal images to learn from"
        )
    held = SuccessFrames(held_eps) if held_eps else None
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


def classifier_health(metrics: dict[str, float], margin: float) -> dict[str, Any]:
    """{healthy, line}: does the success classifier fire on held-out successes, above chance?"""
    acc, tpr = (
        metrics.get("classifier/balanced_acc", float("nan")),
        metrics.get("classifier/tpr", float("nan")),
    )
    if not np.isfinite(tpr) or tpr == 0:
        return {"healthy": False, "line": "success classifier never fires on held-out goal frames (TPR 0)"}
    if not np.isfinite(acc) or acc < 0.5 + margin:
        return {
            "healthy": False,
            "line": f"success classifier at chance (balanced accuracy {acc:.3f}, needs >= {0.5 + margin:.2f})",
        }
    return {
        "healthy": True,
        "line": f"success classifier healthy (balanced accuracy {acc:.3f}, TPR {tpr:.2f})",
    }


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
    frames: np.ndarray, actions: np.ndarray, classifier: nn.Module, gamma: float
) -> Transitions:
    """Transitions of one episode with classifier rewards; cut at the first detected success.

    r_t = 1[p(success | o_{t+1}) > 0.5], done_t = r_t, mc_t = sum_k gamma^k r_{t+k} (Cal-QL's reference value).
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
    return Transitions(
        frames[:end], actions[:end].astype(np.int64), reward, frames[1 : end + 1], reward.copy(), mc
    )


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
    reward_fallback: str = "env"
    """An unhealthy classifier (never fires / at chance): 'env' learns from the environment's reward
    instead (and says so), 'stop' ends the run with one line, 'classifier' keeps its reward anyway."""


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
                labelled = label_episode(np.stack(frames), np.asarray(actions), classifier, config.gamma)
                detections += int(labelled.reward.sum())
            online.append(labelled)
            pool = Transitions.concat(online)
            curve.append((step, episode_return))
            episode += 1
            obs, _ = env.reset(seed=seed * 100_003 + episode)
            frames, actions, rewards, episode_return = [obs], [], [], 0.0
        if pool is None and offline is None:
            continue
        if offline is not None and pool is not None:
            half = config.batch_size // 2
            parts = [
                (offline, rng.integers(len(offline), size=half)),
                (pool, rng.integers(len(pool), size=half)),
            ]
        else:
            data = pool if pool is not None else offline
            parts = [(data, rng.integers(len(data), size=config.batch_size))]
        batches = [d.batch(i) for d, i in parts]
        batch = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
        loss, metrics = calql_loss(q_net, target, batch, config.gamma, config.alpha)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(q_net.parameters(), 10.0)
        optimizer.step()
        with torch.no_grad():
            for t, o in zip(target.parameters(), q_net.parameters(), strict=True):
                t.lerp_(o, config.tau)
    env.close()
    seconds = time.perf_counter() - start
    tail = [r for _, r in curve[-20:]]
    return {
        "curve": curve,
        "final_train_return": float(np.mean(tail)) if tail else float("nan"),
        "success_detections": detections,
        "seconds": seconds,
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
    if config.reward_fallback not in ("env", "stop", "classifier"):
        raise ConfigError(
            f"--options.reward_fallback {config.reward_fallback!r}: use env, stop or classifier"
        )
    classifier, metrics = train_classifier(
        train_eps,
        held_eps,
        shape[0],
        engine,
        config.backbone,
        config.backbone_weights,
        config.backbone_config,
    )
    health = classifier_health(metrics, config.health_margin)
    reward_source = "classifier"
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
    log.warning(health["line"]) if not health["healthy"] else log.info(health["line"])
    metrics["classifier/healthy"] = float(health["healthy"])
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
    q_net.eval()
    metrics["return/offline"] = greedy_return(q_net, env_config, config.eval_episodes, 10_000 + seed)
    online = {"curve": [], "success_detections": 0, "final_train_return": float("nan"), "seconds": 0.0}
    if config.online_steps > 0:
        q_net.train()
        online = online_finetune(q_net, classifier, offline, env_config, config, seed, reward_source)
        q_net.eval()
    metrics["return/online"] = greedy_return(q_net, env_config, config.eval_episodes, 10_000 + seed)
    metrics["online/train_return"] = online["final_train_return"]
    metrics["online/success_detections"] = float(online["success_detections"])
    metrics["online/seconds"] = online["seconds"]
    if config.online_steps > 0 and online["success_detections"] == 0 and health["healthy"]:
        health["line"] = "success classifier never fired online: the learned reward was always 0"
        health["healthy"] = False
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
