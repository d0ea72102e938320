"""Target-language tokenizers: train one (BPE or Unigram, HF ``tokenizers``), extend a base tokenizer with the
target tokens it lacks, and measure fertility (tokens per word) and coverage.

Seed papers: *An Empirical Comparison of Vocabulary Expansion and Initialization Approaches for Language
Models* (arXiv 2407.05841) and *RedWhale* (arXiv 2408.11294), which extend an English-centric vocabulary
with target-language tokens before continual pretraining; *Bailong* (arXiv 2404.00862) does the same for
Traditional Chinese. Implemented: a tokenizer trained with the base tokenizer's own pipeline
(``train_new_from_iterator``: same normaliser, pre-tokenizer and model type), merged into the base by
appending the new vocabulary entries (and, for BPE, the new merges after the old ones) so every old id and
old segmentation rule is kept. Left out: SentencePiece ``.model`` files (slow tokenizers) and re-ordering
merges by joint frequency.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from warmstart.errors import ConfigError, DataError

log = logging.getLogger(__name__)

EOS = "<|endoftext|>"
PAD = "<pad>"
UNK = "<unk>"


def atomic_save(obj: Any, out: Path) -> Path:
    """``obj.save_pretrained`` into a temporary sibling directory, then rename it to ``out`` (never half)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} already exists and is not empty; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        obj.save_pretrained(tmp)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


TokenizerKind = Literal["bpe", "unigram", "bert", "roberta", "xlm-roberta", "deberta-v2", "t5"]
T5_SENTINELS = 100


def train_tokenizer(texts: Sequence[str], kind: TokenizerKind = "bpe", vocab_size: int = 1000) -> Any:
    """A fresh ``PreTrainedTokenizerFast`` trained with HF ``tokenizers`` in the layout of a model family.

    bpe: byte-level BPE, unigram: Metaspace Unigram (decoders, ``<|endoftext|>`` as EOS); bert: WordPiece
    with BERT's normaliser and ``[CLS]``/``[SEP]``/``[MASK]``; roberta: byte-level BPE with ``<s>``/``</s>``/
    ``<mask>``; xlm-roberta / deberta-v2: Metaspace Unigram with their special tokens; t5: Metaspace Unigram
    with ``</s>`` and 100 ``<extra_id_k>`` sentinels.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if not texts:
        raise DataError("no text to train a tokenizer on")
    special: dict[str, Any]
    if kind in ("bpe", "roberta"):
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=kind == "roberta")
        tok.decoder = decoders.ByteLevel()
        names = [EOS, PAD] if kind == "bpe" else ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=names,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        if kind == "bpe":
            special = {"eos_token": EOS, "pad_token": PAD}
        else:
            special = dict(bos_token="<s>", cls_token="<s>", eos_token="</s>", sep_token="</s>")
            special |= dict(pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")
    elif kind == "bert":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=False, handle_chinese_chars=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        names = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=names, show_progress=False)
        special = dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]")
        special["mask_token"] = "[MASK]"
    elif kind in ("unigram", "xlm-roberta", "deberta-v2", "t5"):
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        if kind == "unigram":
            names, special = [EOS, PAD, UNK], {"eos_token": EOS, "pad_token": PAD, "unk_token": UNK}
        elif kind == "xlm-roberta":
            names = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
            special = dict(bos_token="<s>", cls_token="<s>", eos_token="</s>", sep_token="</s>")
            special |= dict(pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")
        elif kind == "deberta-v2":
            names = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
            special = dict(pad_token="[PAD]", cls_token="[CLS]", bos_token="[CLS]", sep_token="[SEP]")
            special |= dict(eos_token="[SEP]", unk_token="[UNK]", mask_token="[MASK]")
        else:
            sentinels = [f"<extra_id_{k}>" for k in range(T5_SENTINELS)]
            names = ["<pad>", "</s>", "<unk>", *sentinels]
            special = dict(pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
            special["additional_special_tokens"] = sentinels
        unk = special["unk_token"]
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=names, unk_token=unk, show_progress=False
        )
    else:
        raise ConfigError(f"kind={kind!r} is unknown: use one of {TokenizerKind.__args__}")  # type: ignore[attr-defined]
    tok.train_from_iterator(texts, trainer)
    if kind in ("bert", "deberta-v2", "roberta", "xlm-roberta"):
        cls, sep = special["cls_token"], special["sep_token"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}",
            pair=f"{cls} $A {sep} $B {sep}",
            special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))],
        )
    elif kind == "t5":
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))]
        )
    return PreTrainedTokenizerFast(tokenizer_object=tok, **special)


def load_tokenizer(name_or_path: str | Path) -> Any:
    """``AutoTokenizer.from_pretrained`` of a local directory or hub id, with a one-line error."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{name_or_path}: cannot load a tokenizer ({str(exc).splitlines()[0][:120]}); pass a directory "
            f"with tokenizer.json or a hub id"
        ) from None
    if not tok.is_fast:
        raise ConfigError(f"{name_or_path}: a slow (Python) tokenizer cannot be extended; use a fast one")
    return tok


