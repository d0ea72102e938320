"""L2M: a frozen pretrained policy modulated by LoRA-style modulators retrieved from a learnable key pool.

Seed: *Learning to Modulate pre-trained Models in RL* (Schmied et al., arXiv 2306.14884). There, a
multi-domain Decision Transformer is pretrained and then frozen; for every new task a *query* computed
from the embedded history retrieves modulators (LoRA weights) from a pool whose entries are addressed by
learnable keys, so tasks learned later do not overwrite what earlier ones use: no forgetting.

Implemented here, in miniature, on MiniGrid pixels (tasks differ by layout and by a permutation of the
three navigation actions, so they *conflict*: the same picture may need "left" in one task and "right" in
another):

- the backbone is the app's causal :class:`~warmstart_rl.models.PixelPolicy`, behaviour-cloned on task set
  A from scripted demonstrations, then frozen;
- :class:`PooledLoRALinear` wraps the encoder's projection and the action head: per sample,
  ``y = W x + b + (alpha / r) B_i A_i x`` with the modulator ``i`` selected for that sample, ``B_i``
  zero-initialised (a fresh modulator leaves the backbone's output unchanged);
- the query is the mean of the *frozen* backbone's features over the last ``history`` frames of the
  episode (L2M: the frozen model's embedded history); keys live in that space; retrieval is top-1 cosine
  similarity, and keys are pulled towards their queries by ``1 - cos(q, k)`` (L2M's key loss);
- tasks arrive in a sequence with known boundaries during training (the continual-learning setting of the
  paper); a new task retrieves among the modulators no earlier task has claimed, and after training it
  claims those it used; at test time retrieval is over all claimed keys and the task identity is *not*
  given, so routing is measured, not assumed.

The baseline is full fine-tuning of the same pretrained policy on the same sequence (every weight, fresh
Adam per task), which forgets. Written by hand rather than with ``peft``: peft's LoRA trains one adapter
at a time (its mixed-batch ``adapter_names`` is inference-only) and has no per-sample retrieval; the pool
is two small tensors per layer. Left out: the Decision Transformer backbone and return conditioning,
top-k > 1 mixing, (IA)^3 modulators, the paper's Meta-World/Atari/DMControl/Procgen domains.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from warmstart.errors import ConfigError
from warmstart_rl.data import EnvConfig, episode_returns, make_env, minigrid_expert_action, to_chw
from warmstart_rl.models import EncoderConfig, PixelPolicy, PolicyConfig

log = logging.getLogger(__name__)


# -- tasks ------------------------------------------------------------------------------------------
@dataclass
class TaskSpec:
    env_id: str
    """A MiniGrid id the scripted expert solves with left/right/forward."""
    permutation: list[int] = field(default_factory=lambda: [0, 1, 2])
    """The policy's action a is the environment's action permutation[a]."""

    @property
    def name(self) -> str:
        short = self.env_id.removeprefix("MiniGrid-").removesuffix("-v0")
        return short if self.permutation == [0, 1, 2] else f"{short}/{''.join(map(str, self.permutation))}"


def _check_tasks(tasks: list[TaskSpec], field_name: str) -> None:
    for task in tasks:
        if not task.env_id.startswith("MiniGrid"):
            raise ConfigError(
                f"--{field_name}: {task.env_id!r} has no scripted expert; L2M's tasks are MiniGrid-* ids"
            )
        if sorted(task.permutation) != [0, 1, 2]:
            raise ConfigError(
                f"--{field_name}: permutation {task.permutation} of {task.env_id} must be a permutation of "
                f"[0, 1, 2] (left, right, forward)"
            )


def permuted_env(task: TaskSpec, size: int, seed: int | None = None):
    """The task's pixel environment whose action a executes ``task.permutation[a]``."""
    import gymnasium as gym

    env = make_env(EnvConfig(env_id=task.env_id, size=size, actions=3), seed=seed)
    perm = list(task.permutation)

    class _Permuted(gym.ActionWrapper):
        def action(self, action: Any) -> int:
            return perm[int(action)]

    return _Permuted(env)


@dataclass
class Demos:
    """Frames (N, 3, H, W) float, expert labels in the policy's action space (N,), history index (N, K),
    episode number (N,)."""

    obs: torch.Tensor
    labels: torch.Tensor
    history: torch.Tensor
    episode: torch.Tensor


