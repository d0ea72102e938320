"""The adaptation pipeline: expand a model's vocabulary, continually pretrain it on target text, evaluate it.

Seed papers: *An Empirical Comparison of Vocabulary Expansion and Initialization Approaches for Language
Models* (arXiv 2407.05841; CW2V, convex, multivariate), *RedWhale* (arXiv 2408.11294; subtoken init of
embeddings *and* head, then staged training: embeddings + head first, then everything / LoRA), *Bailong*
(arXiv 2404.00862; QLoRA with the zip-tie/FVT init), *Continual Pre-Training of LLMs: how to (re)warm*
(arXiv 2308.04014) and *Beyond Cosine Decay* (arXiv 2503.02844) for the schedules, *Efficient Continual
Pre-training by Mitigating the Stability Gap* (arXiv 2406.14833) for replay of source text.

Everything heavy is the core's: ``warmstart.init.expand_vocabulary`` (row inits), ``warmstart.peft``
(LoRA / QLoRA with trainable new rows), ``warmstart.engine`` (loop, schedules, checkpoints),
``warmstart.eval.perplexity``. This module wires them: two engine runs for the staged schedule, an atomic
``save_pretrained`` of the merged result. Every served family trains with its own objective and is
measured with its own metric (:mod:`warmstart_lang.families`: CLM perplexity, masked-token perplexity,
span-corruption perplexity). Left out: RedWhale's alternating layer-group stage.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from warmstart.engine import Engine, EngineConfig, RunSummary
from warmstart.errors import ConfigError
from warmstart_lang.data import MeCoConfig, TextBlockStream, eval_blocks
from warmstart_lang.families import (
    Family,
    FamilyBatches,
    block_prefix_id,
    count_targets,
    family_of,
    family_perplexity,
    prepare_eval,
    separator_id,
)

log = logging.getLogger(__name__)

EXPANSION_FILE = "warmstart_expansion.json"
InitMethod = Literal["random", "mean", "multivariate", "fvt", "convex", "cw2v"]


# ----------------------------------------------------------------------------------------------------------
# expand
# ----------------------------------------------------------------------------------------------------------


def expand_model(
    model: Any,
    base_tokenizer: Any,
    new_tokenizer: Any,
    *,
    method: InitMethod = "fvt",
    head_method: InitMethod | None = None,
    seed: int = 0,
    texts: Sequence[str] | None = None,
    cw2v_steps: int | None = 300,
    memory_budget: int | None = None,
    where: str = "expand",
    base_name: str = "<model>",
    cw2v: Any = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Grow ``model`` in place to ``new_tokenizer`` with the core's ``expand_vocabulary``; returns a record.

    A new tokenizer that does not keep every old token at its old id is refused (it would overwrite old
    rows). The memory needed is estimated (and refused if too large) before anything is allocated.
    ``cw2v`` trains on ``texts`` (target text) for at most ``cw2v_steps`` steps (``cw2v``: a full
    :class:`~warmstart.init.CW2VConfig` instead).
    """
    from warmstart.init import CW2VConfig, expand_vocabulary
    from warmstart_lang.models import check_expansion_memory, check_keeps_old_ids

    check_keeps_old_ids(base_tokenizer, new_tokenizer, where, base=base_name)
    new_rows = max(max(new_tokenizer.get_vocab().values()) + 1, model.get_input_embeddings().weight.shape[0])
    check_expansion_memory(model, new_rows, budget=memory_budget, where=where)
    needs_text = "cw2v" in (method, head_method)
    if needs_text and not texts:
        raise ConfigError(f"{where}: method cw2v needs target text (--data)")
    info = expand_vocabulary(
        model,
        base_tokenizer,
        new_tokenizer,
        method,
        head_method=head_method,
        seed=seed,
        texts=list(texts) if needs_text and texts else None,
        cw2v=(cw2v or CW2VConfig(max_steps=cw2v_steps, rank=64)) if needs_text else None,
        progress=progress,
    )
    n_new = len(info.new_token_ids)
    unseen = 0
    if needs_text and texts and n_new:  # cw2v leaves a token the text never shows at ~ the mean row
        seen = {i for t in texts for i in new_tokenizer(t, add_special_tokens=False)["input_ids"]}
        unseen = sum(1 for i in info.new_token_ids if i not in seen)
    return {
        "method": info.method,
        "head_method": info.head_method,
        "old_rows": info.old_rows,
        "new_rows": info.new_rows,
        "new_token_ids": info.new_token_ids,
        "tied": info.tied,
        "fvt_fallbacks": info.fvt_fallbacks,
        "fvt_fallback_rate": info.fvt_fallbacks / n_new if n_new and "fvt" in (method, head_method) else 0.0,
        "cw2v_steps_run": len(info.cw2v_losses),
        "cw2v_stopped": info.cw2v_stopped,
        "cw2v_heldout": info.cw2v_heldout,
        "cw2v_unseen_rate": unseen / n_new if n_new else 0.0,
        "family": family_of(model).name,
    }