def _merge_model(base: dict[str, Any], target: dict[str, Any], max_new: int | None) -> tuple[dict, list[str]]:
    """Append the target model's missing entries to the base model (JSON of ``tokenizers``)."""
    kind = base["type"]
    if kind != target["type"]:
        raise ConfigError(f"base tokenizer is {kind} but the target one is {target['type']}")
    model = dict(base)
    added: list[str] = []
    if kind in ("BPE", "WordPiece", "WordLevel"):
        vocab = dict(base["vocab"])
        next_id = max(vocab.values()) + 1
        for tok, _ in sorted(target["vocab"].items(), key=lambda kv: kv[1]):
            if tok in vocab:
                continue
            if max_new is not None and len(added) >= max_new:
                break
            vocab[tok] = next_id
            next_id += 1
            added.append(tok)
        model["vocab"] = vocab
        if kind == "BPE":
            merges = list(base["merges"])

            def key(m: Any) -> tuple[str, str]:
                return tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m)  # type: ignore[return-value]

            have = {key(m) for m in merges}
            for m in target["merges"]:
                a, b = key(m)
                if (a, b) not in have and a in vocab and b in vocab and a + b in vocab:
                    merges.append(m)
                    have.add((a, b))
            model["merges"] = merges
    elif kind == "Unigram":
        pieces = [list(p) for p in base["vocab"]]
        have = {p[0] for p in pieces}
        for piece, score in target["vocab"]:
            if piece in have:
                continue
            if max_new is not None and len(added) >= max_new:
                break
            pieces.append([piece, score])
            added.append(piece)
        model["vocab"] = pieces
    else:
        raise ConfigError(f"cannot extend a {kind} tokenizer; use a BPE, Unigram or WordPiece one")
    return model, added


def _cjk(ch: str) -> bool:
    o = ord(ch)
    return any(lo <= o <= hi for lo, hi in _CJK_RANGES)


# BERT's _is_chinese_char ranges: CJK unified ideographs and their extensions, compatibility ideographs
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def cjk_share(texts: Sequence[str]) -> float:
    """Share of the non-space characters of ``texts`` that are CJK ideographs."""
    chars = [c for t in texts for c in t if not c.isspace()]
    return sum(map(_cjk, chars)) / max(len(chars), 1)


def _normalizers(node: Any) -> list[dict]:
    if not isinstance(node, dict):
        return []
    if node.get("type") == "Sequence":
        return [n for child in node.get("normalizers", []) for n in _normalizers(child)]
    return [node]


def splits_cjk(tokenizer: Any) -> bool:
    """True when the tokenizer's normaliser is BERT's with ``handle_chinese_chars`` (each CJK character
    becomes its own word, so no token can span two of them)."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str()).get("normalizer")
    return any(
        n.get("type") == "BertNormalizer" and n.get("handle_chinese_chars") for n in _normalizers(spec)
    )


def _set_cjk_split(spec: dict[str, Any], value: bool) -> dict[str, Any]:
    for n in _normalizers(spec.get("normalizer")):
        if n.get("type") == "BertNormalizer":
            n["handle_chinese_chars"] = value
    return spec


def extend_tokenizer(
    base: Any,
    texts: Sequence[str],
    *,
    target_vocab_size: int = 1000,
    max_new_tokens: int | None = None,
    split_cjk: bool | None = None,
) -> tuple[Any, list[str]]:
    """Train a target tokenizer with ``base``'s pipeline and append its tokens that ``base`` lacks.

    Returns ``(extended tokenizer, added tokens)``. Old tokens keep their ids; new ids follow the old ones.
    ``split_cjk=False`` turns off BERT's per-character CJK split in the extended tokenizer (and in the
    target tokenizer it is trained from), so multi-character CJK tokens can form; None keeps the base's.
    """
    from tokenizers import Tokenizer

    if not texts:
        raise DataError("no target text to extend the tokenizer with")
    if split_cjk is not None and splits_cjk(base) != split_cjk:
        base = _with_backend(
            base,
            Tokenizer.from_str(
                json.dumps(_set_cjk_split(json.loads(base.backend_tokenizer.to_str()), split_cjk))
            ),
        )
    target = base.train_new_from_iterator(texts, vocab_size=target_vocab_size)
    base_json = json.loads(base.backend_tokenizer.to_str())
    target_json = json.loads(target.backend_tokenizer.to_str())
    base_json["model"], added = _merge_model(base_json["model"], target_json["model"], max_new_tokens)
    extended = _with_backend(base, Tokenizer.from_str(json.dumps(base_json)))
    log.info("extended tokenizer %d -> %d tokens (%d new)", len(base), len(extended), len(added))
    return extended, added


def _with_backend(base: Any, backend: Any) -> Any:
    """A copy of ``base`` (class, special tokens, config) with another backend tokenizer."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        base.save_pretrained(tmp)
        backend.save(str(Path(tmp) / "tokenizer.json"))
        return AutoTokenizer.from_pretrained(tmp)


@dataclass
class Fertility:
    """Tokenizer statistics on held-out text."""

    words: int
    tokens: int
    fertility: float
    """Tokens per whitespace-separated word (lower is better)."""
    coverage: float
    """Share of pre-tokenised words encoded as a single token."""
    unk_rate: float
    """Share of tokens that are the unknown token."""

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def fertility(tokenizer: Any, texts: Sequence[str]) -> Fertility:
    """Tokens per word, single-token word coverage and unknown-token rate on ``texts``."""
    words = tokens = single = pieces = unk = 0
    unk_id = tokenizer.unk_token_id
    for enc in tokenizer(list(texts), add_special_tokens=False).encodings:
        tokens += len(enc.ids)
        counts: dict[int, int] = {}
        for w in enc.word_ids:
            if w is not None:
                counts[w] = counts.get(w, 0) + 1
        pieces += len(counts)
        single += sum(1 for c in counts.values() if c == 1)
        if unk_id is not None:
            unk += sum(1 for i in enc.ids if i == unk_id)
    words = sum(len(t.split()) for t in texts)
    if words == 0:
        raise DataError("held-out text has no words; pass non-empty target text")
    return Fertility(
        words=words,
        tokens=tokens,
        fertility=tokens / words,
        coverage=single / max(pieces, 1),
        unk_rate=unk / max(tokens, 1),
    )
