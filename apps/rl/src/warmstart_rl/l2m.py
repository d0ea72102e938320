"""L2M: a frozen pretrained Decision Transformer modulated by LoRA modulators retrieved from a learnable key pool.

Seed: *Learning to Modulate pre-trained Models in RL* (Schmied et al., arXiv 2306.14884). A multi-task
Decision Transformer is pretrained on offline data and frozen; for every new task a *query* computed from
the embedded input history retrieves a modulator (LoRA weights on the queries, values and MLP of every
layer) from a pool whose entries are addressed by learnable keys, so tasks learned later do not overwrite
what earlier ones use.

Implemented here, in miniature, on MiniGrid's symbolic 7x7 view (tasks differ by layout and by a permutation
of the three navigation actions, so they *conflict*: the same view may need "left" in one task and "right"
in another):

- the backbone is transformers' :class:`~transformers.DecisionTransformerModel` (GPT-2 blocks over
  (return-to-go, state, action) tokens, causal), pretrained jointly on task set A from noisy scripted
  rollouts and cached as an artifact by the hash of its config, data recipe and code (``warmstart.cache``,
  kind ``rl.l2m-dt``; saved with ``save_pretrained``), then frozen;
- :class:`PooledLoRA` wraps the fused ``c_attn`` (LoRA on its query and value columns, not the keys), the
  MLP's ``c_fc`` and ``c_proj`` in every block: per sample ``y = W x + b + (alpha / r) B_i A_i x`` with
  the modulator ``i`` selected for that sample; rank 4, alpha = 2 r, ``A`` Kaiming-uniform, ``B`` zero
  (a fresh modulator leaves the backbone unchanged);
- the query is the mean of the frozen model's state and action embeddings over the context window (the
  "embedded history"; the current action, unknown at acting time, is left out), centred by its mean on A;
  retrieval is top-1 cosine similarity to the keys, and the selected key is pulled towards its query by
  ``1 - cos(q, k)``;
- tasks arrive in sequence with known boundaries during training (the continual-learning setting of the
  paper): a task reserves the free key nearest to its queries, trains it, then claims and freezes it; at
  test time retrieval runs over every claimed key and no task id is given, so routing is measured.

Compared with (same pretrained DT, same sequence, same steps per task): full fine-tuning of every weight
(fresh Adam per task) and a single shared LoRA modulator trained on each task in turn; forgetting is the
core's one definition (:func:`warmstart.eval.forgetting.forgetting`, Chaudhry et al. 2018). The pool is
written by hand rather than with ``peft``: peft trains one adapter at a time (its mixed-batch
``adapter_names`` is inference-only) and has no per-sample retrieval. Left out: top-k > 1 mixing,
(IA)^3 modulators, the paper's Meta-World / DMControl / Atari / Procgen domains and its scale.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from warmstart.errors import ConfigError

log = logging.getLogger(__name__)

STATE_SCALE = np.array([10.0, 5.0, 3.0], np.float32)  # MiniGrid's (object, colour, state) index ranges
N_ACTIONS = 3  # left, right, forward


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


def symbolic_state(obs: np.ndarray) -> np.ndarray:
    """MiniGrid's egocentric (7, 7, 3) object/colour/state view -> a (147,) float vector in [0, 1]."""
    return (np.asarray(obs, np.float32) / STATE_SCALE).reshape(-1)


def task_env(task: TaskSpec, max_steps: int, seed: int | None = None):
    """The task's environment: symbolic observations, the policy's action a executes ``permutation[a]``,
    episodes cut after ``max_steps`` steps."""
    import gymnasium as gym
    from gymnasium.wrappers import TimeLimit
    from minigrid.wrappers import ImgObsWrapper

    from warmstart_rl.data import _register_all

    _register_all()
    perm = list(task.permutation)

    class _Permuted(gym.ActionWrapper):
        def action(self, action: Any) -> int:
            return perm[int(action)]

    env = TimeLimit(_Permuted(ImgObsWrapper(gym.make(task.env_id))), max_steps)
    if seed is not None:
        env.reset(seed=seed)
    return env