def record_demos(task: TaskSpec, size: int, episodes: int, noise: float, history: int, seed: int) -> Demos:
    """Noisy-expert rollouts; every visited state is labelled with the noise-free expert action (DAgger-style
    labels, so held-out accuracy measures the policy against the expert, not against the noise)."""
    env = make_env(EnvConfig(env_id=task.env_id, size=size, actions=3))
    rng = np.random.default_rng(seed)
    frames, labels, hist, episode = [], [], [], []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed * 10_007 + ep)
        start, done = len(frames), False
        while not done:
            expert = minigrid_expert_action(env)
            t = len(frames) - start
            frames.append(obs)
            labels.append(task.permutation.index(expert))
            hist.append([start + max(0, t - k) for k in reversed(range(history))])
            episode.append(ep)
            action = int(rng.integers(3)) if rng.random() < noise else expert
            obs, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
    env.close()
    return Demos(
        torch.from_numpy(to_chw(np.stack(frames))),
        torch.tensor(labels, dtype=torch.long),
        torch.tensor(hist, dtype=torch.long),
        torch.tensor(episode, dtype=torch.long),
    )


# -- the modulator pool -----------------------------------------------------------------------------
class PooledLoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a pool of LoRA modulators, one selected per sample.

    ``forward(x (N, in), slot (N,)) -> (N, out)``: ``W x + b + (alpha / r) B[slot] A[slot] x``. Each slot's
    ``A``/``B`` is its own parameter, so a slot can be frozen (``requires_grad_(False)``) once claimed.
    """

    def __init__(self, base: nn.Linear, pool: int, rank: int, alpha: float, generator: torch.Generator):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.scale = alpha / rank
        self.lora_a = nn.ParameterList(
            nn.Parameter(torch.randn(rank, base.in_features, generator=generator) / base.in_features**0.5)
            for _ in range(pool)
        )
        self.lora_b = nn.ParameterList(
            nn.Parameter(torch.zeros(base.out_features, rank)) for _ in range(pool)
        )

    def forward(self, x: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
        a = torch.stack(list(self.lora_a))[slot]  # (N, r, in)
        b = torch.stack(list(self.lora_b))[slot]  # (N, out, r)
        delta = torch.bmm(b, torch.bmm(a, x.unsqueeze(-1))).squeeze(-1)  # (N, out)
        return self.base(x) + self.scale * delta

    def slot_parameters(self, slot: int) -> list[nn.Parameter]:
        return [self.lora_a[slot], self.lora_b[slot]]


class L2MPolicy(nn.Module):
    """Frozen :class:`PixelPolicy` + key pool + pooled LoRA on the encoder projection and the action head."""

    def __init__(self, backbone: PixelPolicy, pool: int, rank: int, alpha: float, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.backbone = copy.deepcopy(backbone).requires_grad_(False).eval()
        proj = self.backbone.encoder.proj[0]
        self.proj = PooledLoRALinear(proj, pool, rank, alpha, generator)
        self.head = PooledLoRALinear(self.backbone.head, pool, rank, alpha, generator)
        qdim = proj.in_features  # queries live in the frozen conv-feature space
        self.keys = nn.ParameterList(
            nn.Parameter(torch.randn(qdim, generator=generator) * 0.1) for _ in range(pool)
        )
        self.register_buffer("query_center", torch.zeros(qdim))  # set from task set A after pretraining
        self.pool = pool
        self.owner = [-1] * pool  # task index that claimed each slot (-1: free)

    @torch.no_grad()
    def frozen_features(self, obs: torch.Tensor, batch: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
        """obs (N, 3, H, W) -> the frozen backbone's conv features (N, C) and the query embedding (N, C):
        the same features centred by their mean over task set A (post-ReLU features all point into the
        positive orthant, which makes raw cosine similarities nearly equal)."""
        convs = torch.cat([self.backbone.encoder.conv(obs[i : i + batch]) for i in range(0, len(obs), batch)])
        return convs, convs - self.query_center

    def similarity(self, query: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of queries (N, D) to every key: (N, M)."""
        return F.normalize(query, dim=-1) @ F.normalize(torch.stack(list(self.keys)), dim=-1).T

    def retrieve(self, query: torch.Tensor, allowed: list[int]) -> torch.Tensor:
        """Top-1 slot among ``allowed`` for each query (N, D) -> (N,)."""
        if not allowed:
            raise ConfigError("the modulator pool is exhausted: raise --setup.pool")
        sim = self.similarity(query)[:, allowed]  # (N, |allowed|)
        return torch.tensor(allowed, device=query.device)[sim.argmax(-1)]

    def logits_from(self, convs: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
        """Conv features (N, C) and slots (N,) -> action logits (N, A)."""
        return self.head(F.relu(self.proj(convs, slot)), slot)

    def claimed(self) -> list[int]:
        return [i for i, owner in enumerate(self.owner) if owner >= 0]

    def free(self) -> list[int]:
        return [i for i, owner in enumerate(self.owner) if owner < 0]

    def claim(self, slots: list[int], task: int) -> None:
        """Give ``slots`` to ``task`` and freeze their modulators and keys for good."""
        for slot in slots:
            self.owner[slot] = task
            self.keys[slot].requires_grad_(False)
            for layer in (self.proj, self.head):
                for p in layer.slot_parameters(slot):
                    p.requires_grad_(False)


def history_query(features: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """Mean of frozen features (N, D) over each sample's history indices (N, K) -> (N, D)."""
    return features[history].mean(1)


# -- training -----------------------------------------------------------------------------------------
@dataclass
class L2MConfig:
    size: int = 27
    """Pixel observation side (27: 3+ pixels per MiniGrid tile up to 9x9 grids)."""
    pretrain_tasks: list[TaskSpec] = field(
        default_factory=lambda: [TaskSpec("MiniGrid-Empty-Random-5x5-v0"), TaskSpec("MiniGrid-Empty-8x8-v0")]
    )
    """Task set A: the backbone is behaviour-cloned on these jointly, then frozen."""
    new_tasks: list[TaskSpec] = field(
        default_factory=lambda: [
            TaskSpec("MiniGrid-Empty-Random-6x6-v0", [1, 0, 2]),
            TaskSpec("MiniGrid-SimpleCrossingS9N1-v0", [2, 1, 0]),
        ]
    )
    """Tasks learned one after another after pretraining (permuted actions: they conflict with A)."""
    episodes: int = 40
    """Demonstration episodes per task (training); a further quarter is held out."""
    noise: float = 0.2
    """Probability of a random action in the recorded rollouts (labels stay the expert's)."""
    history: int = 4
    """Frames of episode history averaged into the query."""
    pool: int = 8
    """Modulators (and keys) in the pool."""
    slots_per_task: int = 1
    """Modulators a task may use (per-sample retrieval among them while it trains)."""
    rank: int = 4
    """LoRA rank of every modulator."""
    alpha: float = 8.0
    """LoRA scale numerator (the update is alpha / rank * B A x)."""
    key_coef: float = 0.5
    """Weight of the key-query loss 1 - cos(q, k)."""
    pretrain_steps: int = 400
    """BC steps on task set A."""
    task_steps: int = 200
    """Training steps per task in the sequence (both arms)."""
    batch_size: int = 64
    """Samples per step."""
    lr: float = 1e-3
    """Adam learning rate (BC, modulators, full fine-tuning)."""
    eval_episodes: int = 5
    """Greedy episodes per task for the return figure (0: skip)."""


def _adam_steps(
    model: nn.Module,
    params: list[nn.Parameter],
    loss_fn: Any,
    n: int,
    steps: int,
    batch: int,
    lr: float,
    generator: torch.Generator,
) -> float:
    """Adam (the core's AdamW without decay) on random minibatches of ``n`` samples through the core's
    in-process loop (:func:`warmstart.engine.light_fit`: NaN/inf guard, no clipping here, CPU);
    ``loss_fn(idx) -> loss``; returns the last loss."""
    from warmstart.engine import light_fit

    if steps < 1:
        return float("nan")
    batches = (torch.randint(n, (min(batch, n),), generator=generator) for _ in range(steps))
    losses = light_fit(
        model,
        loss_fn,
        batches,
        steps=steps,
        lr=lr,
        params=params,
        grad_clip_norm=None,
        seed=None,
        device="cpu",
    )
    return losses[-1]


def bc_train(
    policy: PixelPolicy, demos: Demos, steps: int, batch: int, lr: float, generator: torch.Generator
) -> float:
    """Behaviour cloning of every weight of ``policy`` (pretraining on A; the full fine-tuning arm)."""
    policy.train()

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(policy(demos.obs[idx]), demos.labels[idx])

    out = _adam_steps(
        policy, list(policy.parameters()), loss_fn, len(demos.labels), steps, batch, lr, generator
    )
    policy.eval()
    return out


def l2m_learn_task(
    model: L2MPolicy, demos: Demos, task: int, config: L2MConfig, generator: torch.Generator
) -> dict[str, float]:
    """Learn task ``task`` with the pool: the ``slots_per_task`` free keys nearest to the task's queries are
    reserved for it, each sample retrieves its top-1 among them; CE + key loss; then the task claims them."""
    convs, feats = model.frozen_features(demos.obs)
    query = history_query(feats, demos.history)  # (N, C)
    free = model.free()
    if len(free) < config.slots_per_task:
        raise ConfigError(f"the modulator pool is exhausted at task {task}: raise --setup.pool")
    affinity = model.similarity(query).mean(0)[free]  # (|free|,)
    reserved = [free[int(i)] for i in affinity.argsort(descending=True)[: config.slots_per_task]]
    params = [model.keys[i] for i in reserved]
    params += [p for layer in (model.proj, model.head) for i in reserved for p in layer.slot_parameters(i)]

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        q = query[idx]
        slot = model.retrieve(q, reserved)
        logits = model.logits_from(convs[idx], slot)
        key_loss = 1.0 - model.similarity(q)[torch.arange(len(idx)), slot]
        return F.cross_entropy(logits, demos.labels[idx]) + config.key_coef * key_loss.mean()

    loss = _adam_steps(
        model, params, loss_fn, len(demos.labels), config.task_steps, config.batch_size, config.lr, generator
    )
    model.claim(reserved, task)
    return {"loss": loss, "slots": float(len(reserved))}


@torch.no_grad()
def l2m_predict(model: L2MPolicy, demos: Demos) -> tuple[torch.Tensor, torch.Tensor]:
    """Task-agnostic inference: retrieval over every claimed key -> (actions (N,), slots (N,))."""
    convs, feats = model.frozen_features(demos.obs)
    slot = model.retrieve(history_query(feats, demos.history), model.claimed())
    return model.logits_from(convs, slot).argmax(-1), slot


@torch.no_grad()
def accuracy(policy: PixelPolicy | L2MPolicy, demos: Demos) -> float:
    if isinstance(policy, L2MPolicy):
        pred = l2m_predict(policy, demos)[0]
    else:
        pred = torch.cat([policy(demos.obs[i : i + 512]).argmax(-1) for i in range(0, len(demos.obs), 512)])
    return float((pred == demos.labels).float().mean())


@torch.no_grad()
def task_return(
    policy: PixelPolicy | L2MPolicy, task: TaskSpec, size: int, history: int, episodes: int, seed: int
) -> float:
    """Mean return of the greedy policy in the (permuted) task; L2M retrieves from its running history."""
    env = permuted_env(task, size)
    recent: deque[torch.Tensor] = deque(maxlen=history)

    def act(obs: np.ndarray) -> int:
        x = torch.from_numpy(to_chw(obs[None]))
        if not isinstance(policy, L2MPolicy):
            return int(policy(x).argmax(-1))
        convs, feats = policy.frozen_features(x)
        recent.append(feats[0])
        while len(recent) < history:  # the demos' history repeats the first frame likewise
            recent.appendleft(feats[0])
        slot = policy.retrieve(torch.stack(list(recent)).mean(0, keepdim=True), policy.claimed())
        return int(policy.logits_from(convs, slot).argmax(-1))

    try:
        return float(np.mean(episode_returns(act, env, episodes, seed, on_reset=recent.clear)))
    finally:
        env.close()


def _concat(parts: list[Demos]) -> Demos:
    offsets = np.cumsum([0] + [len(p.labels) for p in parts[:-1]])
    return Demos(
        torch.cat([p.obs for p in parts]),
        torch.cat([p.labels for p in parts]),
        torch.cat([p.history + int(o) for p, o in zip(parts, offsets, strict=True)]),
        torch.cat([p.episode for p in parts]),
    )


def run_l2m(config: L2MConfig, seed: int = 0) -> dict[str, Any]:
    """Pretrain on A, then learn the new tasks in sequence with L2M and with full fine-tuning.

    Returns {tasks, accuracy: {arm: [per task, final]}, matrix: {arm: [[acc on task j after stage i]]},
    returns: {arm: [per task]}, routing (share of held-out samples routed to a slot of their own task),
    seconds}. The sequence is A's tasks (their modulators start at the pretrained policy) then the new ones.
    """
    _check_tasks(config.pretrain_tasks, "setup.pretrain_tasks")
    _check_tasks(config.new_tasks, "setup.new_tasks")
    if config.pool < config.slots_per_task * (len(config.pretrain_tasks) + len(config.new_tasks)):
        raise ConfigError(
            f"--setup.pool {config.pool} is smaller than slots_per_task x tasks "
            f"({config.slots_per_task} x {len(config.pretrain_tasks) + len(config.new_tasks)})"
        )
    start = time.perf_counter()
    tasks = config.pretrain_tasks + config.new_tasks
    n_held = max(1, config.episodes // 4)
    train, held = [], []
    for i, task in enumerate(tasks):
        demos = record_demos(task, config.size, config.episodes + n_held, config.noise, config.history, 0)
        train_part, held_part = _split_episodes(demos, config.episodes)
        train.append(train_part)
        held.append(held_part)
        log.info(
            "task %d %s: %d train / %d held-out samples",
            i,
            task.name,
            len(train_part.labels),
            len(held_part.labels),
        )
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    backbone = PixelPolicy(3, config.size, 3, PolicyConfig(EncoderConfig()))
    pre_loss = bc_train(
        backbone,
        _concat(train[: len(config.pretrain_tasks)]),
        config.pretrain_steps,
        config.batch_size,
        config.lr,
        generator,
    )
    pretrained_acc = [accuracy(backbone, h) for h in held]
    l2m = L2MPolicy(backbone, config.pool, config.rank, config.alpha, seed)
    l2m.query_center.copy_(l2m.frozen_features(_concat(train[: len(config.pretrain_tasks)]).obs)[0].mean(0))
    full = copy.deepcopy(backbone)
    matrix: dict[str, list[list[float]]] = {"full fine-tuning": [], "l2m": []}
    for i, demos in enumerate(train):
        bc_train(full, demos, config.task_steps, config.batch_size, config.lr, generator)
        l2m_learn_task(l2m, demos, i, config, generator)
        matrix["full fine-tuning"].append([accuracy(full, h) for h in held[: i + 1]])
        matrix["l2m"].append([accuracy(l2m, h) for h in held[: i + 1]])
    routing = []
    for i, h in enumerate(held):
        slot = l2m_predict(l2m, h)[1]
        routing.append(float(np.mean([l2m.owner[int(s)] == i for s in slot])))
    arms = {"pretrained (frozen)": backbone, "full fine-tuning": full, "l2m": l2m}
    result: dict[str, Any] = {
        "tasks": [t.name for t in tasks],
        "n_pretrain": len(config.pretrain_tasks),
        "accuracy": {
            "pretrained (frozen)": pretrained_acc,
            "full fine-tuning": matrix["full fine-tuning"][-1],
            "l2m": matrix["l2m"][-1],
        },
        "matrix": matrix,
        "routing": routing,
        "pretrain_loss": pre_loss,
        "slots_used": len(l2m.claimed()),
    }
    if config.eval_episodes > 0:
        result["returns"] = {
            arm: [
                task_return(policy, t, config.size, config.history, config.eval_episodes, 1_000 + 97 * seed)
                for t in tasks
            ]
            for arm, policy in arms.items()
        }
    result["seconds"] = time.perf_counter() - start
    result["models"] = arms
    return result


def _split_episodes(demos: Demos, n_train_episodes: int) -> tuple[Demos, Demos]:
    """Split by episode: the first ``n_train_episodes`` episodes train, the rest are held out."""
    cut = int((demos.episode < n_train_episodes).sum())  # episodes are recorded in order
    first = Demos(demos.obs[:cut], demos.labels[:cut], demos.history[:cut], demos.episode[:cut])
    second = Demos(demos.obs[cut:], demos.labels[cut:], demos.history[cut:] - cut, demos.episode[cut:])
    return first, second


def forgetting(matrix: list[list[float]]) -> float:
    """Average forgetting after the last stage, the core's one definition (Chaudhry et al. 2018, Eq. 4:
    mean over earlier tasks j of max_{l<k} a[l, j] - a[k, j]); ``matrix[l][j]``: accuracy on j after stage l."""
    from warmstart.eval.forgetting import forgetting as average_forgetting

    n = len(matrix)
    if n < 2:
        return 0.0
    full = np.full((n, n), -np.inf)  # a task not yet learned was not scored: it never is the "best earlier"
    for stage, row in enumerate(matrix):
        full[stage, : len(row)] = row
    return average_forgetting(full)


def run_l2m_bench(config: L2MConfig, seeds: int, out: Any) -> Any:
    """``seeds`` runs of :func:`run_l2m`; report.md + plot.png + results.json (+ matrices.json) in ``out``."""
    import json
    from pathlib import Path

    from warmstart.eval import write_bench_report

    arms = ("pretrained (frozen)", "full fine-tuning", "l2m")
    mean_acc: dict[str, list[float]] = {a: [] for a in arms}
    on_a: dict[str, list[float]] = {a: [] for a in arms}
    on_new: dict[str, list[float]] = {a: [] for a in arms}
    returns: dict[str, list[float]] = {a: [] for a in arms}
    forget: dict[str, list[float]] = {a: [] for a in arms[1:]}
    routing: list[float] = []
    per_seed = []
    start = time.perf_counter()
    for seed in range(seeds):
        result = run_l2m(config, seed)
        result.pop("models")
        per_seed.append(result)
        n_a = result["n_pretrain"]
        for arm in arms:
            acc = result["accuracy"][arm]
            mean_acc[arm].append(float(np.mean(acc)))
            on_a[arm].append(float(np.mean(acc[:n_a])))
            on_new[arm].append(float(np.mean(acc[n_a:])))
            if "returns" in result:
                returns[arm].append(float(np.mean(result["returns"][arm])))
        for arm in arms[1:]:
            forget[arm].append(forgetting(result["matrix"][arm]))
        routing.append(float(np.mean(result["routing"])))
        log.info("seed %d: %s", seed, {a: round(mean_acc[a][-1], 3) for a in arms})
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "matrices.json").write_text(json.dumps(per_seed, indent=1))
    tasks = per_seed[0]["tasks"]
    n_a = per_seed[0]["n_pretrain"]
    extra: dict[str, dict[str, list[float]]] = {
        "accuracy on task set A after the sequence": on_a,
        "accuracy on the new tasks": on_new,
        "forgetting (Chaudhry et al. 2018: best earlier - final accuracy)": forget,
        "held-out samples routed to their task's modulator": {"l2m": routing},
    }
    if config.eval_episodes > 0:
        extra["greedy return (mean over tasks)"] = returns
    description = (
        f"Task set A (pretraining, BC {config.pretrain_steps} steps from scripted demos): "
        f"{', '.join(tasks[:n_a])}; then the sequence {', '.join(tasks)} (A's tasks first, '/perm' = permuted "
        f"actions, so the new tasks conflict with A), {config.task_steps} steps per task, {config.episodes} "
        f"noisy-expert episodes per task ({config.noise:.0%} random actions, expert labels), {config.size}px "
        f"RGB. Arms: the pretrained policy unchanged; full fine-tuning of every weight on each task in turn; "
        f"L2M: frozen backbone, pool of {config.pool} rank-{config.rank} LoRA modulators on the encoder "
        f"projection and the head, retrieved per sample by a query from the last {config.history} frames. "
        f"Metric: held-out action accuracy against the expert after the whole sequence, mean over all tasks; "
        f"the task identity is not given at test time (L2M routes by its keys). Wall time "
        f"{time.perf_counter() - start:.0f} s."
    )
    return write_bench_report(
        out,
        "rl: L2M (frozen policy + modulator pool) vs full fine-tuning on a task sequence",
        mean_acc,
        metric="held-out action accuracy, all tasks, after the sequence",
        higher_is_better=True,
        baseline="full fine-tuning",
        extra_metrics=extra,
        description=description,
        config={
            "seeds": seeds,
            **{k: v for k, v in config.__dict__.items() if k not in ("pretrain_tasks", "new_tasks")},
            "tasks": tasks,
        },
    )