def save_model(
    model: Any,
    tokenizer: Any,
    out: Path,
    extra: dict[str, Any] | None = None,
    *,
    replace: bool = False,
    extra_name: str = EXPANSION_FILE,
    state_dict: dict[str, Any] | None = None,
) -> Path:
    """``save_pretrained`` model + tokenizer into a temporary directory, then rename it to ``out``.

    ``replace=True`` swaps out an existing ``out`` (a resumed run re-saving its model) only once the new
    one is complete. ``state_dict``: the weights to write instead of the model's own (an FSDP-sharded
    model's gathered ones, :func:`warmstart.engine.checkpoint.full_state_dict`).
    """
    import shutil
    import tempfile

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not replace:
        raise ConfigError(f"{out} already exists and is not empty; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model.save_pretrained(tmp, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        if extra is not None:
            (tmp / extra_name).write_text(json.dumps(extra, indent=1))
        if out.exists():
            old = out.with_name(f".{out.name}.old-{tmp.name[-8:]}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ----------------------------------------------------------------------------------------------------------
# continual pretraining
# ----------------------------------------------------------------------------------------------------------


@dataclass
class AdaptConfig:
    """How to continually pretrain on the target language."""

    mode: Literal["full", "lora", "qlora"] = "full"
    """full fine-tuning, LoRA (new embedding rows train too), or QLoRA (4-bit base, CUDA only)."""
    embed_steps: int = 0
    """Stage 1: train only the input embeddings and output head for this many steps (0: no stage 1)."""
    block_size: int = 64
    """Tokens per packed training block."""
    replay_ratio: float = 0.0
    """Share of documents drawn from the replay (source-language) files."""
    meco: MeCoConfig = field(default_factory=MeCoConfig)
    """MeCo metadata conditioning (JSONL documents with a url field)."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: float = 16.0
    """LoRA alpha (scale = alpha / r)."""
    shuffle_buffer: int = 256
    """Documents read ahead and picked from at random (seeded by engine.train.seed); 0 keeps file order."""
    eval_blocks: int = 32
    """Held-out blocks for target/source perplexity."""
    text_key: str = "text"
    """JSONL field with the document text."""
    distill: DistillConfig = field(default_factory=lambda: DistillConfig())
    """Self-distillation during further pretraining (Lee et al., arXiv 2210.02871)."""
    prompt: PromptConfig = field(default_factory=lambda: PromptConfig())
    """Prompt-based continued pretraining (PCP, Shi & Lipani, arXiv 2305.01711)."""


@dataclass
class DistillConfig:
    """Self-distillation for further pretraining (Lee et al., arXiv 2210.02871): the student's last hidden
    states are pulled towards a frozen teacher's, next to the family's objective."""

    weight: float = 0.0
    """Weight of the hidden-state term (0: off; the paper's lambda)."""
    teacher: str = "initial"
    """'initial': a frozen copy of the model at the start of this run; a path / hub id: that model (the
    paper's setting: the model already further-pretrained on the target text, with the same tokenizer)."""
    kind: Literal["mse", "cosine"] = "mse"
    """Distance between student and teacher hidden states (the paper: MSE)."""


@dataclass
class PromptConfig:
    """Prompt-based continued pretraining (PCP, arXiv 2305.01711): every training document is wrapped in
    the downstream task's template, with its (pseudo-)label's verbaliser word filled in, so MLM further
    pretraining sees the prompt format."""

    template: str | None = None
    """e.g. '{text} It was {label}.' (None: off); {text} is the document, {label} its verbalised label."""
    label_key: str = "label"
    """JSONL field with the (pseudo-)label of each document."""
    verbalizer: dict[str, str] = field(default_factory=dict)
    """label -> word (e.g. {'0': 'terrible', '1': 'great'}); a label missing here is used as it is."""


def prompt_transform(cfg: PromptConfig) -> Any:
    """``(text, record) -> text`` wrapping a document in the PCP template (None when no template)."""
    if cfg.template is None:
        return None
    if "{text}" not in cfg.template:
        raise ConfigError(f"adapt.prompt.template={cfg.template!r} has no {{text}} placeholder")
    needs_label = "{label}" in cfg.template

    def apply(text: str, record: dict[str, Any]) -> str:
        label = ""
        if needs_label:
            if cfg.label_key not in record:
                raise ConfigError(
                    f"adapt.prompt.template uses {{label}} but a document has no {cfg.label_key!r} field; "
                    f"set --adapt.prompt.label_key or write pseudo-labels into the JSONL"
                )
            raw = str(record[cfg.label_key])
            label = cfg.verbalizer.get(raw, raw)
        return cfg.template.replace("{text}", text).replace("{label}", label)  # type: ignore[union-attr]

    return apply


class AdaptTask:
    """The family's loss on its batches (CLM / MLM / span corruption); ``evaluate()`` gives target and source
    perplexity in the family's metric and keeps a history."""

    def __init__(
        self,
        model: Any,
        target_eval: list[dict],
        source_eval: list[dict] | None = None,
        eval_every: int = 0,
        family: Family | None = None,
    ) -> None:
        self.model = model
        self.family = family or family_of(model)
        self.target_eval = target_eval
        self.source_eval = source_eval or []
        self.eval_every = eval_every
        self.history: list[tuple[int, dict[str, float]]] = []
        self.step_offset = 0
        self._calls = 0
        self.final_step: int | None = None

    teacher: Any = None
    distill: DistillConfig | None = None
    depths: Sequence[int] | None = None
    """Sub-model stage (bert2BERT's two-stage training): each step trains the bottom d layers, d drawn
    from ``depths`` with a generator seeded by ``(seed, call)``."""
    seed: int = 0

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        metrics: dict[str, Any] = {"tokens": count_targets(batch, self.family)}
        self._losses = getattr(self, "_losses", 0) + 1
        if self.depths:
            import random

            from warmstart_lang.growth import bottom_layers

            depth = random.Random(self.seed * 1_000_003 + self._losses).choice(list(self.depths))
            metrics["depth"] = depth
            with bottom_layers(self.model, depth):
                return self.model(**batch).loss, metrics
        if self.teacher is None or self.distill is None:
            return self.model(**batch).loss, metrics
        from warmstart.objectives import self_distillation_loss

        out = self.model(**batch, output_hidden_states=True)
        with torch.no_grad():
            target = self.teacher(**batch, output_hidden_states=True)
        student_h, teacher_h = _last_hidden(out), _last_hidden(target)
        mask = batch.get("attention_mask")
        term = self_distillation_loss(student_h, teacher_h, kind=self.distill.kind, mask=mask)
        metrics["distill"] = float(term.detach())
        return out.loss + self.distill.weight * term, metrics

    def measure(self) -> dict[str, float]:
        out = {"target_ppl": family_perplexity(self.model, self.target_eval, self.family)["perplexity"]}
        if self.source_eval:
            out["source_ppl"] = family_perplexity(self.model, self.source_eval, self.family)["perplexity"]
        return out

    def evaluate(self) -> dict[str, float]:
        self._calls += 1
        result = self.measure()
        step = self._calls * self.eval_every if self.eval_every else -1
        if self.final_step is not None and (step < 0 or step > self.final_step):
            step = self.final_step
        self.history.append((self.step_offset + step, result))
        return result


def _last_hidden(out: Any) -> torch.Tensor:
    """The encoder's (or decoder's) last hidden states; for T5 the encoder output."""
    states = getattr(out, "hidden_states", None) or getattr(out, "encoder_hidden_states", None)
    if not states:
        raise ConfigError("self-distillation needs a model that returns hidden states")
    return states[-1]


def load_teacher(cfg: DistillConfig, model: Any) -> Any:
    """The frozen teacher: a copy of ``model`` ('initial') or the model at ``cfg.teacher``."""
    from warmstart.objectives import make_teacher

    if cfg.teacher == "initial":
        return make_teacher(model)
    from warmstart_lang.models import load_model

    teacher = load_model(cfg.teacher)
    rows, want = teacher.get_input_embeddings().weight.shape[0], model.get_input_embeddings().weight.shape[0]
    if rows != want or type(teacher) is not type(model):
        raise ConfigError(
            f"adapt.distill.teacher={cfg.teacher}: a {type(teacher).__name__} with {rows} rows cannot teach a "
            f"{type(model).__name__} with {want}; the teacher must be this model further-pretrained"
        )
    return make_teacher(teacher)


def family_eval_batches(
    tokenizer: Any, texts: Sequence[str], family: Family, block_size: int, max_blocks: int
) -> list[dict[str, torch.Tensor]]:
    """Held-out text as the family's fixed evaluation batches (separator, CLS, masking per family)."""
    blocks = eval_blocks(
        tokenizer,
        texts,
        block_size,
        max_blocks=max_blocks,
        separator=separator_id(tokenizer, family),
        block_prefix=block_prefix_id(tokenizer, family),
    )
    return prepare_eval(blocks, tokenizer, family)


def _trainable_embeddings_only(model: Any) -> list[torch.nn.Parameter]:
    for p in model.parameters():
        p.requires_grad_(False)
    params = [model.get_input_embeddings().weight]
    head = model.get_output_embeddings()
    if head is not None and head.weight is not params[0]:
        params.append(head.weight)
    if head is not None and getattr(head, "bias", None) is not None:  # BERT's prediction bias
        params.append(head.bias)
    for p in params:
        p.requires_grad_(True)
    return params


def _stage_config(engine: EngineConfig, steps: int) -> EngineConfig:
    cfg = copy.deepcopy(engine)
    cfg.train.max_steps = steps
    if cfg.schedule.warmup_steps >= steps:
        cfg.schedule.warmup_steps = max(0, steps // 10)
    return cfg


@dataclass
class AdaptResult:
    model: Any
    summaries: list[RunSummary]
    history: list[tuple[int, dict[str, float]]]
    final: dict[str, float]
    tokens_per_s: float
    trainable_params: int


def continual_pretrain(
    model: Any,
    tokenizer: Any,
    target_files: Sequence[Path],
    *,
    engine: EngineConfig,
    adapt: AdaptConfig,
    target_eval_texts: Sequence[str],
    source_eval_texts: Sequence[str] = (),
    replay_files: Sequence[Path] = (),
    new_token_ids: Sequence[int] | None = None,
    run_dir: Path | None = None,
    resume_from: Path | None = None,
    submodel_steps: int = 0,
    submodel_depths: Sequence[int] = (),
) -> AdaptResult:
    """Staged continual pretraining of ``model`` on ``target_files`` (see :class:`AdaptConfig`).

    Stage 1 (``adapt.embed_steps`` > 0) trains only embeddings + head (metrics in ``run_dir/stage1``, no
    checkpoints); stage 2 (metrics and checkpoints in ``run_dir``; ``resume_from`` resumes it) trains the rest of the
    budget (``engine.train.max_steps`` in total) in full or with LoRA (the ``new_token_ids`` rows of the
    embeddings and an untied head train next to the adapters). LoRA weights are merged before returning.
    """
    if adapt.mode == "qlora" and not torch.cuda.is_available():
        raise ConfigError(
            "mode=qlora needs a CUDA GPU (bitsandbytes 4-bit kernels); use --adapt.mode lora on this machine"
        )
    if adapt.mode == "qlora" and not hasattr(model, "peft_config"):
        raise ConfigError("mode=qlora needs the model loaded in 4-bit with LoRA: use load_qlora_model()")
    total = engine.train.max_steps
    stage1 = min(adapt.embed_steps, total)  # on resume stage 1 is done: the checkpoint is stage 2's
    if adapt.embed_steps >= total:
        raise ConfigError(
            f"adapt.embed_steps={adapt.embed_steps} leaves no steps of engine.train.max_steps={total} for stage 2"
        )
    batch = engine.train.micro_batch_size
    total_tokens = total * engine.train.grad_accum_steps * batch * adapt.block_size
    family = family_of(model)
    blocks = TextBlockStream(
        tokenizer,
        target_files,
        block_size=adapt.block_size,
        batch_size=batch,
        replay_files=replay_files,
        replay_ratio=adapt.replay_ratio,
        meco=adapt.meco,
        total_tokens=total_tokens,
        text_key=adapt.text_key,
        shuffle_buffer=adapt.shuffle_buffer,
        seed=engine.train.seed,
        separator=separator_id(tokenizer, family),
        block_prefix=block_prefix_id(tokenizer, family),
        transform=prompt_transform(adapt.prompt),
    )
    stream = FamilyBatches(blocks, tokenizer, family, seed=engine.train.seed)
    t_eval = family_eval_batches(tokenizer, target_eval_texts, family, adapt.block_size, adapt.eval_blocks)
    s_eval = (
        family_eval_batches(tokenizer, source_eval_texts, family, adapt.block_size, adapt.eval_blocks)
        if source_eval_texts
        else None
    )
    task = AdaptTask(model, t_eval, s_eval, eval_every=engine.train.eval_every, family=family)
    task.history.append((0, task.measure()))
    if adapt.distill.weight > 0:
        task.teacher, task.distill = load_teacher(adapt.distill, model), adapt.distill
    task.seed = engine.train.seed
    summaries: list[RunSummary] = []
    if submodel_steps + stage1 >= total:
        raise ConfigError(f"grow.stage1_steps={submodel_steps} leaves no steps of {total} for stage 2")
    if submodel_steps and resume_from is None:  # bert2BERT stage 1: sub-models of the grown model
        cfg = _stage_config(engine, submodel_steps)
        cfg.checkpoint.every = 0
        cfg.checkpoint.save_final = False
        task.depths, task.final_step = list(submodel_depths), submodel_steps
        summaries.append(Engine(cfg, run_dir / "submodels" if run_dir else None).fit(task, stream))
        task.depths = None
    trainable_before = [p.requires_grad for p in model.parameters()]  # a QLoRA model arrives peft-wrapped
    if stage1 and resume_from is None:
        trainable = _trainable_embeddings_only(model)
        cfg = _stage_config(engine, stage1)
        cfg.checkpoint.every = 0
        cfg.checkpoint.save_final = False
        task.step_offset, task._calls, task.final_step = submodel_steps, 0, stage1
        summaries.append(Engine(cfg, run_dir / "stage1" if run_dir else None).fit(task, stream))
        log.info("stage 1 (embeddings + head, %d params) done", sum(p.numel() for p in trainable))
    stage1 += submodel_steps  # every step before stage 2
    for p, flag in zip(model.parameters(), trainable_before, strict=True):
        p.requires_grad_(flag)
    if adapt.mode == "lora" or (adapt.mode == "qlora" and not hasattr(model, "peft_config")):
        from warmstart.peft.lora import apply_lora

        task.model = model = apply_lora(
            model,
            r=adapt.lora_r,
            alpha=adapt.lora_alpha,
            trainable_token_indices=list(new_token_ids) if new_token_ids else None,
        )
    trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    cfg = _stage_config(engine, total - stage1)
    task.step_offset = stage1
    task._calls = 0
    task.final_step = total - stage1
    summaries.append(Engine(cfg, run_dir).fit(task, stream, resume_from=resume_from))
    if adapt.mode in ("lora", "qlora"):
        from warmstart.peft.lora import merge_lora

        model = merge_lora(model)
    seconds = sum(s.seconds for s in summaries)
    tokens = sum((s.tokens_per_s or 0.0) * s.seconds for s in summaries)
    return AdaptResult(
        model=model,
        summaries=summaries,
        history=task.history,
        final=task.history[-1][1],
        tokens_per_s=tokens / max(seconds, 1e-9),
        trainable_params=trainable_params,
    )


def load_qlora_model(path: str | Path, adapt: AdaptConfig, new_token_ids: Sequence[int] | None = None) -> Any:
    """The model at ``path`` in 4-bit NF4 with LoRA (and trainable new rows) via ``warmstart.peft`` (CUDA)."""
    from warmstart.peft.lora import load_qlora

    return load_qlora(
        str(path),
        r=adapt.lora_r,
        alpha=adapt.lora_alpha,
        trainable_token_indices=list(new_token_ids) if new_token_ids else None,
    )


# ----------------------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_model(
    model: Any,
    tokenizer: Any,
    target_texts: Sequence[str],
    source_texts: Sequence[str] = (),
    *,
    block_size: int = 64,
    max_blocks: int = 64,
    pseudo_blocks: int = 4,
) -> dict[str, float]:
    """Target and source perplexity in the family's metric (forgetting), fertility on the target text, eval
    throughput (tokens/s); for an encoder also the pseudo-perplexity of ``pseudo_blocks`` target blocks."""
    from warmstart_lang.families import pseudo_perplexity
    from warmstart_lang.tokenizer import fertility

    family = family_of(model)
    out: dict[str, float] = {}
    batches = family_eval_batches(tokenizer, target_texts, family, block_size, max_blocks)
    start = time.perf_counter()
    result = family_perplexity(model, batches, family)
    seconds = time.perf_counter() - start
    out["target_ppl"] = result["perplexity"]
    out["eval_tokens_per_s"] = result["tokens"] / max(seconds, 1e-9)
    if source_texts:
        source = family_eval_batches(tokenizer, source_texts, family, block_size, max_blocks)
        out["source_ppl"] = family_perplexity(model, source, family)["perplexity"]
    if family.name == "encoder" and pseudo_blocks > 0:
        plain = eval_blocks(
            tokenizer,
            target_texts,
            block_size,
            max_blocks=pseudo_blocks,
            separator=separator_id(tokenizer, family),
            block_prefix=block_prefix_id(tokenizer, family),
        )
        out["target_pseudo_ppl"] = pseudo_perplexity(model, plain, tokenizer, max_blocks=pseudo_blocks)
    fert = fertility(tokenizer, target_texts)
    out["target_fertility"] = fert.fertility
    out["target_coverage"] = fert.coverage
    return {k: (v if math.isfinite(v) else float("nan")) for k, v in out.items()}