@dataclass
class Trajectories:
    """Every step of a task's episodes, in order: states (N, S), executed actions (N,) and expert labels
    (N,) in the policy's action space, return-to-go (N,), timestep (N,), episode (N,); ``window`` (N, K)
    holds the indices of each step's context (the last K steps of its episode, -1 left of the start)."""

    states: torch.Tensor
    actions: torch.Tensor
    labels: torch.Tensor
    rtg: torch.Tensor
    timestep: torch.Tensor
    episode: torch.Tensor
    window: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def _windows(timestep: np.ndarray, context: int) -> np.ndarray:
    """Indices (N, K) of the last ``context`` steps of each step's episode (-1 before its start)."""
    idx = np.arange(len(timestep))[:, None] - np.arange(context - 1, -1, -1)[None, :]  # (N, K)
    return np.where(np.arange(context - 1, -1, -1)[None, :] <= timestep[:, None], idx, -1)


def record_trajectories(
    task: TaskSpec, episodes: int, noise: float, context: int, max_steps: int, seed: int
) -> Trajectories:
    """Noisy-expert rollouts; every visited state is labelled with the noise-free expert action (DAgger-style
    labels: held-out accuracy measures the policy against the expert, not against the noise), while the
    action tokens of the history are the actions actually executed."""
    from warmstart_rl.data import minigrid_expert_action

    env = task_env(task, max_steps)
    rng = np.random.default_rng(seed)
    states, actions, labels, rtg, steps, episode = [], [], [], [], [], []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed * 10_007 + ep)
        start, done, total = len(states), False, 0.0
        while not done:
            expert = task.permutation.index(minigrid_expert_action(env))  # policy space
            action = int(rng.integers(N_ACTIONS)) if rng.random() < noise else expert
            states.append(symbolic_state(obs))
            labels.append(expert)
            actions.append(action)
            steps.append(len(states) - 1 - start)
            episode.append(ep)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            rtg.append(-float(reward))  # turned into returns-to-go below
            done = terminated or truncated
        rewards = -np.asarray(rtg[start:], np.float32)
        rtg[start:] = list(np.cumsum(rewards[::-1])[::-1])
    env.close()
    timestep = np.asarray(steps)
    return Trajectories(
        torch.from_numpy(np.stack(states)),
        torch.tensor(actions, dtype=torch.long),
        torch.tensor(labels, dtype=torch.long),
        torch.tensor(rtg, dtype=torch.float32),
        torch.from_numpy(timestep).long(),
        torch.tensor(episode, dtype=torch.long),
        torch.from_numpy(_windows(timestep, context)).long(),
    )


