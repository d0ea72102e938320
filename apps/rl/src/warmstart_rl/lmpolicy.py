"""A policy initialised from a pretrained language model, goals and observations given as token sequences.

Seed: *Pre-Trained Language Models for Interactive Decision-Making* (Li et al., arXiv 2202.01771, "LID"):
the goal and the observation are written as words, embedded and run through a GPT-2 whose weights come
from language pretraining; the pooled output feeds an action head and the whole network is trained by
behaviour cloning from expert demonstrations. Their finding: the LM initialisation helps, most of all for
novel goals and scenes, compared with the same network trained from random weights.

Implemented here, in miniature (no downloads): a tiny GPT-2 (``transformers.GPT2LMHeadModel`` built from a
config) is pretrained by causal language modelling on text found on the machine (by default the long
descriptions of the installed Python packages, via ``importlib.metadata``; ``--text`` reads .txt/.md files),
with a word-level vocabulary (written by hand: the env words must be whole tokens and no tokenizer files can
be downloaded). The policy is that transformer + a linear action head on the mean-pooled outputs, trained
by BC on BabyAI ``GoToLocal`` (``minigrid``'s BabyAI bot is the expert); the 7x7 egocentric symbolic view
becomes phrases such as ``"red ball right 1 ahead 3 ."`` after the mission ``"go to the red ball"``. The
comparison is the same network from random weights, at equal BC steps, on held-out episodes and on
*novel goals* (colour-object pairs never seen as a mission in training). Left out: GPT-2's real weights and
size, the paper's VirtualHome/BabyAI-scale data, active data gathering, and the observation-as-embedding
variant.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from warmstart.errors import ConfigError, DataError

log = logging.getLogger(__name__)

_WORD = re.compile(r"[a-z]+|[0-9]|[.,]")
OBJECTS = {3: "door", 4: "key", 5: "ball", 6: "box", 8: "goal", 9: "lava"}
COLORS = ["red", "green", "blue", "purple", "yellow", "grey"]
ENV_WORDS = [
    *COLORS,
    *OBJECTS.values(),
    "go",
    "to",
    "the",
    "a",
    "left",
    "right",
    "ahead",
    "front",
    "wall",
    "empty",
    *map(str, range(10)),
    ".",
    ",",
]
SPECIALS = ["<pad>", "<unk>"]


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


# -- text and vocabulary ----------------------------------------------------------------------------
def local_text(text_dir: Path | None = None, max_chars: int = 2_000_000) -> str:
    """English text available offline: ``text_dir``'s .txt/.md files, or the installed packages' descriptions."""
    if text_dir is not None:
        files = sorted(p for p in Path(text_dir).rglob("*") if p.suffix in (".txt", ".md"))
        if not files:
            raise DataError(f"--text {text_dir}: no .txt or .md files found")
        text = "\n".join(p.read_text(errors="ignore") for p in files)
    else:
        from importlib.metadata import distributions

        parts = sorted((d.metadata["Name"] or "", d.read_text("METADATA") or "") for d in distributions())
        text = "\n".join(body for _, body in parts)
    return text[:max_chars]


class Vocab:
    """Word-level vocabulary: specials, every environment word, then the most frequent text words."""

    def __init__(self, text_words: list[str], size: int) -> None:
        counts = Counter(w for w in text_words if w not in ENV_WORDS)
        extra = [w for w, _ in counts.most_common(max(0, size - len(SPECIALS) - len(ENV_WORDS)))]
        self.itos = SPECIALS + ENV_WORDS + extra
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, ws: list[str]) -> list[int]:
        return [self.stoi.get(w, 1) for w in ws]


# -- BabyAI observations as words -------------------------------------------------------------------
def describe(mission: str, image: np.ndarray) -> list[str]:
    """Mission + the 7x7x3 egocentric view (agent at column 3, row 6, facing up) as words."""
    out = words(mission) + ["."]
    for x in range(7):
        for y in range(7):
            obj, color = int(image[x, y, 0]), int(image[x, y, 1])
            if obj in OBJECTS:
                dx, ahead = x - 3, 6 - y
                side = ["left", str(-dx)] if dx < 0 else ["right", str(dx)] if dx > 0 else []
                out += [COLORS[color], OBJECTS[obj], *side, "ahead", str(ahead), "."]
    front = int(image[3, 5, 0])
    out += ["front", "wall" if front == 2 else OBJECTS.get(front, "empty")]
    return out


@dataclass
class LMPolicyConfig:
    """The LID bench (``lm-policy``), declared once: the CLI takes it as ``--setup.*``."""

    seeds: int = 3
    """Seeds (the demonstrations are the same; weights, minibatches and evaluation resets differ)."""
    env_id: str = "BabyAI-GoToLocal-v0"
    """A BabyAI id whose missions the bot solves (GoTo* family)."""
    episodes: int = 300
    """Bot demonstrations for BC (missions with a novel-goal pair are set aside for testing)."""
    heldout_episodes: int = 60
    """Further demonstrations for the held-out accuracy (seen goals) and the novel-goal accuracy."""
    novel_goals: list[str] = field(default_factory=lambda: ["red ball", "blue key", "purple box"])
    """Colour-object pairs never used as a training mission."""
    vocab_size: int = 2000
    """Word vocabulary (environment words + the most frequent text words)."""
    n_embd: int = 64
    """GPT-2 width."""
    n_layer: int = 2
    """GPT-2 layers."""
    n_head: int = 2
    """GPT-2 heads."""
    max_len: int = 96
    """Longest token sequence (observations are truncated to it)."""
    lm_steps: int = 400
    """Causal-LM pretraining steps on text."""
    lm_seq: int = 64
    """Tokens per LM training sequence."""
    bc_steps: int = 300
    """BC steps (both arms)."""
    batch_size: int = 32
    """Sequences per step."""
    lr: float = 1e-3
    """Adam learning rate (LM pretraining and BC)."""
    device: str = "cpu"
    """Where LM pretraining and BC train: 'cpu', 'cuda', 'cuda:1' (the core's light_fit places them)."""
    eval_episodes: int = 20
    """Greedy episodes for the success rate (0: skip)."""


def record_bot(env_id: str, episodes: int, seed: int, keep: Any) -> list[tuple[list[str], int]]:
    """(words, bot action) for every step of ``episodes`` episodes whose mission passes ``keep``."""
    import gymnasium as gym
    from minigrid.utils.baby_ai_bot import BabyAIBot

    from warmstart_rl.data import _register_all

    _register_all()
    if env_id not in gym.registry or not env_id.startswith("BabyAI-"):
        raise ConfigError(
            f"--setup.env_id {env_id!r}: expected a registered BabyAI-* id (e.g. BabyAI-GoToLocal-v0)"
        )
    env = gym.make(env_id)
    out: list[tuple[list[str], int]] = []
    ep, tried = 0, 0
    while ep < episodes:
        obs, _ = _quiet_reset(env, seed + tried)
        tried += 1
        if not keep(obs["mission"]):
            continue
        bot, done = BabyAIBot(env.unwrapped), False
        while not done:
            action = int(bot.replan())
            out.append((describe(obs["mission"], obs["image"]), action))
            obs, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
        ep += 1
    env.close()
    return out


def _quiet_reset(env: Any, seed: int) -> tuple[Any, Any]:
    """``env.reset`` without BabyAI's "Sampling rejected" prints on stdout (the CLI owns stdout)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return env.reset(seed=seed)


def _is_novel(mission: str, novel: list[str]) -> bool:
    return any(goal in mission for goal in novel)


# -- the networks -------------------------------------------------------------------------------------
def build_lm(vocab: int, config: LMPolicyConfig, seed: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=vocab,
        n_positions=max(config.max_len, config.lm_seq),
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(cfg)


def pretrain_lm(lm: nn.Module, ids: torch.Tensor, config: LMPolicyConfig, generator: torch.Generator) -> dict:
    """Causal LM on random windows of the token stream ``ids`` (T,); returns first/last loss."""
    from warmstart.engine import light_fit

    def windows():
        for _ in range(config.lm_steps):
            starts = torch.randint(len(ids) - config.lm_seq, (config.batch_size,), generator=generator)
            yield torch.stack([ids[s : s + config.lm_seq] for s in starts.tolist()])  # (B, L)

    losses: list[float] = []
    if config.lm_steps > 0:
        losses = light_fit(
            lm,
            lambda batch: lm(input_ids=batch, labels=batch).loss,
            windows(),
            steps=config.lm_steps,
            lr=config.lr,
            optimizer=_adamw(),
            grad_clip_norm=None,
            seed=None,
            device=config.device,
        )
        lm.cpu()
    return {
        "lm/loss_first": losses[0] if losses else float("nan"),
        "lm/loss_last": losses[-1] if losses else float("nan"),
    }


def _adamw() -> Any:
    from warmstart.optim import OptimizerConfig

    return OptimizerConfig(weight_decay=0.01)  # torch.optim.AdamW's default decay, as before light_fit


class LMPolicy(nn.Module):
    """GPT-2 transformer (from the LM or random) + a linear action head on the mean-pooled outputs."""

    def __init__(self, transformer: nn.Module, n_embd: int, n_actions: int) -> None:
        super().__init__()
        self.transformer = transformer
        self.head = nn.Linear(n_embd, n_actions)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.transformer(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, D)
        pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)  # (B, D)
        return self.head(pooled)  # (B, A)


def pad(seqs: list[list[int]], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (truncate) to a batch: ids (B, L), mask (B, L)."""
    length = min(max_len, max(len(s) for s in seqs))
    ids = torch.zeros(len(seqs), length, dtype=torch.long)
    mask = torch.zeros(len(seqs), length)
    for i, s in enumerate(seqs):
        s = s[:length]
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1.0
    return ids, mask


def train_bc(
    policy: LMPolicy, data: list[tuple[list[int], int]], config: LMPolicyConfig, generator: torch.Generator
) -> float:
    """Behaviour cloning through the core's in-process loop (:func:`warmstart.engine.light_fit`) on
    ``config.device``; returns the last loss."""
    from warmstart.engine import light_fit

    def batches():
        for _ in range(config.bc_steps):
            idx = torch.randint(len(data), (config.batch_size,), generator=generator).tolist()
            ids, mask = pad([data[i][0] for i in idx], config.max_len)
            yield ids, mask, torch.tensor([data[i][1] for i in idx])

    losses = [float("nan")]
    if config.bc_steps > 0:
        losses = light_fit(
            policy,
            lambda b: F.cross_entropy(policy(b[0], b[1]), b[2]),
            batches(),
            steps=config.bc_steps,
            lr=config.lr,
            optimizer=_adamw(),
            grad_clip_norm=None,
            seed=None,
            device=config.device,
        )
    policy.cpu().eval()
    return losses[-1]


@torch.no_grad()
def accuracy(policy: LMPolicy, data: list[tuple[list[int], int]], max_len: int) -> float:
    hits = 0
    for i in range(0, len(data), 256):
        chunk = data[i : i + 256]
        ids, mask = pad([s for s, _ in chunk], max_len)
        hits += int((policy(ids, mask).argmax(-1) == torch.tensor([a for _, a in chunk])).sum())
    return hits / max(1, len(data))


@torch.no_grad()
def success_rate(policy: LMPolicy, vocab: Vocab, config: LMPolicyConfig, seed: int, keep: Any) -> float:
    import gymnasium as gym

    env = gym.make(config.env_id)
    wins, ep, tried = 0, 0, 0
    while ep < config.eval_episodes:
        obs, _ = _quiet_reset(env, seed + tried)
        tried += 1
        if not keep(obs["mission"]):
            continue
        done, reward = False, 0.0
        while not done:
            ids, mask = pad([vocab.encode(describe(obs["mission"], obs["image"]))], config.max_len)
            obs, reward, terminated, truncated, _ = env.step(int(policy(ids, mask).argmax(-1)))
            done = terminated or truncated
        wins += int(reward > 0)
        ep += 1
    env.close()
    return wins / max(1, config.eval_episodes)


def run_lmpolicy(config: LMPolicyConfig, seed: int, text: str) -> dict[str, Any]:
    """LM-pretrained vs random-init policy at equal BC steps; returns per-arm metrics."""
    start = time.perf_counter()
    novel = config.novel_goals
    train_raw = record_bot(config.env_id, config.episodes, 0, lambda m: not _is_novel(m, novel))
    seen_raw = record_bot(config.env_id, config.heldout_episodes, 500_000, lambda m: not _is_novel(m, novel))
    novel_raw = record_bot(config.env_id, config.heldout_episodes, 900_000, lambda m: _is_novel(m, novel))
    text_words = words(text)
    vocab = Vocab(text_words, config.vocab_size)
    ids = torch.tensor(vocab.encode(text_words))
    if len(ids) <= config.lm_seq:
        raise DataError(
            f"the pretraining text holds {len(ids)} words, fewer than one sequence of {config.lm_seq}"
        )
    train = [(vocab.encode(w), a) for w, a in train_raw]
    seen = [(vocab.encode(w), a) for w, a in seen_raw]
    novel_data = [(vocab.encode(w), a) for w, a in novel_raw]
    generator = torch.Generator().manual_seed(seed)
    lm = build_lm(len(vocab), config, seed)
    lm_metrics = pretrain_lm(lm, ids, config, generator)
    n_actions = 7
    arms = {
        "random init": LMPolicy(build_lm(len(vocab), config, seed).transformer, config.n_embd, n_actions),
        "LM init": LMPolicy(lm.transformer, config.n_embd, n_actions),
    }
    result: dict[str, Any] = {
        "metrics": lm_metrics | {"text_words": float(len(ids)), "vocab": float(len(vocab))}
    }
    for arm, policy in arms.items():
        torch.manual_seed(seed)
        nn.init.normal_(policy.head.weight, std=0.02)
        nn.init.zeros_(policy.head.bias)
        loss = train_bc(policy, train, config, torch.Generator().manual_seed(seed + 1))
        row = {"bc_loss": loss, "acc_seen": accuracy(policy, seen, config.max_len)}
        row["acc_novel"] = accuracy(policy, novel_data, config.max_len)
        if config.eval_episodes > 0:
            row["success_seen"] = success_rate(
                policy, vocab, config, 700_000 + 1000 * seed, lambda m: not _is_novel(m, novel)
            )
            row["success_novel"] = success_rate(
                policy, vocab, config, 800_000 + 1000 * seed, lambda m: _is_novel(m, novel)
            )
        result[arm] = row
    result["seconds"] = time.perf_counter() - start
    result["samples"] = {"train": len(train), "seen": len(seen), "novel": len(novel_data)}
    return result


def run_lmpolicy_bench(config: LMPolicyConfig, out: Path, text_dir: Path | None = None) -> Any:
    """``config.seeds`` runs; report.md + plot.png + results.json in ``out``."""
    from warmstart.eval import write_bench_report

    text = local_text(text_dir)
    arms = ("random init", "LM init")
    keys = ["acc_seen", "acc_novel"] + (["success_seen", "success_novel"] if config.eval_episodes > 0 else [])
    per: dict[str, dict[str, list[float]]] = {k: {a: [] for a in arms} for k in keys}
    lm_loss: list[float] = []
    samples: dict[str, int] = {}
    start = time.perf_counter()
    for seed in range(config.seeds):
        result = run_lmpolicy(config, seed, text)
        lm_loss.append(result["metrics"]["lm/loss_last"])
        samples = result["samples"]
        for k in keys:
            for a in arms:
                per[k][a].append(result[a][k])
        log.info("seed %d: %s", seed, {a: round(result[a]["acc_novel"], 3) for a in arms})
    names = {
        "acc_seen": "held-out action accuracy, seen goals",
        "success_seen": "success rate, seen goals",
        "success_novel": "success rate, novel goals",
    }
    extra = {names[k]: per[k] for k in keys if k != "acc_novel"}
    extra["LM pretraining loss (last step)"] = {"LM init": lm_loss}
    description = (
        f"{config.env_id} with the BabyAI bot as expert; mission + 7x7 symbolic view as words. Tiny GPT-2 "
        f"({config.n_layer} layers, width {config.n_embd}, {config.vocab_size}-word vocabulary) pretrained "
        f"{config.lm_steps} steps of causal LM on local text, vs the same network from random weights; both "
        f"behaviour-cloned {config.bc_steps} steps on {samples.get('train', 0)} bot steps from "
        f"{config.episodes} episodes. Novel goals (never a training mission): {', '.join(config.novel_goals)}. "
        f"Metric: action accuracy against the bot on novel-goal episodes ({samples.get('novel', 0)} steps). "
        f"Wall time {time.perf_counter() - start:.0f} s."
    )
    return write_bench_report(
        out,
        "rl: policy from a pretrained LM (LID) vs random init, equal BC steps",
        per["acc_novel"],
        metric="action accuracy, novel goals",
        higher_is_better=True,
        baseline="random init",
        extra_metrics=extra,
        description=description,
        config=dict(config.__dict__),
    )
