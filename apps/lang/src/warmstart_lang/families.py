"""Model families the lang app serves: detected from the config, each with its objective, metric and separator.

Seed papers: *BERT* (arXiv 1810.04805) and *RoBERTa* (arXiv 1907.11692) for masked-LM further pretraining
with the model's own mask token and its separator between packed documents; *T5* (arXiv 1910.10683) for
span corruption with ``<extra_id_k>`` sentinels; *Masked Language Model Scoring* (Salazar et al., arXiv
1910.14659) for the pseudo-perplexity of encoders. Implemented: the family rule (decoder ``*ForCausalLM``,
encoder ``*ForMaskedLM``: BERT/RoBERTa/XLM-R/DeBERTa-style, encoder-decoder: T5/mT5/UmT5), the
per-family batch transform (the masking and the corruption reuse the core's ``mlm_mask`` and
``random_spans_noise_mask`` / ``span_corrupt``), the per-family held-out metric, and a refusal naming the
class of anything else. Left out: BART-style text infilling (a BART is refused by name) and ELECTRA's
replaced-token detection.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from warmstart.errors import ConfigError, DataError
from warmstart.objectives import IGNORE_INDEX, mlm_mask, random_spans_noise_mask, span_corrupt

log = logging.getLogger(__name__)

FamilyName = Literal["decoder", "encoder", "encoder-decoder"]
SPAN_MODEL_TYPES = ("t5", "mt5", "umt5", "longt5")
"""Encoder-decoders trained with T5's span corruption (their tokenizers carry the sentinels)."""
SERVED = "*ForCausalLM / *LMHeadModel decoders, *ForMaskedLM encoders and T5-style *ForConditionalGeneration"


@dataclass(frozen=True)
class Family:
    """What the app does with one kind of model."""

    name: FamilyName
    auto_class: str
    """The ``transformers`` auto class that loads and reloads it."""
    objective: str
    metric: str
    """Name of the held-out number ``target_ppl`` stands for with this family."""


FAMILIES: dict[str, Family] = {
    "decoder": Family("decoder", "AutoModelForCausalLM", "causal LM (next token)", "perplexity"),
    "encoder": Family(
        "encoder", "AutoModelForMaskedLM", "masked LM (15 %, 80/10/10)", "masked-token perplexity"
    ),
    "encoder-decoder": Family(
        "encoder-decoder",
        "AutoModelForSeq2SeqLM",
        "span corruption (T5: 15 % noise, mean span 3)",
        "span-corruption perplexity",
    ),
}


def _mappings() -> tuple[dict[str, str], dict[str, str]]:
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    return dict(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES), dict(MODEL_FOR_MASKED_LM_MAPPING_NAMES)


def detect_family(config: Any, where: str = "") -> Family:
    """The family of a ``transformers`` config: from its saved architecture class, else its model type.

    Refuses (ConfigError, one line naming the class) a task head (``BertForSequenceClassification``), a
    BART-style encoder-decoder and any model type that is neither a causal nor a masked LM.
    """
    causal, masked = _mappings()
    mt = getattr(config, "model_type", None)
    archs = getattr(config, "architectures", None) or []
    arch = archs[0] if archs else None
    prefix = f"{where}: " if where else ""

    def refuse(why: str) -> ConfigError:
        return ConfigError(f"{prefix}{arch or mt} {why}; the lang app serves {SERVED}")

    if getattr(config, "is_encoder_decoder", False):
        if mt in SPAN_MODEL_TYPES and (arch is None or arch.endswith(("ForConditionalGeneration", "Model"))):
            return FAMILIES["encoder-decoder"]
        raise refuse("is an encoder-decoder without T5's span-corruption sentinels")
    if arch is not None:
        if arch.endswith(("ForCausalLM", "LMHeadModel")):
            return FAMILIES["decoder"]
        if arch.endswith("ForMaskedLM") or (arch.endswith("ForPreTraining") and mt in masked):
            return FAMILIES["encoder"]
        if not arch.endswith("Model") or arch.endswith("PreTrainedModel"):
            raise refuse("is a task head, not a language model")
        log.warning("%s%s has no LM head; a new one is initialised", prefix, arch)
    if mt in masked and not getattr(config, "is_decoder", False):
        return FAMILIES["encoder"]
    if mt in causal:
        return FAMILIES["decoder"]
    raise refuse(f"(model_type {mt!r}) is neither a causal nor a masked language model")


def family_of(model: Any) -> Family:
    return detect_family(model.config)


def auto_class(family: Family) -> Any:
    import transformers

    return getattr(transformers, family.auto_class)


# ----------------------------------------------------------------------------------------------------------
# tokens per family
# ----------------------------------------------------------------------------------------------------------