def window_batch(data: Trajectories, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """The Decision Transformer's inputs for the windows ending at steps ``idx`` (B,): states (B, K, S),
    one-hot actions (B, K, A), returns-to-go (B, K, 1), timesteps (B, K), attention mask (B, K), labels
    (B, K) (-100 left of the episode start)."""
    win = data.window[idx]  # (B, K)
    mask = win >= 0
    safe = win.clamp(min=0)
    states = data.states[safe] * mask[..., None]
    actions = F.one_hot(data.actions[safe], N_ACTIONS).float() * mask[..., None]
    return {
        "states": states,
        "actions": actions,
        "returns_to_go": (data.rtg[safe] * mask)[..., None],
        "timesteps": data.timestep[safe] * mask,
        "attention_mask": mask.long(),
        "labels": torch.where(mask, data.labels[safe], -100),
    }


def _concat(parts: list[Trajectories]) -> Trajectories:
    offsets = np.cumsum([0] + [len(p) for p in parts[:-1]])
    shifted = [torch.where(p.window >= 0, p.window + int(o), -1) for p, o in zip(parts, offsets, strict=True)]
    return Trajectories(
        torch.cat([p.states for p in parts]),
        torch.cat([p.actions for p in parts]),
        torch.cat([p.labels for p in parts]),
        torch.cat([p.rtg for p in parts]),
        torch.cat([p.timestep for p in parts]),
        torch.cat([p.episode for p in parts]),
        torch.cat(shifted),
    )


def _split_episodes(data: Trajectories, n_train_episodes: int) -> tuple[Trajectories, Trajectories]:
    """The first ``n_train_episodes`` episodes train, the rest are held out (episodes are in order)."""
    cut = int((data.episode < n_train_episodes).sum())

    def part(sl: slice, shift: int) -> Trajectories:
        win = data.window[sl]
        return Trajectories(
            data.states[sl],
            data.actions[sl],
            data.labels[sl],
            data.rtg[sl],
            data.timestep[sl],
            data.episode[sl],
            torch.where(win >= 0, win - shift, -1),
        )

    return part(slice(0, cut), 0), part(slice(cut, None), cut)


# -- the backbone -----------------------------------------------------------------------------------
@dataclass
class DTConfig:
    hidden: int = 64
    """Width of the GPT-2 blocks."""
    layers: int = 2
    """GPT-2 blocks."""
    heads: int = 2
    """Attention heads."""
    dropout: float = 0.1
    """Residual, embedding and attention dropout (the DT paper's 0.1)."""


def build_dt(config: DTConfig, context: int, max_steps: int):
    """A transformers ``DecisionTransformerModel`` for the symbolic MiniGrid view and 3 discrete actions
    (``action_tanh`` off: the action head's outputs are logits)."""
    from transformers import DecisionTransformerConfig, DecisionTransformerModel

    hf = DecisionTransformerConfig(
        state_dim=147,
        act_dim=N_ACTIONS,
        hidden_size=config.hidden,
        n_layer=config.layers,
        n_head=config.heads,
        n_inner=4 * config.hidden,
        max_ep_len=max_steps + 1,
        n_positions=3 * context,
        action_tanh=False,
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
    )
    return DecisionTransformerModel(hf)


def dt_logits(dt: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Action logits (B, K, A) at every state token of the windows."""
    out = dt(
        states=batch["states"],
        actions=batch["actions"],
        returns_to_go=batch["returns_to_go"],
        timesteps=batch["timesteps"],
        attention_mask=batch["attention_mask"],
        return_dict=True,
    )
    return out.action_preds


def _window_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


# -- the modulator pool -----------------------------------------------------------------------------
class PooledLoRA(nn.Module):
    """A frozen ``nn.Linear`` or transformers ``Conv1D`` plus a pool of LoRA modulators, one per sample.

    With ``self.slot`` (B,) set, ``forward(x (B, L, in)) = base(x) + (alpha / r) B[slot] A[slot] x`` on the
    output ``columns`` (default all; the fused ``c_attn``: the query and value thirds). ``slot = None``: the
    base alone. Each slot's ``A``/``B`` is its own parameter, so a slot can be frozen once claimed.
    """

    def __init__(
        self,
        base: nn.Module,
        pool: int,
        rank: int,
        alpha: float,
        generator: torch.Generator,
        columns: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        weight = base.weight
        in_features, out_features = (
            (weight.shape[1], weight.shape[0]) if isinstance(base, nn.Linear) else tuple(weight.shape)
        )
        self.register_buffer("columns", columns if columns is not None else torch.arange(out_features))
        self.scale = alpha / rank
        bound = 1 / math.sqrt(in_features)  # kaiming_uniform_(a=sqrt(5)), as nn.Linear and peft's LoRA A
        self.lora_a = nn.ParameterList(
            nn.Parameter((torch.rand(rank, in_features, generator=generator) * 2 - 1) * bound)
            for _ in range(pool)
        )
        self.lora_b = nn.ParameterList(
            nn.Parameter(torch.zeros(len(self.columns), rank)) for _ in range(pool)
        )
        self.slot: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.slot is None:
            return y
        first = int(self.slot[0])
        if bool((self.slot == first).all()):  # one modulator for the whole batch (training a task)
            delta = (x @ self.lora_a[first].T) @ self.lora_b[first].T * self.scale
            return y.index_add(-1, self.columns, delta.to(y.dtype))
        a = torch.stack(list(self.lora_a))[self.slot]  # (B, r, in)
        b = torch.stack(list(self.lora_b))[self.slot]  # (B, out', r)
        delta = torch.einsum("blr,bor->blo", torch.einsum("bli,bri->blr", x, a), b) * self.scale
        return y.index_add(-1, self.columns, delta.to(y.dtype))

    def slot_parameters(self, slot: int) -> list[nn.Parameter]:
        return [self.lora_a[slot], self.lora_b[slot]]


class ModulatedDT(nn.Module):
    """A frozen Decision Transformer, :class:`PooledLoRA` on the queries/values and MLP of every block, and
    one learnable key per modulator."""

    def __init__(self, dt: nn.Module, pool: int, rank: int, alpha: float, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.dt = copy.deepcopy(dt).requires_grad_(False)
        hidden = self.dt.config.hidden_size
        qv = torch.cat([torch.arange(hidden), torch.arange(2 * hidden, 3 * hidden)])
        self.layers: list[PooledLoRA] = []
        for block in self.dt.encoder.h:
            block.attn.c_attn = PooledLoRA(block.attn.c_attn, pool, rank, alpha, generator, qv)
            block.mlp.c_fc = PooledLoRA(block.mlp.c_fc, pool, rank, alpha, generator)
            block.mlp.c_proj = PooledLoRA(block.mlp.c_proj, pool, rank, alpha, generator)
            self.layers += [block.attn.c_attn, block.mlp.c_fc, block.mlp.c_proj]
        self.keys = nn.ParameterList(
            nn.Parameter(torch.randn(hidden, generator=generator) * 0.1) for _ in range(pool)
        )
        self.register_buffer("query_center", torch.zeros(hidden))  # set from task set A
        self.pool = pool
        self.owner = [-1] * pool  # the task that claimed each slot (-1: free)

    @torch.no_grad()
    def query(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The embedded history (B, H): mean of the frozen state and action embeddings over the window's
        valid steps (the current action left out), centred by the mean over task set A."""
        mask = batch["attention_mask"].float()  # (B, K)
        action_mask = mask.clone()
        action_mask[:, -1] = 0.0
        s = self.dt.embed_state(batch["states"]) * mask[..., None]
        a = self.dt.embed_action(batch["actions"]) * action_mask[..., None]
        n = (mask.sum(1) + action_mask.sum(1)).clamp(min=1.0)
        return (s.sum(1) + a.sum(1)) / n[:, None] - self.query_center

    def similarity(self, query: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of queries (B, H) to every key: (B, M)."""
        return F.normalize(query, dim=-1) @ F.normalize(torch.stack(list(self.keys)), dim=-1).T

    def retrieve(self, query: torch.Tensor, allowed: list[int]) -> torch.Tensor:
        """Top-1 slot among ``allowed`` for each query (B, H) -> (B,)."""
        if not allowed:
            raise ConfigError("the modulator pool is exhausted: raise --setup.pool")
        sim = self.similarity(query)[:, allowed]
        return torch.tensor(allowed, device=query.device)[sim.argmax(-1)]

    def logits(self, batch: dict[str, torch.Tensor], slot: torch.Tensor) -> torch.Tensor:
        """Action logits (B, K, A) with modulator ``slot[b]`` applied to window b."""
        for layer in self.layers:
            layer.slot = slot
        try:
            return dt_logits(self.dt, batch)
        finally:
            for layer in self.layers:
                layer.slot = None

    def claimed(self) -> list[int]:
        return [i for i, owner in enumerate(self.owner) if owner >= 0]

    def free(self) -> list[int]:
        return [i for i, owner in enumerate(self.owner) if owner < 0]

    def slot_parameters(self, slot: int) -> list[nn.Parameter]:
        return [p for layer in self.layers for p in layer.slot_parameters(slot)]

    def claim(self, slots: list[int], task: int) -> None:
        """Give ``slots`` to ``task`` and freeze their modulators and keys for good."""
        for slot in slots:
            self.owner[slot] = task
            self.keys[slot].requires_grad_(False)
            for p in self.slot_parameters(slot):
                p.requires_grad_(False)


# -- training ---------------------------------------------------------------------------------------
@dataclass
class L2MConfig:
    """The L2M bench (``l2m``), declared once: the CLI takes it as ``--setup.*``."""

    seeds: int = 3
    """Seeds of the task sequence (modulator init, minibatches, evaluation resets; the demos and the
    pretrained DT are shared)."""
    pretrain_tasks: list[TaskSpec] = field(
        default_factory=lambda: [TaskSpec("MiniGrid-Empty-Random-5x5-v0"), TaskSpec("MiniGrid-Empty-8x8-v0")]
    )
    """Task set A: the Decision Transformer is pretrained on these jointly, then frozen."""
    new_tasks: list[TaskSpec] = field(
        default_factory=lambda: [
            TaskSpec("MiniGrid-Empty-Random-6x6-v0", [1, 0, 2]),
            TaskSpec("MiniGrid-SimpleCrossingS9N1-v0", [2, 1, 0]),
        ]
    )
    """Tasks learned one after another after pretraining (permuted actions: they conflict with A)."""
    dt: DTConfig = field(default_factory=DTConfig)
    """The Decision Transformer backbone."""
    context: int = 8
    """Timesteps of history the DT reads (3 tokens each: return-to-go, state, action)."""
    max_steps: int = 100
    """Episode step limit (demos and evaluation); the DT's timestep table has this many entries + 1."""
    episodes: int = 40
    """Demonstration episodes per task (training); a further quarter is held out."""
    noise: float = 0.2
    """Probability of a random action in the recorded rollouts (labels stay the expert's)."""
    pool: int = 8
    """Modulators (and keys) in the pool."""
    rank: int = 4
    """LoRA rank of every modulator (L2M: 4)."""
    alpha: float = 8.0
    """LoRA scale numerator: the update is alpha / rank * B A x (L2M: alpha = 2 rank)."""
    key_coef: float = 0.5
    """Weight of the key-query loss 1 - cos(q, k)."""
    pretrain_steps: int = 600
    """DT pretraining steps on task set A (cached)."""
    task_steps: int = 200
    """Training steps per task in the sequence (every arm)."""
    batch_size: int = 64
    """Windows per step."""
    lr: float = 1e-3
    """Adam learning rate (pretraining; full fine-tuning uses lr / 10, the modulators lr)."""
    target_return: float = 1.0
    """Return-to-go the DT is conditioned on when acting (MiniGrid's best return is just under 1)."""
    eval_episodes: int = 5
    """Greedy episodes per task for the return figure (0: skip)."""


def _fit(
    model: nn.Module,
    params: list[nn.Parameter],
    loss_fn: Any,
    n: int,
    steps: int,
    config: L2MConfig,
    lr: float,
    generator: torch.Generator,
) -> float:
    """Adam on random minibatches of ``n`` windows through the core's in-process loop
    (:func:`warmstart.engine.light_fit`: NaN/inf guard, gradient clipping at 1, CPU); returns the last loss."""
    from warmstart.engine import light_fit

    batches = (torch.randint(n, (min(config.batch_size, n),), generator=generator) for _ in range(steps))
    losses = light_fit(model, loss_fn, batches, steps=steps, lr=lr, params=params, seed=None, device="cpu")
    model.eval()
    return losses[-1]


def train_dt(dt: nn.Module, data: Trajectories, steps: int, config: L2MConfig, lr: float, generator) -> float:
    """Behaviour cloning of every DT weight on the windows of ``data`` (CE at every state token)."""

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        batch = window_batch(data, idx)
        return _window_ce(dt_logits(dt, batch), batch["labels"])

    params = [p for p in dt.parameters()]
    for p in params:
        p.requires_grad_(True)
    return _fit(dt, params, loss_fn, len(data), steps, config, lr, generator)


def train_shared_lora(
    model: ModulatedDT, data: Trajectories, config: L2MConfig, generator: torch.Generator
) -> float:
    """The single shared modulator (slot 0 for every window) trained on the task, never frozen."""

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        batch = window_batch(data, idx)
        return _window_ce(model.logits(batch, torch.zeros(len(idx), dtype=torch.long)), batch["labels"])

    params = model.slot_parameters(0)
    return _fit(model, params, loss_fn, len(data), config.task_steps, config, config.lr, generator)


def l2m_learn_task(
    model: ModulatedDT, data: Trajectories, task: int, config: L2MConfig, generator: torch.Generator
) -> dict[str, float]:
    """Learn task ``task`` with the pool: the free key nearest to the task's queries is reserved for it;
    CE + key loss; then the task claims (freezes) it."""
    free = model.free()
    if not free:
        raise ConfigError(f"the modulator pool is exhausted at task {task}: raise --setup.pool")
    queries = torch.cat([model.query(window_batch(data, i)) for i in torch.arange(len(data)).split(1024)])
    reserved = [free[int(model.similarity(queries).mean(0)[free].argmax())]]
    params = [model.keys[i] for i in reserved] + [p for i in reserved for p in model.slot_parameters(i)]

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        batch = window_batch(data, idx)
        q = queries[idx]
        slot = model.retrieve(q, reserved)
        key_loss = 1.0 - model.similarity(q)[torch.arange(len(idx)), slot]
        return _window_ce(model.logits(batch, slot), batch["labels"]) + config.key_coef * key_loss.mean()

    loss = _fit(model, params, loss_fn, len(data), config.task_steps, config, config.lr, generator)
    model.claim(reserved, task)
    return {"loss": loss, "slot": float(reserved[0])}


Arm = nn.Module  # a plain DT, or a ModulatedDT (routed by its keys, or 'shared': always slot 0)


@torch.no_grad()
def predict(
    arm: Arm, batch: dict[str, torch.Tensor], shared: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy actions at the windows' last step (B,) and the slots used (B,; -1 for a plain DT); task-agnostic:
    the pool retrieves over every claimed key."""
    arm.eval()
    n = len(batch["states"])
    if not isinstance(arm, ModulatedDT):
        return dt_logits(arm, batch)[:, -1].argmax(-1), torch.full((n,), -1)
    slot = torch.zeros(n, dtype=torch.long) if shared else arm.retrieve(arm.query(batch), arm.claimed())
    return arm.logits(batch, slot)[:, -1].argmax(-1), slot


@torch.no_grad()
def accuracy(arm: Arm, data: Trajectories, shared: bool = False) -> float:
    """Held-out accuracy against the expert at the last step of every window."""
    hits = 0
    for idx in torch.arange(len(data)).split(1024):
        pred, _ = predict(arm, window_batch(data, idx), shared)
        hits += int((pred == data.labels[idx]).sum())
    return hits / max(len(data), 1)


@torch.no_grad()
def task_return(arm: Arm, task: TaskSpec, config: L2MConfig, seed: int, shared: bool = False) -> float:
    """Mean return of the greedy DT in the (permuted) task, conditioned on ``target_return``, reading its
    own last ``context`` steps (L2M retrieves its modulator from that window at every step)."""
    from warmstart_rl.data import episode_returns

    env = task_env(task, config.max_steps)
    history: deque[tuple[np.ndarray, int]] = deque(maxlen=config.context)
    step = [0]

    def reset() -> None:
        history.clear()
        step[0] = 0

    def act(obs: np.ndarray) -> int:
        history.append((symbolic_state(obs), 0))  # the current action is not known yet
        k, t = len(history), step[0]
        window = torch.full((k, config.context), -1, dtype=torch.long)
        last = torch.arange(k - config.context, k)
        window[-1] = torch.where(last >= 0, last, -1)
        data = Trajectories(
            torch.from_numpy(np.stack([s for s, _ in history])),
            torch.tensor([a for _, a in history]),
            torch.zeros(k, dtype=torch.long),
            torch.full((k,), config.target_return),  # MiniGrid pays only at the goal: the RTG stays
            torch.arange(t - k + 1, t + 1),
            torch.zeros(k, dtype=torch.long),
            window,
        )
        action = int(predict(arm, window_batch(data, torch.tensor([k - 1])), shared)[0])
        history[-1] = (history[-1][0], action)
        step[0] += 1
        return action

    try:
        return float(np.mean(episode_returns(act, env, config.eval_episodes, seed, on_reset=reset)))
    finally:
        env.close()


def pretrained_dt(config: L2MConfig, train: list[Trajectories]) -> tuple[nn.Module, dict[str, Any]]:
    """The DT pretrained on task set A, built once and cached (``warmstart.cache``, kind ``rl.l2m-dt``) by
    its config, the data recipe and the code version; reloaded with ``from_pretrained``."""
    import json

    from transformers import DecisionTransformerModel

    from warmstart import cache
    from warmstart_rl import data as data_module

    n_a = len(config.pretrain_tasks)
    recipe = {
        "tasks": [asdict(t) for t in config.pretrain_tasks],
        "episodes": config.episodes,
        "noise": config.noise,
        "max_steps": config.max_steps,
    }
    model_config = {
        "dt": asdict(config.dt),
        "context": config.context,
        "steps": config.pretrain_steps,
        "batch_size": config.batch_size,
        "lr": config.lr,
    }

    def build(folder: Path) -> None:
        torch.manual_seed(0)
        dt = build_dt(config.dt, config.context, config.max_steps)
        start = time.perf_counter()
        loss = train_dt(
            dt,
            _concat(train[:n_a]),
            config.pretrain_steps,
            config,
            config.lr,
            torch.Generator().manual_seed(0),
        )
        dt.save_pretrained(folder / "dt")
        meta = {"loss": loss, "seconds": time.perf_counter() - start}
        (folder / "pretraining.json").write_text(json.dumps(meta))

    import sys

    folder = cache.cached(
        "rl.l2m-dt",
        model_config,
        build,
        data=recipe,
        code=cache.code_version(sys.modules[__name__], data_module),
        description=f"L2M: Decision Transformer pretrained on {', '.join(t.name for t in config.pretrain_tasks)}",
    )
    dt = DecisionTransformerModel.from_pretrained(folder / "dt").eval()
    return dt, json.loads((folder / "pretraining.json").read_text()) | {"folder": str(folder)}


ARMS = ("pretrained (frozen)", "full fine-tuning", "shared LoRA", "l2m")


def check_config(config: L2MConfig) -> None:
    _check_tasks(config.pretrain_tasks, "setup.pretrain_tasks")
    _check_tasks(config.new_tasks, "setup.new_tasks")
    n_tasks = len(config.pretrain_tasks) + len(config.new_tasks)
    if config.pool < n_tasks:
        raise ConfigError(f"--setup.pool {config.pool} is smaller than the number of tasks ({n_tasks})")
    if config.context < 1 or config.task_steps < 1 or config.pretrain_steps < 1:
        raise ConfigError("--setup.context, task_steps and pretrain_steps must be >= 1")


def record_all(config: L2MConfig) -> tuple[list[Trajectories], list[Trajectories]]:
    """Train and held-out trajectories of every task (A's first), recorded once with seed 0."""
    n_held = max(1, config.episodes // 4)
    train, held = [], []
    for i, task in enumerate(config.pretrain_tasks + config.new_tasks):
        data = record_trajectories(
            task, config.episodes + n_held, config.noise, config.context, config.max_steps, 0
        )
        first, second = _split_episodes(data, config.episodes)
        train.append(first)
        held.append(second)
        log.info("task %d %s: %d train / %d held-out steps", i, task.name, len(first), len(second))
    return train, held


def run_l2m(
    config: L2MConfig,
    seed: int = 0,
    recorded: tuple[list[Trajectories], list[Trajectories]] | None = None,
    pretrained: tuple[nn.Module, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The pretrained DT, then the task sequence (A's tasks, then the new ones) with every arm.

    Returns {tasks, n_pretrain, accuracy: {arm: [per task, final]}, matrix: {arm: [[acc on task j after
    stage i]]}, returns: {arm: [per task]}, routing (share of held-out windows routed to a slot of their
    own task), pretraining, seconds, models}.
    """
    check_config(config)
    start = time.perf_counter()
    tasks = config.pretrain_tasks + config.new_tasks
    train, held = recorded if recorded is not None else record_all(config)
    dt, pretraining = pretrained if pretrained is not None else pretrained_dt(config, train)
    n_a = len(config.pretrain_tasks)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    l2m = ModulatedDT(dt, config.pool, config.rank, config.alpha, seed)
    shared = ModulatedDT(dt, 1, config.rank, config.alpha, seed)
    a_windows = _concat(train[:n_a])
    l2m.query_center.copy_(
        torch.cat(
            [l2m.query(window_batch(a_windows, i)) for i in torch.arange(len(a_windows)).split(1024)]
        ).mean(0)
    )
    full = copy.deepcopy(dt)
    pretrained_acc = [accuracy(dt, h) for h in held]
    matrix: dict[str, list[list[float]]] = {arm: [] for arm in ARMS[1:]}
    for i, data in enumerate(train):
        train_dt(full, data, config.task_steps, config, config.lr / 10, generator)
        train_shared_lora(shared, data, config, generator)
        l2m_learn_task(l2m, data, i, config, generator)
        matrix["full fine-tuning"].append([accuracy(full, h) for h in held[: i + 1]])
        matrix["shared LoRA"].append([accuracy(shared, h, shared=True) for h in held[: i + 1]])
        matrix["l2m"].append([accuracy(l2m, h) for h in held[: i + 1]])
    routing = []
    for i, h in enumerate(held):
        slots = torch.cat([predict(l2m, window_batch(h, idx))[1] for idx in torch.arange(len(h)).split(1024)])
        routing.append(float(np.mean([l2m.owner[int(s)] == i for s in slots])))
    arms: dict[str, tuple[nn.Module, bool]] = {
        "pretrained (frozen)": (dt, False),
        "full fine-tuning": (full, False),
        "shared LoRA": (shared, True),
        "l2m": (l2m, False),
    }
    result: dict[str, Any] = {
        "tasks": [t.name for t in tasks],
        "n_pretrain": n_a,
        "accuracy": {"pretrained (frozen)": pretrained_acc} | {arm: rows[-1] for arm, rows in matrix.items()},
        "matrix": matrix,
        "routing": routing,
        "pretraining": pretraining,
        "slots_used": len(l2m.claimed()),
    }
    if config.eval_episodes > 0:
        result["returns"] = {
            arm: [task_return(model, t, config, 1_000 + 97 * seed, is_shared) for t in tasks]
            for arm, (model, is_shared) in arms.items()
        }
    result["seconds"] = time.perf_counter() - start
    result["models"] = {arm: model for arm, (model, _) in arms.items()}
    return result


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


def run_l2m_bench(config: L2MConfig, out: Any) -> Any:
    """``config.seeds`` runs of :func:`run_l2m`; report.md + plot.png + results.json (+ matrices.json)."""
    import json

    from warmstart.eval import write_bench_report

    check_config(config)
    mean_acc: dict[str, list[float]] = {a: [] for a in ARMS}
    on_a: dict[str, list[float]] = {a: [] for a in ARMS}
    on_new: dict[str, list[float]] = {a: [] for a in ARMS}
    returns: dict[str, list[float]] = {a: [] for a in ARMS}
    forget: dict[str, list[float]] = {a: [] for a in ARMS[1:]}
    routing: list[float] = []
    per_seed = []
    start = time.perf_counter()
    recorded = record_all(config)
    pretrained = pretrained_dt(config, recorded[0])
    for seed in range(config.seeds):
        result = run_l2m(config, seed, recorded, pretrained)
        result.pop("models")
        per_seed.append(result)
        n_a = result["n_pretrain"]
        for arm in ARMS:
            acc = result["accuracy"][arm]
            mean_acc[arm].append(float(np.mean(acc)))
            on_a[arm].append(float(np.mean(acc[:n_a])))
            on_new[arm].append(float(np.mean(acc[n_a:])))
            if "returns" in result:
                returns[arm].append(float(np.mean(result["returns"][arm])))
        for arm in ARMS[1:]:
            forget[arm].append(forgetting(result["matrix"][arm]))
        routing.append(float(np.mean(result["routing"])))
        log.info("seed %d: %s", seed, {a: round(mean_acc[a][-1], 3) for a in ARMS})
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "matrices.json").write_text(json.dumps(per_seed, indent=1))
    tasks = per_seed[0]["tasks"]
    n_a = per_seed[0]["n_pretrain"]
    extra: dict[str, dict[str, list[float]]] = {
        "accuracy on task set A after the sequence": on_a,
        "accuracy on the new tasks": on_new,
        "forgetting (Chaudhry et al. 2018: best earlier - final accuracy)": forget,
        "held-out windows routed to their task's modulator": {"l2m": routing},
    }
    if config.eval_episodes > 0:
        extra["greedy return (mean over tasks)"] = returns
    pre = per_seed[0]["pretraining"]
    description = (
        f"Task set A: {', '.join(tasks[:n_a])}; a Decision Transformer (transformers' DecisionTransformerModel, "
        f"{config.dt.layers} GPT-2 blocks x {config.dt.hidden}, context {config.context} steps of "
        f"(return-to-go, 7x7 symbolic view, action)) pretrained on A for {config.pretrain_steps} steps "
        f"(cached artifact; {pre['seconds']:.0f} s when built). Then the sequence {', '.join(tasks)} ('/perm' = "
        f"permuted actions, conflicting with A), {config.task_steps} steps per task, {config.episodes} "
        f"noisy-expert episodes per task ({config.noise:.0%} random actions, expert labels). Arms: the "
        f"pretrained DT unchanged; full fine-tuning of every weight on each task in turn (lr {config.lr / 10:g}); "
        f"one shared rank-{config.rank} LoRA modulator trained on each task in turn; L2M: frozen DT, pool of "
        f"{config.pool} rank-{config.rank} LoRA modulators (queries, values, MLP of every block), retrieved per "
        f"window by its embedded history. Metric: held-out action accuracy against the expert after the whole "
        f"sequence, mean over all tasks; no task id at test time (L2M routes by its keys). Wall time "
        f"{time.perf_counter() - start:.0f} s."
    )
    report = write_bench_report(
        out,
        "rl: L2M (frozen Decision Transformer + modulator pool) vs full fine-tuning and a shared LoRA",
        mean_acc,
        metric="held-out action accuracy, all tasks, after the sequence",
        higher_is_better=True,
        baseline="full fine-tuning",
        extra_metrics=extra,
        description=description,
        config={
            **{k: v for k, v in asdict(config).items() if k not in ("pretrain_tasks", "new_tasks")},
            "tasks": tasks,
        },
    )
    from warmstart_rl.plots import append_pictures, matrix_figure, save_figure

    png = save_figure(matrix_figure(per_seed[0]["matrix"], tasks), Path(out) / "accuracy_matrices.png")
    append_pictures(
        report.report_md, {"held-out accuracy on task j (column) after task i (row), seed 0": png}
    )
    return report
