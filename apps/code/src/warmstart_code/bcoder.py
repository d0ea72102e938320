"""B-Coder: value-based RL for program synthesis with unit-test rewards, and reranking by the learned value.

Seed paper: "B-Coder: Value-Based Deep Reinforcement Learning for Program Synthesis" (Yu et al., ICLR 2024,
arXiv 2310.03173). Implemented as the paper builds it: a dueling Q-function initialised from the pretrained
LM's logits, Q(s, a) = V_φ(s) + β·(l(s, a) − max_a' l(s, a')) — the advantage is max-normalised, so the
greedy action's Q *is* V(s) and softmax(Q/β) is the LM at initialisation; V_φ (a new linear head) is first
trained alone on the frozen LM (value pre-training), then everything jointly. Training minimises the squared
TD error on off-policy programs from a replay buffer (reference solutions and the model's own samples,
reward 1 when the program passes its tests in the sandbox, 0 otherwise) with the *conservative* Bellman
operator: the bootstrap action at s_{t+1} is the frozen pretrained policy's greedy action, not a max over the
vocabulary, evaluated by a **target network** (Polyak-averaged or copied every ``target_period`` steps).
Reranking scores each sampled program by the Q-value of its last action (its predicted test outcome).
Our choices where the equations are *unverified* against the paper: γ = 1, reward only at the end, an
optional behaviour-cloning term (off by default), β = 0.1. The value head is saved through
``warmstart.hub`` (``value_head/`` beside the LM); the older ``value_head.safetensors`` layout still loads.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from warmstart.engine import EngineConfig
from warmstart.engine.light import light_fit
from warmstart_code.data import CodeTask
from warmstart_code.models import encode_pairs
from warmstart_code.synthesis import rows

log = logging.getLogger(__name__)


@dataclass
class BCoderConfig:
    """B-Coder hyperparameters."""

    beta: float = 0.1
    """Scale of the LM-logit advantage in Q (the policy is softmax(Q / beta))."""
    value_warmup_fraction: float = 0.3
    """Share of the steps spent training the value head alone on the frozen LM."""
    bc_weight: float = 0.0
    """Weight of a cross-entropy term on passing programs of the replay buffer (ours; 0 = the paper's loss)."""
    gamma: float = 1.0
    """Discount between tokens."""
    target_update: Literal["polyak", "periodic"] = "polyak"
    """How the target network follows the online one."""
    tau: float = 0.05
    """Polyak rate: target <- tau * online + (1 - tau) * target, every step."""
    target_period: int = 10
    """periodic: copy the online network into the target every this many steps."""
    samples_per_task: int = 4
    """Programs sampled per training task for the replay buffer."""
    temperature: float = 0.8
    """Sampling temperature for the replay buffer."""


class QModel(nn.Module):
    """Q(s, a) = V(s) + β·(l(s, a) − max l(s, ·)), a frozen copy of the pretrained LM (π0, the conservative
    operator's bootstrap policy) and a target network (LM + value head) for the bootstrap values."""

    def __init__(self, lm: nn.Module, beta: float = 0.1) -> None:
        super().__init__()
        self.lm = lm
        self.beta = beta
        hidden = lm.config.hidden_size if hasattr(lm.config, "hidden_size") else lm.config.n_embd
        self.value_head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        self.reference = _frozen_copy(lm)  # π0
        self.target_lm = _frozen_copy(lm)
        self.target_value = _frozen_copy(self.value_head)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(log π(· | s_t), V(s_t)) of the online network."""
        return _logp_value(self.lm, self.value_head, input_ids, attention_mask)

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """target <- tau * online + (1 - tau) * target (tau = 1: a copy)."""
        for online, target in ((self.lm, self.target_lm), (self.value_head, self.target_value)):
            for p, tp in zip(online.parameters(), target.parameters(), strict=True):
                tp.lerp_(p.detach(), tau)


def _frozen_copy(module: nn.Module) -> nn.Module:
    twin = copy.deepcopy(module).eval()
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


def _logp_value(lm: nn.Module, head: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    out = lm(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    logp = F.log_softmax(out.logits.float(), dim=-1)  # (B, T, V)
    value = head(out.hidden_states[-1]).squeeze(-1).float()  # (B, T)
    return logp, value


def advantage(logp: torch.Tensor, beta: float) -> torch.Tensor:
    """β·(l(s, a) − max_a' l(s, a')) — the same as with log-probabilities (they differ from l by a constant)."""
    return beta * (logp - logp.max(-1, keepdim=True).values)  # (B, T, V), <= 0, 0 at the greedy action


def q_of_taken(
    model: QModel, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q(s_t, a_t) for every position t whose next token is labelled; returns (q, logp, value)."""
    logp, value = model(batch["input_ids"], batch["attention_mask"])
    taken = batch["input_ids"][:, 1:]  # (B, T-1)
    adv = advantage(logp[:, :-1], model.beta).gather(-1, taken.unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    return value[:, :-1] + adv, logp, value


def conservative_targets(model: QModel, batch: dict[str, torch.Tensor], gamma: float = 1.0) -> torch.Tensor:
    """y_t = r at the last action; else γ·Q_target(s_{t+1}, argmax π0(· | s_{t+1})) (reward only at the end)."""
    with torch.no_grad():
        ids, mask = batch["input_ids"], batch["attention_mask"]
        greedy = model.reference(input_ids=ids, attention_mask=mask).logits.argmax(-1)  # (B, T): π0's action
        logp_t, value_t = _logp_value(model.target_lm, model.target_value, ids, mask)
        adv_t = advantage(logp_t, model.beta).gather(-1, greedy.unsqueeze(-1)).squeeze(-1)  # (B, T)
        target = gamma * (value_t + adv_t)[:, 1:].clone()  # target for position t uses state t+1
        labelled = batch["labels"][:, 1:] != -100  # (B, T-1)
        last = labelled.long().cumsum(-1) == labelled.long().sum(-1, keepdim=True)  # last labelled action
        last = last & labelled
        target[last] = batch["reward"].float().unsqueeze(-1).expand_as(target)[last]
    return target


class BCoderTask:
    """Squared conservative TD error on completion tokens (+ optional BC on passing ones); the target network
    follows the online one before every step."""

    def __init__(
        self, model: QModel, config: BCoderConfig | None = None, bc_weight: float | None = None
    ) -> None:
        self.model = model
        self.config = config or BCoderConfig()
        self.bc_weight = self.config.bc_weight if bc_weight is None else bc_weight
        self.steps = 0

    def _follow(self) -> None:
        cfg = self.config
        if cfg.target_update == "polyak":
            self.model.update_target(cfg.tau)
        elif self.steps % max(1, cfg.target_period) == 0:
            self.model.update_target(1.0)
        self.steps += 1

    def loss(self, batch: dict[str, torch.Tensor]):
        if self.model.training:
            self._follow()
        q, logp, _ = q_of_taken(self.model, batch)
        target = conservative_targets(self.model, batch, self.config.gamma)
        mask = (batch["labels"][:, 1:] != -100).float()  # (B, T-1)
        td = ((q - target) ** 2 * mask).sum() / mask.sum().clamp_min(1)
        loss = td
        if self.bc_weight > 0:
            taken = batch["input_ids"][:, 1:]
            nll = -logp[:, :-1].gather(-1, taken.unsqueeze(-1)).squeeze(-1)  # (B, T-1)
            good = mask * (batch["reward"].float() > 0).float().unsqueeze(-1)
            loss = loss + self.bc_weight * (nll * good).sum() / good.sum().clamp_min(1)
        return loss, {"td": float(td.detach()), "samples": len(q), "tokens": int(mask.sum())}


def replay_buffer(
    tokenizer,
    tasks: Sequence[CodeTask],
    sampled: Sequence[Sequence[str]],
    passed: Sequence[Sequence[bool]],
    max_len: int = 128,
) -> list[dict[str, torch.Tensor]]:
    """Reference solutions (reward 1) plus the sampled programs with their test rewards, as engine samples."""
    prompts, completions, rewards = [], [], []
    for task, comps, oks in zip(tasks, sampled, passed, strict=True):
        prompts.append(task.prompt)
        completions.append(task.canonical_solution)
        rewards.append(1.0)
        for c, ok in zip(comps, oks, strict=True):
            prompts.append(task.prompt)
            completions.append(c)
            rewards.append(1.0 if ok else 0.0)
    enc = encode_pairs(tokenizer, prompts, completions, max_len)
    enc["reward"] = torch.tensor(rewards)
    return rows(enc)


def _batches(buffer: list[dict[str, torch.Tensor]], batch_size: int, seed: int):
    """Seeded shuffled mini-batches of the replay buffer, epoch after epoch."""
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(buffer), generator=g).tolist()
        for s in range(0, len(order) - batch_size + 1 if len(order) >= batch_size else 1, batch_size):
            rows = [buffer[i] for i in order[s : s + batch_size]]
            yield {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


def train_bcoder(
    lm,
    tokenizer,
    buffer: list[dict[str, torch.Tensor]],
    engine: EngineConfig,
    config: BCoderConfig | None = None,
) -> QModel:
    """Value pre-training on the frozen LM, then joint conservative TD training; returns the Q-model.

    Runs in-process (``warmstart.engine.light_fit``) with ``engine``'s steps, learning rate, batch size and
    seed; the target network follows the online one every step (Polyak) or every ``target_period`` steps."""
    config = config or BCoderConfig()
    model = QModel(lm, config.beta)
    total, lr = engine.train.max_steps, engine.optimizer.lr
    batch, seed = engine.train.micro_batch_size, engine.train.seed
    warm = int(round(total * config.value_warmup_fraction))
    if warm > 0:
        for p in model.lm.parameters():
            p.requires_grad_(False)
        task = BCoderTask(model, config, bc_weight=0.0)
        light_fit(
            model,
            task.loss,
            _batches(buffer, batch, seed),
            steps=warm,
            lr=lr,
            seed=seed,
            params=list(model.value_head.parameters()),
        )
        for p in model.lm.parameters():
            p.requires_grad_(True)
    if total - warm > 0:
        task = BCoderTask(model, config)
        trainable = list(model.lm.parameters()) + list(model.value_head.parameters())
        light_fit(
            model,
            task.loss,
            _batches(buffer, batch, seed + 1),
            steps=total - warm,
            lr=lr,
            seed=seed + 1,
            params=trainable,
        )
    return model.eval()


VALUE_KIND = "code.bcoder_value"


def save_value_head(
    model: QModel, directory: str | Path, config: BCoderConfig, extra: dict | None = None
) -> Path:
    """The value head through ``warmstart.hub`` (``config.json`` + ``model.safetensors`` + model card)."""
    from warmstart.hub import ModelCard, save_model

    hidden = model.value_head.in_features
    card = ModelCard(
        title="B-Coder value head (Q = V + β·normalised LM logits)",
        paper="B-Coder: Value-Based Deep Reinforcement Learning for Program Synthesis, arXiv 2310.03173",
        description="Linear state-value head on the LM's last hidden state; load it beside its LM.",
    )
    return save_model(
        model.value_head,
        directory,
        kind=VALUE_KIND,
        config={"hidden": hidden, "bcoder": asdict(config)},
        card=card,
        extra=extra,
    )


def load_qmodel(lm, model_dir: str | Path) -> tuple[QModel, BCoderConfig]:
    """The Q-model of a ``bcoder train`` folder: ``value_head/`` (hub layout) or the older
    ``value_head.safetensors`` + ``bcoder.json``."""
    import json

    from safetensors.torch import load_file

    from warmstart.errors import CheckpointError
    from warmstart.hub import load_model

    model_dir = Path(model_dir)
    if (model_dir / "value_head" / "config.json").is_file():
        head, meta = load_model(
            model_dir / "value_head", lambda c: nn.Linear(int(c["hidden"]), 1), kind=VALUE_KIND
        )
        known = {f for f in BCoderConfig.__dataclass_fields__}
        cfg = BCoderConfig(**{k: v for k, v in meta["config"]["bcoder"].items() if k in known})
        q = QModel(lm, cfg.beta)
        q.value_head.load_state_dict(head.state_dict())
        return q, cfg
    old = model_dir / "value_head.safetensors"
    if not old.is_file():
        raise CheckpointError(
            f"{model_dir}: no value_head/ (or value_head.safetensors); pass a folder written by `bcoder train`"
        )
    meta_path = model_dir / "bcoder.json"
    raw = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    known = {f for f in BCoderConfig.__dataclass_fields__}
    cfg = BCoderConfig(**{k: v for k, v in raw.items() if k in known})
    q = QModel(lm, cfg.beta)
    q.value_head.load_state_dict(load_file(str(old)))
    return q, cfg


@torch.no_grad()
def program_values(
    model: QModel,
    tokenizer,
    tasks: Sequence[CodeTask],
    completions: Sequence[Sequence[str]],
    max_len: int = 128,
    batch_size: int = 32,
) -> list[list[float]]:
    """The learned value of each finished program: Q of its last action (the EOS after the code)."""
    model.eval()
    device = next(model.parameters()).device
    flat_p = [t.prompt for t, cs in zip(tasks, completions, strict=True) for _ in cs]
    flat_c = [c for cs in completions for c in cs]
    scores: list[float] = []
    for s in range(0, len(flat_p), batch_size):
        enc = encode_pairs(tokenizer, flat_p[s : s + batch_size], flat_c[s : s + batch_size], max_len)
        enc = {k: v.to(device) for k, v in enc.items()}
        q, _, _ = q_of_taken(model, enc)
        labelled = enc["labels"][:, 1:] != -100
        last = labelled.long().cumsum(-1).argmax(-1)  # index of the last labelled action  (B,)
        scores += q.gather(-1, last.unsqueeze(-1)).squeeze(-1).tolist()
    out, i = [], 0
    for cs in completions:
        out.append(scores[i : i + len(cs)])
        i += len(cs)
    return out


def rerank(values: Sequence[Sequence[float]], passed: Sequence[Sequence[bool]]) -> float:
    """pass@1 of the top-valued program per task (ties: the first sampled)."""
    hits = [oks[max(range(len(v)), key=lambda j: v[j])] for v, oks in zip(values, passed, strict=True)]
    return sum(hits) / max(len(hits), 1)


def pair_accuracy(values: Sequence[Sequence[float]], passed: Sequence[Sequence[bool]]) -> float:
    """Within-task ranking quality of the value: the share of (passing, failing) pairs of the same task where
    the passing program has the higher value (ties count ½) — the AUC that reranking relies on; 0.5 is chance,
    NaN when no task has both a passing and a failing sample."""
    good = total = 0.0
    for v, oks in zip(values, passed, strict=True):
        pos = [x for x, ok in zip(v, oks, strict=True) if ok]
        neg = [x for x, ok in zip(v, oks, strict=True) if not ok]
        for a in pos:
            for b in neg:
                good += 1.0 if a > b else 0.5 if a == b else 0.0
                total += 1
    return good / total if total else float("nan")
