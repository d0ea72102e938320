"""Text units of the speech recipe: phoneme/character symbols for CTC, SentencePiece subwords for the target.

Seed paper: "Pre-training for Speech Translation: CTC Meets Optimal Transport" (Le et al., arXiv 2301.11716),
whose CTC targets are phonemes (one symbol per unit) and whose MT/ST target side is a SentencePiece unigram
model (the authors' ``config_unigram10000_st.yaml``: unigram, 10,000 pieces). This module implements one
:class:`Vocab` over three kinds of units — ``char`` (phoneme or character symbols), ``word`` (whitespace,
the closed vocabulary of older runs, still loadable) and ``spm`` (a SentencePiece model trained here on the
training text with byte fallback, so *every* string encodes: no held-out row is ever dropped for its words).
Unknown source symbols map to ``<unk>`` instead of dropping the row. Left out: joint source/target pieces.
"""

from __future__ import annotations

import base64
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]
"""Index 0 is padding and doubles as the CTC blank."""


@dataclass
class TextConfig:
    """How the target (translation) side is cut into units."""

    target: Literal["spm", "word"] = "spm"
    """spm: a SentencePiece model trained on the training translations (open vocabulary); word: whitespace
    words (closed: held-out words outside it become <unk>)."""
    vocab_size: int = 1000
    """Upper bound on the SentencePiece vocabulary (paper: 10,000 unigram pieces); a small corpus gets fewer."""
    model_type: Literal["unigram", "bpe"] = "unigram"
    """SentencePiece algorithm (paper: unigram)."""
    byte_fallback: bool = True
    """Unseen characters become UTF-8 byte pieces instead of <unk> (256 extra units)."""


@dataclass
class Vocab:
    """Units → ids. ``char``: one id per character; ``word``: per whitespace word; ``spm``: SentencePiece."""

    tokens: list[str]
    unit: str = "char"
    spm_model: bytes | None = None
    """The serialised SentencePiece model (``unit == "spm"``)."""

    def __post_init__(self) -> None:
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(cls, texts: Sequence[str], unit: str = "char", config: TextConfig | None = None) -> Vocab:
        if unit == "spm":
            return cls.train_spm(texts, config or TextConfig())
        counts = Counter(t for text in texts for t in (text if unit == "char" else text.split()))
        return cls(SPECIALS + sorted(counts), unit)

    @classmethod
    def train_spm(cls, texts: Sequence[str], config: TextConfig) -> Vocab:
        """Train a SentencePiece model in memory on ``texts`` (ids 0-3 are pad, unk, bos, eos)."""
        import sentencepiece as spm

        texts = [t for t in texts if t.strip()]
        if not texts:
            from warmstart.errors import DataError

            raise DataError("no translations to train the target SentencePiece model on")
        chars = len({c for t in texts for c in t})
        floor = len(SPECIALS) + chars + (256 if config.byte_fallback else 0) + 1
        buffer = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_writer=buffer,
            vocab_size=max(config.vocab_size, floor),
            model_type=config.model_type,
            pad_id=PAD,
            unk_id=UNK,
            bos_id=BOS,
            eos_id=EOS,
            byte_fallback=config.byte_fallback,
            character_coverage=1.0,
            hard_vocab_limit=False,  # a small corpus yields fewer pieces instead of an error
            minloglevel=2,
            num_threads=1,
        )
        model = buffer.getvalue()
        processor = spm.SentencePieceProcessor(model_proto=model)
        return cls([processor.id_to_piece(i) for i in range(len(processor))], "spm", model)

    @cached_property
    def processor(self) -> Any:
        import sentencepiece as spm

        return spm.SentencePieceProcessor(model_proto=self.spm_model)

    def __len__(self) -> int:
        return len(self.tokens)

    def split(self, text: str) -> list[str]:
        if self.unit == "spm":
            return self.processor.encode(text, out_type=str)
        return list(text) if self.unit == "char" else text.split()

    def oov(self, text: str) -> set[str]:
        """Units of ``text`` that become <unk>."""
        if self.unit == "spm":
            return {p for p, i in zip(self.split(text), self.encode(text), strict=True) if i == UNK}
        return {t for t in self.split(text) if t not in self.index}

    def encode(self, text: str) -> list[int]:
        if self.unit == "spm":
            return list(self.processor.encode(text))
        return [self.index.get(t, UNK) for t in self.split(text)]

    def decode(self, ids: Sequence[int]) -> str:
        ids = [int(i) for i in ids if int(i) >= len(SPECIALS)]
        if self.unit == "spm":
            return self.processor.decode(ids)
        toks = [self.tokens[i] for i in ids]
        return "".join(toks) if self.unit == "char" else " ".join(toks)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tokens": self.tokens, "unit": self.unit}
        if self.spm_model is not None:
            out["spm_model"] = base64.b64encode(self.spm_model).decode()
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Vocab:
        model = base64.b64decode(data["spm_model"]) if data.get("spm_model") else None
        return cls(list(data["tokens"]), data.get("unit", "char"), model)

    def vocab_info(self):  # noqa: ANN201
        """fairseq2's ``VocabularyInfo`` for generators."""
        from warmstart_speech.fs2 import fairseq2_data

        fairseq2_data()
        from fairseq2.data.tokenizers import VocabularyInfo

        return VocabularyInfo(len(self), UNK, BOS, EOS, PAD)


def build_vocabs(rows: Sequence[dict[str, str]], text: TextConfig = TextConfig()) -> dict[str, Vocab]:
    """Source (phoneme/character symbols of the transcripts) and target vocabularies of training rows."""
    return {
        "src": Vocab.build([r["phonemes"] for r in rows if r.get("phonemes")], "char"),
        "tgt": Vocab.build([r["translation"] for r in rows if r.get("translation")], text.target, text),
    }
