"""Zecoler-style prompt tuning of a frozen code LM, transferred zero-shot across programming languages.

Seed paper: "Zero-Shot Code Representation Learning via Prompt Tuning" (Zecoler, arXiv 2404.08947): recast a
downstream task into the model's pretraining form with trainable prompt tokens on a frozen model, train
them on one programming language and apply them zero-shot to another. Here the pretraining form is causal
LM scoring: a snippet is followed by a comment ``kind: <label>`` (``#`` in Python, ``//`` in JavaScript) and
the label whose continuation is most likely wins; the soft prompt is ``peft``'s prompt tuning (virtual
tokens prepended to the input embeddings, the LM frozen). The task is classifying a generated function's
family (string / list / arithmetic); the LM is pretrained on both languages, every method is trained on
Python snippets only and tested on JavaScript ones (``split="language"``; ``split="templates"`` keeps one
language and tests on unseen templates). Baselines on the same data and steps: a linear probe on frozen
mean-pooled features (the core's ``linear_probe``), full fine-tuning with the same LM-form loss, and the
same architecture trained from random weights (scratch). Left out: the paper's MLM (CodeBERT) form and its
other tasks (clone detection, code search); JavaScript is not executed (no runtime is needed for it).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from warmstart_code.data import FAMILIES, TEMPLATES, CodeTask, make_task

log = logging.getLogger(__name__)


@dataclass
class PromptTuneConfig:
    """Prompt-tuning run."""

    virtual_tokens: int = 8
    """Trainable soft-prompt tokens."""
    steps: int = 60
    """Optimizer steps (the same for every method compared)."""
    lr: float = 3e-2
    """Learning rate of the soft prompt (full fine-tuning uses lr / 30)."""
    batch_size: int = 16
    """Examples per step."""
    seed: int = 0
    """Seed of data order and initialisation."""


def understanding_split(
    n_train: int, n_test: int, seed: int = 0, split: str = "language"
) -> tuple[list[CodeTask], list[CodeTask]]:
    """Family-classification snippets. ``language``: Python snippets train, JavaScript snippets test (every
    template); ``templates``: Python only, even-indexed templates of each family train, odd-indexed test."""
    import random

    from warmstart_code.data import generate_js_tasks, generate_tasks

    if split == "language":
        train = generate_tasks(n_train, seed=seed, start_index=300_000)
        return train, generate_js_tasks(n_test, seed=seed + 1, start_index=400_000)
    if split != "templates":
        raise ValueError(f"split={split!r}: use 'language' or 'templates'")
    rng = random.Random(seed)
    by_family = {f: [t for t in TEMPLATES if t[0] == f] for f in FAMILIES}
    train_t = [t for f in FAMILIES for t in by_family[f][0::2]]
    test_t = [t for f in FAMILIES for t in by_family[f][1::2]]
    train = [make_task(rng.choice(train_t), i, rng, n_tests=1) for i in range(n_train)]
    test = [make_task(rng.choice(test_t), n_train + i, rng, n_tests=1) for i in range(n_test)]
    return train, test


def snippet(task: CodeTask) -> str:
    """The code without its docstring / doc comment (that would name the operation), then the label cue."""
    if task.language == "javascript":
        return f"function {task.entry_point}(x) {{\n{task.canonical_solution}// kind:"
    return f"def {task.entry_point}(x):\n{task.canonical_solution}# kind:"


def bilingual_corpus_tasks(n: int, seed: int) -> list[CodeTask]:
    """Pretraining programs for a code LM that has seen both languages: half Python, half JavaScript (code
    only: no label ever appears in pretraining)."""
    from warmstart_code.data import generate_js_tasks, generate_tasks

    return generate_tasks(n - n // 2, seed=seed) + generate_js_tasks(n // 2, seed=seed + 7, start_index=n)


def _batch_scores(model, tokenizer, texts: Sequence[str], device) -> torch.Tensor:
    """log p(' label' | text) summed over the label's tokens, for every label: (B, L)."""
    scores = []
    for label in FAMILIES:
        full = [t + " " + label for t in texts]
        enc = tokenizer(full, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        n_label = len(tokenizer(" " + label, add_special_tokens=False)["input_ids"])
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits  # (B, T', V)
        logits = logits[:, -enc["input_ids"].shape[1] :]  # drop virtual-token positions if any
        logp = (
            F.log_softmax(logits[:, :-1].float(), -1)
            .gather(-1, enc["input_ids"][:, 1:].unsqueeze(-1))
            .squeeze(-1)
        )
        scores.append(logp[:, -n_label:].sum(-1))  # left padding: the label is at the end  (B,)
    return torch.stack(scores, -1)  # (B, L)


def _labels(tasks: Sequence[CodeTask]) -> torch.Tensor:
    return torch.tensor([FAMILIES.index(t.family) for t in tasks])


def _train_lm_form(
    model, params, tokenizer, train: Sequence[CodeTask], cfg: PromptTuneConfig, lr: float
) -> None:
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    labels = _labels(train)
    texts = [snippet(t) for t in train]
    model.train()
    device = next(model.parameters()).device
    for _ in range(cfg.steps):
        idx = torch.randint(len(train), (cfg.batch_size,), generator=gen)
        scores = _batch_scores(model, tokenizer, [texts[i] for i in idx], device)
        loss = F.cross_entropy(scores, labels[idx].to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


@torch.no_grad()
def lm_form_accuracy(model, tokenizer, tasks: Sequence[CodeTask]) -> float:
    device = next(model.parameters()).device
    pred = _batch_scores(model, tokenizer, [snippet(t) for t in tasks], device).argmax(-1).cpu()
    return float((pred == _labels(tasks)).float().mean())


def prompt_tune(lm, tokenizer, train: Sequence[CodeTask], cfg: PromptTuneConfig):
    """peft prompt tuning on a frozen copy of ``lm``; returns the peft model."""
    from peft import PromptTuningConfig, TaskType, get_peft_model

    torch.manual_seed(cfg.seed)
    peft_model = get_peft_model(
        copy.deepcopy(lm),
        PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=cfg.virtual_tokens),
    )
    params = [p for p in peft_model.parameters() if p.requires_grad]
    _train_lm_form(peft_model, params, tokenizer, train, cfg, cfg.lr)
    return peft_model


def full_finetune(lm, tokenizer, train: Sequence[CodeTask], cfg: PromptTuneConfig):
    model = copy.deepcopy(lm)
    _train_lm_form(model, list(model.parameters()), tokenizer, train, cfg, cfg.lr / 30)
    return model


@torch.no_grad()
def features(lm, tokenizer, tasks: Sequence[CodeTask]) -> torch.Tensor:
    """Mean-pooled last hidden states of the frozen LM: (N, D)."""
    enc = tokenizer([snippet(t) for t in tasks], return_tensors="pt", padding=True, add_special_tokens=False)
    out = lm(
        input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_hidden_states=True
    ).hidden_states[-1]  # (N, T, D)
    mask = enc["attention_mask"].unsqueeze(-1).float()
    return (out * mask).sum(1) / mask.sum(1)


def compare(
    lm, tokenizer, train: Sequence[CodeTask], test: Sequence[CodeTask], cfg: PromptTuneConfig, scratch=None
) -> dict[str, float]:
    """Test accuracy of zero-shot LM form, prompt tuning, linear probe, full fine-tuning and — when
    ``scratch`` (the same architecture with random weights) is given — full fine-tuning from scratch."""
    from warmstart.eval import linear_probe

    zero = lm_form_accuracy(lm, tokenizer, test)
    pt = lm_form_accuracy(prompt_tune(lm, tokenizer, train, cfg), tokenizer, test)
    probe = linear_probe(
        features(lm, tokenizer, train),
        _labels(train),
        features(lm, tokenizer, test),
        _labels(test),
        num_classes=len(FAMILIES),
        seed=cfg.seed,
    ).accuracy
    ft = lm_form_accuracy(full_finetune(lm, tokenizer, train, cfg), tokenizer, test)
    out = {"zero-shot": zero, "prompt tuning": pt, "linear probe": float(probe), "full fine-tuning": ft}
    if scratch is not None:
        out["scratch (random init + FT)"] = lm_form_accuracy(
            full_finetune(scratch, tokenizer, train, cfg), tokenizer, test
        )
    return out
