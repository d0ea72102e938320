"""B-Coder: value-based RL for program synthesis with unit-test rewards, and reranking by the learned value.

Seed paper: "B-Coder: Value-Based Deep Reinforcement Learning for Program Synthesis" (Yu et al., ICLR 2024,
arXiv 2310.03173). Implemented: the Q-function is built from the pretrained LM so that its softmax policy
*is* the LM at initialisation — Q(s, a) = β·log π_θ(a | s) + V_φ(s), a dueling form whose advantage is the
LM's log-probability and whose state value is a new linear head; V_φ is first trained alone on the frozen
LM (the paper's value pre-training), then everything jointly. Training minimises the squared TD error on
off-policy programs from a replay buffer (reference solutions and the model's own samples, reward 1 when
the program passes its tests in the sandbox, 0 otherwise) with a *conservative* Bellman operator: the
bootstrap action at s_{t+1} is the frozen pretrained policy's greedy action, not a max over the vocabulary
(which over-estimates on unseen actions). Reranking scores each sampled program by the Q-value of its last
action (the predicted test outcome) and keeps the best. Chosen here (exact equations *unverified* against
the paper): γ = 1, reward only at the end, semi-gradient targets from the current network under no_grad
instead of a Polyak target network, and an optional behaviour-cloning term on reference solutions.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from warmstart.engine import Engine, EngineConfig
from warmstart_code.data import CodeTask
from warmstart_code.models import encode_pairs
from warmstart_code.synthesis import rows

log = logging.getLogger(__name__)


@dataclass
class BCoderConfig:
    """B-Coder hyperparameters."""

    beta: float = 0.1
    """Scale of the LM log-probabilities in Q (the policy is softmax(Q / beta)); small keeps TD from
    overwriting the policy (1.0 hurt pass@1 in our runs)."""
    value_warmup_fraction: float = 0.3
    """Share of the steps spent training the value head alone on the frozen LM."""
    bc_weight: float = 0.5
    """Weight of a cross-entropy term on passing programs of the replay buffer (0 disables)."""
    samples_per_task: int = 4
    """Programs sampled per training task for the replay buffer."""
    temperature: float = 0.8
    """Sampling temperature for the replay buffer."""


class QModel(nn.Module):
    """Q(s, a) = β·log_softmax(LM logits)(a) + V(s), with a frozen copy of the pretrained LM for bootstrapping."""

    def __init__(self, lm: nn.Module, beta: float = 1.0) -> None:
        super().__init__()
        self.lm = lm
        self.beta = beta
        hidden = lm.config.hidden_size if hasattr(lm.config, "hidden_size") else lm.config.n_embd
        self.value_head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        self.reference = copy.deepcopy(lm).eval()  # π0, frozen: the conservative operator's bootstrap policy
        for p in self.reference.parameters():
            p.requires_grad_(False)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        logp = F.log_softmax(out.logits.float(), dim=-1)  # (B, T, V)
        value = self.value_head(out.hidden_states[-1]).squeeze(-1).float()  # (B, T)
        return logp, value


def q_of_taken(
    model: QModel, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q(s_t, a_t) for every position t whose next token is labelled; returns (q, logp, value)."""
    logp, value = model(batch["input_ids"], batch["attention_mask"])
    taken = batch["input_ids"][:, 1:]  # (B, T-1)
    q = model.beta * logp[:, :-1].gather(-1, taken.unsqueeze(-1)).squeeze(-1) + value[:, :-1]  # (B, T-1)
    return q, logp, value


def conservative_targets(model: QModel, batch: dict[str, torch.Tensor], logp: torch.Tensor,
                         value: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """y_t = r at the last action; else Q(s_{t+1}, argmax π0(· | s_{t+1})) (γ = 1, no intermediate reward)."""
    with torch.no_grad():
        ref_logits = model.reference(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits
        greedy = ref_logits.argmax(-1)  # (B, T): π0's action at each state
        q_next = (
            model.beta * logp.detach().gather(-1, greedy.unsqueeze(-1)).squeeze(-1) + value.detach()
        )  # (B, T)
        target = q_next[:, 1:].clone()  # target for position t uses state t+1
        labelled = batch["labels"][:, 1:] != -100  # (B, T-1)
        last = labelled.long().cumsum(-1) == labelled.long().sum(-1, keepdim=True)  # last labelled action
        last = last & labelled
        target[last] = batch["reward"].float().unsqueeze(-1).expand_as(target)[last]
    return target


class BCoderTask:
    """The engine task: squared conservative TD error on completion tokens (+ optional BC on passing ones)."""

    def __init__(self, model: QModel, bc_weight: float = 0.0) -> None:
        self.model = model
        self.bc_weight = bc_weight

    def loss(self, batch: dict[str, torch.Tensor]):
        q, logp, value = q_of_taken(self.model, batch)
        target = conservative_targets(self.model, batch, logp, value)
        mask = (batch["labels"][:, 1:] != -100).float()  # (B, T-1)
        td = ((q - target) ** 2 * mask).sum() / mask.sum().clamp_min(1)
        loss = td
        if self.bc_weight > 0:
            taken = batch["input_ids"][:, 1:]
            nll = -logp[:, :-1].gather(-1, taken.unsqueeze(-1)).squeeze(-1)  # (B, T-1)
            good = mask * (batch["reward"].float() > 0).float().unsqueeze(-1)
            loss = loss + self.bc_weight * (nll * good).sum() / good.sum().clamp_min(1)
        return loss, {"td": float(td.detach()), "samples": len(q), "tokens": int(mask.sum())}


def replay_buffer(tokenizer, tasks: Sequence[CodeTask], sampled: Sequence[Sequence[str]],
                  passed: Sequence[Sequence[bool]], max_len: int = 128) -> list[dict[str, torch.Tensor]]:  # fmt: skip
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


def train_bcoder(lm, tokenizer, buffer: list[dict[str, torch.Tensor]], engine: EngineConfig,
                 config: BCoderConfig | None = None) -> QModel:  # fmt: skip
    """Value pre-training on the frozen LM, then joint conservative TD training; returns the Q-model."""
    config = config or BCoderConfig()
    model = QModel(lm, config.beta)
    total = engine.train.max_steps
    warm = int(round(total * config.value_warmup_fraction))
    if warm > 0:
        for p in model.lm.parameters():
            p.requires_grad_(False)
        stage = copy.deepcopy(engine)
        stage.train.max_steps = warm
        Engine(stage, None).fit(BCoderTask(model, 0.0), buffer)
        for p in model.lm.parameters():
            p.requires_grad_(True)
    if total - warm > 0:
        stage = copy.deepcopy(engine)
        stage.train.max_steps = total - warm
        stage.train.seed = engine.train.seed + 1
        Engine(stage, None).fit(BCoderTask(model, config.bc_weight), buffer)
    return model.eval()


@torch.no_grad()
def program_values(model: QModel, tokenizer, tasks: Sequence[CodeTask], completions: Sequence[Sequence[str]],
                   max_len: int = 128, batch_size: int = 32) -> list[list[float]]:  # fmt: skip
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