def separator_id(tokenizer: Any, family: Family | str = "decoder") -> int:
    """The token packed between documents: EOS for decoders and T5, the encoder's ``[SEP]`` / ``</s>``.

    Falls back along (eos, sep, bos) for decoders and (sep, eos) for encoders; a tokenizer with none of
    them is refused with the fix.
    """
    name = family if isinstance(family, str) else family.name
    order = ("sep_token_id", "eos_token_id") if name == "encoder" else ("eos_token_id", "sep_token_id")
    if name == "decoder":
        order += ("bos_token_id",)
    for attr in order:
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    raise DataError(
        f"the tokenizer has no {' / '.join(a.removesuffix('_id') for a in order)} to separate documents; "
        f"set one (tokenizer.add_special_tokens) and save it"
    )


def block_prefix_id(tokenizer: Any, family: Family | str) -> int | None:
    """An encoder's block starts with its ``[CLS]`` / ``<s>`` (RoBERTa's FULL-SENTENCES packing)."""
    name = family if isinstance(family, str) else family.name
    if name != "encoder":
        return None
    for attr in ("cls_token_id", "bos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return None


def mask_token_id(tokenizer: Any, where: str = "") -> int:
    if tokenizer.mask_token_id is None:
        raise DataError(
            f"{where + ': ' if where else ''}a masked LM needs the tokenizer's mask token ([MASK] / <mask>); "
            f"the tokenizer has none: pass the model's own tokenizer or one extended from it"
        )
    return int(tokenizer.mask_token_id)


def sentinel_ids(tokenizer: Any, where: str = "") -> list[int]:
    """``<extra_id_0>``, ``<extra_id_1>``, ... in order (T5's span sentinels)."""
    found: dict[int, int] = {}
    for tok, idx in tokenizer.get_vocab().items():
        m = re.fullmatch(r"<extra_id_(\d+)>", tok)
        if m:
            found[int(m.group(1))] = idx
    if not found:
        raise DataError(
            f"{where + ': ' if where else ''}span corruption needs T5's sentinel tokens <extra_id_0>, ...; the "
            f"tokenizer has none: pass the model's own tokenizer or one extended from it"
        )
    return [found[k] for k in sorted(found)]


# ----------------------------------------------------------------------------------------------------------
# batches per family
# ----------------------------------------------------------------------------------------------------------


class FamilyBatches:
    """Turns packed ``{input_ids, labels}`` blocks into the family's training batches; resumable.

    decoder: unchanged (the model shifts). encoder: BERT masking of 15 % of the positions that are neither
    special tokens nor loss-masked (a MeCo prefix stays visible but is never a target). encoder-decoder:
    T5 span corruption of each block (inputs + EOS, targets + EOS, padded). The masking of batch ``k`` is
    drawn from a generator seeded with ``(seed, k)``, so a resumed stream and a fixed evaluation set see
    the same masks.
    """

    def __init__(
        self,
        blocks: Any,
        tokenizer: Any,
        family: Family,
        *,
        seed: int = 0,
        mlm_probability: float = 0.15,
        noise_density: float = 0.15,
        mean_span_length: float = 3.0,
    ) -> None:
        self.blocks = blocks
        self.family = family
        self.seed = seed
        self.index = 0
        self.mlm_probability = mlm_probability
        self.noise_density = noise_density
        self.mean_span_length = mean_span_length
        self.vocab_size = len(tokenizer)
        self.special = sorted(set(tokenizer.all_special_ids))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.mask_id = mask_token_id(tokenizer) if family.name == "encoder" else None
        self.sentinels = sentinel_ids(tokenizer) if family.name == "encoder-decoder" else []
        self.eos_id = tokenizer.eos_token_id if family.name == "encoder-decoder" else None

    def transform(self, batch: dict[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
        if self.family.name == "decoder":
            return batch
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        ids, labels = batch["input_ids"], batch["labels"]
        if self.family.name == "encoder":
            protected = torch.isin(ids, torch.tensor(self.special, dtype=ids.dtype)) | (
                labels == IGNORE_INDEX
            )
            masked, mlm_labels = mlm_mask(
                ids,
                mask_token_id=int(self.mask_id),  # type: ignore[arg-type]
                vocab_size=self.vocab_size,
                mlm_probability=self.mlm_probability,
                special_tokens_mask=protected,
                generator=g,
            )
            return {"input_ids": masked, "attention_mask": torch.ones_like(ids), "labels": mlm_labels}
        return self._span(ids, labels, g)

    def _span(self, ids: torch.Tensor, labels: torch.Tensor, g: torch.Generator) -> dict[str, torch.Tensor]:
        rows_in, rows_out = [], []
        for row, lab in zip(ids.tolist(), labels.tolist(), strict=True):
            keep = [t for t, lb in zip(row, lab, strict=True) if lb != IGNORE_INDEX] or row
            noise = random_spans_noise_mask(len(keep), self.noise_density, self.mean_span_length, generator=g)
            spans = int((noise[1:] & ~noise[:-1]).sum()) + int(noise[0])
            if spans > len(self.sentinels):
                raise DataError(
                    f"a block of {len(keep)} tokens has {spans} noise spans but the tokenizer only "
                    f"{len(self.sentinels)} sentinels; lower --adapt.block_size"
                )
            x, y = span_corrupt(keep, noise, self.sentinels)
            rows_in.append(x + [self.eos_id])
            rows_out.append(y + [self.eos_id])
        t_in, t_out = max(map(len, rows_in)), max(map(len, rows_out))
        inp = torch.full((len(rows_in), t_in), self.pad_id, dtype=torch.long)  # (B, T_in)
        att = torch.zeros_like(inp)
        lab = torch.full((len(rows_out), t_out), IGNORE_INDEX, dtype=torch.long)  # (B, T_out)
        for i, (x, y) in enumerate(zip(rows_in, rows_out, strict=True)):
            inp[i, : len(x)] = torch.tensor(x)
            att[i, : len(x)] = 1
            lab[i, : len(y)] = torch.tensor(y)
        return {"input_ids": inp, "attention_mask": att, "labels": lab}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for batch in self.blocks:
            out = self.transform(batch, self.index)
            self.index += 1
            yield out

    def state_dict(self) -> dict[str, Any]:
        inner = self.blocks.state_dict() if hasattr(self.blocks, "state_dict") else None
        return {"index": self.index, "blocks": inner}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.index = int(state["index"])
        if state.get("blocks") is not None:
            self.blocks.load_state_dict(state["blocks"])


def prepare_eval(
    blocks: Sequence[dict[str, torch.Tensor]], tokenizer: Any, family: Family, seed: int = 12345
) -> list[dict[str, torch.Tensor]]:
    """Held-out batches with a fixed masking / corruption, so evaluations at different steps compare."""
    fb = FamilyBatches(blocks, tokenizer, family, seed=seed)
    return [fb.transform(b, i) for i, b in enumerate(blocks)]


def count_targets(batch: dict[str, torch.Tensor], family: Family) -> int:
    labels = batch["labels"]
    if family.name == "decoder":
        return int((labels[:, 1:] != IGNORE_INDEX).sum())
    return int((labels != IGNORE_INDEX).sum())


@torch.no_grad()
def family_perplexity(
    model: Any, batches: Sequence[dict[str, torch.Tensor]], family: Family
) -> dict[str, float]:
    """exp(mean NLL per target token): next-token for decoders, masked tokens for encoders, span targets
    for T5. Batches come from :func:`prepare_eval`."""
    from warmstart.eval import perplexity

    device = next(model.parameters()).device
    if family.name == "decoder":
        return perplexity(model, batches, device=device)
    was_training = model.training
    model.eval()
    nll, tokens = 0.0, 0
    try:
        for b in batches:
            b = {k: v.to(device) for k, v in b.items()}
            logits = model(**b).logits.float()  # (B, T, V)
            nll += float(F.cross_entropy(logits.flatten(0, 1), b["labels"].flatten(), reduction="sum"))
            tokens += int((b["labels"] != IGNORE_INDEX).sum())
    finally:
        model.train(was_training)
    mean = nll / max(tokens, 1)
    return {"perplexity": math.exp(min(mean, 700.0)), "nll": mean, "tokens": float(tokens)}


@torch.no_grad()
def pseudo_perplexity(
    model: Any, blocks: Sequence[dict[str, torch.Tensor]], tokenizer: Any, *, max_blocks: int = 4
) -> float:
    """Salazar et al.'s pseudo-perplexity of an encoder: exp(-mean_t log p(x_t | x without t)).

    Every non-special position of each block is masked once (a batch of T copies per block), so it costs
    T forward passes per block: ``max_blocks`` bounds it.
    """
    device = next(model.parameters()).device
    mask_id = mask_token_id(tokenizer)
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    was_training = model.training
    model.eval()
    nll, count = 0.0, 0
    try:
        rows = [row for b in blocks for row in b["input_ids"]][:max_blocks]
        for row in rows:  # row: (T,)
            positions = torch.nonzero(~torch.isin(row, special)).squeeze(1)
            if positions.numel() == 0:
                continue
            copies = row.unsqueeze(0).repeat(positions.numel(), 1)  # (P, T)
            copies[torch.arange(positions.numel()), positions] = mask_id
            logits = model(input_ids=copies.to(device)).logits.float()  # (P, T, V)
            logp = logits[torch.arange(positions.numel()), positions.to(device)].log_softmax(-1)  # (P, V)
            nll -= float(logp.gather(1, row[positions].to(device).unsqueeze(1)).sum())
            count += positions.numel()
    finally:
        model.train(was_training)
    return math.exp(min(nll / max(count, 1), 700.0))
