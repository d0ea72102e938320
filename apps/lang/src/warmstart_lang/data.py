"""Text data for language adaptation: a procedural source/target language pair, a streaming reader for text
and JSONL files, and a resumable stream of packed blocks with source-language replay and MeCo.

Seed papers: *Continual Pre-Training of Large Language Models: How to (re)warm your model?* (arXiv
2308.04014) and *Simple and Scalable Strategies to Continually Pre-train LLMs* (arXiv 2403.08763) for
replay of source-language text at a ratio; *Metadata Conditioning Accelerates Language Model Pre-training*
(MeCo, arXiv 2501.01956) for the ``URL: <domain>`` prefix on the first 90 % of training tokens (loss masked
on the prefix). Packing and MeCo are the core's (:class:`warmstart.data.packing.BlockBuffer`,
:class:`warmstart.data.MeCo`).

Written by hand: the generator (no library makes a *pair* of related languages) and the streaming reader,
which reads one document (one line) at a time with byte offsets, so files larger than memory stream and a
run resumes at the exact byte. A source may also be a Hugging Face ``datasets`` name or a ``save_to_disk``
folder, read row by row through ``datasets`` (streamed for hub names) with the row index as the resume
position. Left out: de-duplication and quality filtering.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from warmstart.data import MeCo
from warmstart.data.packing import BlockBuffer, collate_blocks
from warmstart.errors import DataError
from warmstart.objectives import IGNORE_INDEX

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".text", ".jsonl", ".json")

# ----------------------------------------------------------------------------------------------------------
# The procedural language pair
# ----------------------------------------------------------------------------------------------------------

_CONSONANTS = "ptkbdgmnlrsv"
_VOWELS = "aeiou"
# systematic sound correspondences source -> target (cognates), then part of the vocabulary in Greek script
_SHIFT = {"p": "b", "t": "d", "k": "g", "s": "z", "o": "u", "v": "f"}
_GREEK = dict(zip("abdefgiklmnoprstuvz", "αβδεφγικλμνοπρστυβζ", strict=True))
_TOPICS = ("farm", "city", "sea", "forest", "market", "school")


@dataclass
class Lexicon:
    """Word lists of the source language and their target-language cognates (same index, same meaning)."""

    nouns: list[str]
    verbs: list[str]
    adjectives: list[str]
    target: dict[str, str] = field(default_factory=dict)
    """source word -> target word (content and function words)."""


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(syllables))


def _cognate(word: str, suffix: str, greek: bool) -> str:
    shifted = "".join(_SHIFT.get(c, c) for c in word) + suffix
    return "".join(_GREEK.get(c, c) for c in shifted) if greek else shifted


_FUNCTION = {"the": "lo", "a": "un", "in": "ni", "on": "su", "with": "kon", "near": "presso", "and": "e"}


def make_lexicon(seed: int = 0, n_nouns: int = 96, n_verbs: int = 40, n_adjectives: int = 32) -> Lexicon:
    """A seeded lexicon: CV-syllable source words and their target cognates.

    Target word = source word with sound shifts (p>b, t>d, k>g, s>z, o>u, v>f) and a class suffix (nouns
    -a, verbs -en, adjectives -i); every second noun and every adjective is written in Greek script, so
    the source tokenizer cuts it into bytes.
    """
    rng = random.Random(seed)
    seen: set[str] = set(_FUNCTION)

    def fresh(k: int) -> list[str]:
        out: list[str] = []
        while len(out) < k:
            w = _word(rng, rng.choice((2, 2, 3)))
            if w not in seen:
                seen.add(w)
                out.append(w)
        return out

    lex = Lexicon(fresh(n_nouns), fresh(n_verbs), fresh(n_adjectives))
    lex.target.update(_FUNCTION)
    for i, w in enumerate(lex.nouns):
        lex.target[w] = _cognate(w, "a", greek=i % 2 == 0)
    for w in lex.verbs:
        lex.target[w] = _cognate(w, "en", greek=False)
    for w in lex.adjectives:
        lex.target[w] = _cognate(w, "i", greek=True)
    return lex


def _sentence(rng: random.Random, lex: Lexicon, topic_nouns: Sequence[str]) -> list[str]:
    """DET [ADJ] NOUN VERB DET [ADJ] NOUN [PREP DET NOUN] — as source words (translated later)."""

    def noun_phrase() -> list[str]:
        words = [rng.choice(("the", "a"))]
        if rng.random() < 0.4:
            words.append(rng.choice(lex.adjectives))
        pool = topic_nouns if rng.random() < 0.8 else lex.nouns
        words.append(rng.choice(pool))
        return words

    words = noun_phrase() + [rng.choice(lex.verbs)] + noun_phrase()
    if rng.random() < 0.3:
        words += [rng.choice(("in", "on", "with", "near"))] + noun_phrase()
    if rng.random() < 0.2:
        words += ["and", rng.choice(lex.verbs)] + noun_phrase()
    return words


def generate_documents(
    n_docs: int, language: str, *, seed: int = 0, lexicon: Lexicon | None = None
) -> list[dict[str, str]]:
    """``n_docs`` documents of 3-8 sentences in ``language`` ('source' or 'target'), each with a topic URL.

    Both languages draw from the same grammar and topic model; the target text is the word-by-word
    cognate translation of a source text, so what a source model knows transfers.
    """
    if language not in ("source", "target"):
        raise ValueError(f"language must be 'source' or 'target', got {language!r}")
    lex = lexicon or make_lexicon(0)
    rng = random.Random(seed)
    per_topic = max(4, len(lex.nouns) // len(_TOPICS))
    docs = []
    for _ in range(n_docs):
        t = rng.randrange(len(_TOPICS))
        topic_nouns = lex.nouns[t * per_topic : (t + 1) * per_topic] or lex.nouns
        sentences = []
        for _ in range(rng.randint(3, 8)):
            words = _sentence(rng, lex, topic_nouns)
            if language == "target":
                words = [lex.target[w] for w in words]
            sentences.append(" ".join(words) + " .")
        docs.append({"text": " ".join(sentences), "url": f"{_TOPICS[t]}.example.org"})
    return docs


def write_language_pair(
    out: Path, *, n_source: int = 2000, n_target: int = 800, n_valid: int = 100, seed: int = 0
) -> dict[str, Path]:
    """Write the pair as real files under ``out``; returns their paths.

    ``source/train.txt``, ``source/valid.txt`` (one document per line), ``target/train.jsonl`` (``text`` and
    ``url`` per line, for MeCo) and ``target/valid.txt``. Source and target training texts come from
    different random streams (the target is not a translation of the source training set).
    """
    lex = make_lexicon(seed)
    out = Path(out)
    paths = {
        "source_train": out / "source" / "train.txt",
        "source_valid": out / "source" / "valid.txt",
        "target_train": out / "target" / "train.jsonl",
        "target_valid": out / "target" / "valid.txt",
    }
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    corpora = {
        "source_train": generate_documents(n_source, "source", seed=seed * 4 + 1, lexicon=lex),
        "source_valid": generate_documents(n_valid, "source", seed=seed * 4 + 2, lexicon=lex),
        "target_train": generate_documents(n_target, "target", seed=seed * 4 + 3, lexicon=lex),
        "target_valid": generate_documents(n_valid, "target", seed=seed * 4 + 4, lexicon=lex),
    }
    for key, docs in corpora.items():
        with open(paths[key], "w", encoding="utf-8") as fh:
            for d in docs:
                fh.write((json.dumps(d, ensure_ascii=False) if key == "target_train" else d["text"]) + "\n")
    return paths


# ----------------------------------------------------------------------------------------------------------
# Streaming reader
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSource:
    """A Hugging Face ``datasets`` source: a ``save_to_disk`` folder or a hub name (streamed)."""

    name: str
    kind: str  # "disk" or "hub"
    split: str = "train"

    def __str__(self) -> str:
        return self.name


def is_saved_dataset(path: Path) -> bool:
    """A folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""
    return path.is_dir() and (
        (path / "dataset_dict.json").is_file()
        or ((path / "state.json").is_file() and (path / "dataset_info.json").is_file())
    )


def _looks_like_hub_name(raw: str) -> bool:
    parts = raw.split("/")
    return (
        0 < len(parts) <= 2
        and all(parts)
        and not raw.startswith((".", "~"))
        and Path(raw).suffix not in TEXT_SUFFIXES
    )


def _open_dataset(source: DatasetSource) -> Any:
    """The rows of a dataset source: a map-style ``Dataset`` (disk) or a streaming ``IterableDataset``."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency of the app
        raise DataError(f"{source}: reading a dataset needs the `datasets` package") from None
    name, split = source.name, source.split
    try:
        if source.kind == "disk":
            ds = datasets.load_from_disk(name)
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise DataError(f"{name}: no split {split!r} (has {sorted(ds)}); pass --data_split")
                ds = ds[split]
            return ds
        return datasets.load_dataset(name, split=split, streaming=True)
    except DataError:
        raise
    except Exception as exc:  # datasets raises many types (FileNotFoundError, DatasetNotFoundError, ...)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise DataError(
            f"{name}: cannot open the dataset ({first}); pass a save_to_disk folder or a hub name"
        ) from None


def resolve_files(paths: Sequence[Path | str], what: str = "text", split: str = "train") -> list[Any]:
    """Expand directories into their text/JSONL files (sorted); check every file exists and is non-empty.

    A ``save_to_disk`` folder or a name that is no local path (``owner/name``: a hub dataset, streamed)
    becomes a :class:`DatasetSource`.
    """
    files: list[Any] = []
    for raw in paths:
        if isinstance(raw, DatasetSource):
            files.append(raw)
            continue
        p = Path(raw)
        if is_saved_dataset(p):
            files.append(DatasetSource(str(p), "disk", split))
            continue
        if not p.exists() and _looks_like_hub_name(str(raw)):
            files.append(DatasetSource(str(raw), "hub", split))
            continue
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in TEXT_SUFFIXES)
            if not found:
                raise DataError(f"{p}: no {'/'.join(TEXT_SUFFIXES)} files in this {what} directory")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{p}: no such {what} file or directory; pass a .txt/.jsonl file or a folder")
    for f in files:
        if isinstance(f, DatasetSource):
            continue
        if f.stat().st_size == 0:
            raise DataError(f"{f}: the {what} file is empty; remove it or add text")
        with open(f, "rb") as fh:
            head = fh.read(8192)
        if b"\x00" in head:
            raise DataError(f"{f}: looks binary (NUL bytes), not UTF-8 text; pass a .txt or .jsonl file")
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.start < len(head) - 4:  # not merely a multi-byte character cut at the chunk end
                raise DataError(
                    f"{f}: not UTF-8 (byte {exc.start}); re-encode it, e.g. iconv -t utf-8"
                ) from None
    if not files:
        raise DataError(f"no {what} files given")
    return files


def _decode_line(raw: bytes, path: Path, offset: int, text_key: str) -> tuple[str, dict[str, Any]]:
    try:
        line = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 at byte {offset}; re-encode it, e.g. iconv -t utf-8") from None
    if not line:
        return "", {}
    if path.suffix in (".jsonl", ".json"):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(
                f"{path}: line at byte {offset} is not JSON; JSONL needs one object per line"
            ) from None
        if not isinstance(record, dict) or not isinstance(record.get(text_key), str):
            raise DataError(f"{path}: line at byte {offset} has no string field {text_key!r}; set --text_key")
        return record[text_key].strip(), record
    return line, {}


def iter_documents(
    paths: Sequence[Path | str], *, text_key: str = "text", start: tuple[int, int] = (0, 0)
) -> Iterator[tuple[str, dict[str, Any], tuple[int, int]]]:
    """Yield ``(text, record, next_position)`` per non-empty document, one line at a time (never a whole file).

    ``.txt``: a document per line; ``.jsonl``: one JSON object per line with a ``text_key`` field (the whole
    record is returned for metadata such as ``url``). ``next_position`` = (file index, byte offset) of the
    line after this document: pass it as ``start`` to continue exactly there.
    """
    files = [p if isinstance(p, DatasetSource) else Path(p) for p in paths]
    file_index, offset = start
    for fi in range(file_index, len(files)):
        path = files[fi]
        if isinstance(path, DatasetSource):
            yield from _iter_rows(path, fi, offset if fi == file_index else 0, text_key)
            offset = 0
            continue
        with open(path, "rb") as fh:
            fh.seek(offset if fi == file_index else 0)
            pos = fh.tell()
            for raw in iter(fh.readline, b""):
                here = pos
                pos += len(raw)
                text, record = _decode_line(raw, path, here, text_key)
                if text:
                    yield text, record, (fi, pos)
        offset = 0


def _iter_rows(
    source: DatasetSource, index: int, start: int, column: str
) -> Iterator[tuple[str, dict[str, Any], tuple[int, int]]]:
    """Rows of a dataset from row ``start`` on; the position is (source index, next row)."""
    ds = _open_dataset(source)
    names = getattr(ds, "column_names", None)
    if names is not None and column not in names:
        raise DataError(f"{source}: no column {column!r} (has {sorted(names)}); pass --data_column")
    rows = ds.skip(start) if start and hasattr(ds, "skip") else ds
    if start and not hasattr(ds, "skip"):  # pragma: no cover - every datasets class has skip
        rows = (ds[i] for i in range(start, len(ds)))
    for row_number, record in enumerate(rows, start=start):
        text = record.get(column)
        if not isinstance(text, str):
            raise DataError(f"{source}: row {row_number} has no string column {column!r}; pass --data_column")
        text = text.strip()
        if text:
            yield text, dict(record), (index, row_number + 1)


def read_texts(
    paths: Sequence[Path | str], limit: int | None = None, text_key: str = "text", split: str = "train"
) -> list[str]:
    """The first ``limit`` documents (all if None) as strings (for tokenizer training and evaluation)."""
    out: list[str] = []
    for text, _, _ in iter_documents(resolve_files(paths, split=split), text_key=text_key):
        out.append(text)
        if limit is not None and len(out) >= limit:
            break
    return out


def count_words(texts: Sequence[str]) -> int:
    return sum(len(t.split()) for t in texts)


# ----------------------------------------------------------------------------------------------------------
# Packed, resumable stream with replay and MeCo
# ----------------------------------------------------------------------------------------------------------


@dataclass
class MeCoConfig:
    """MeCo (arXiv 2501.01956): ``URL: <domain>\\n\\n`` before each document, loss masked on the prefix."""

    enabled: bool = False
    """Prepend the document's URL (JSONL field ``url_key``) for the first ``fraction`` of training tokens."""
    fraction: float = 0.9
    """Share of the token budget trained with metadata; the rest is plain text (the paper's cooldown)."""
    url_key: str = "url"
    """JSONL field with the document's URL or domain."""


class _Corpus:
    """Endless pass over files with a resumable (epoch, file index, byte offset) position."""

    def __init__(self, files: list[Path], text_key: str) -> None:
        self.files = files
        self.text_key = text_key
        self.epoch = 0
        self.position = (0, 0)
        self._it: Iterator | None = None

    def next(self) -> tuple[str, dict[str, Any]]:
        for _ in range(2):
            if self._it is None:
                self._it = iter_documents(self.files, text_key=self.text_key, start=self.position)
            for text, record, nxt in self._it:
                self.position = nxt
                return text, record
            self._it = None
            self.epoch += 1
            self.position = (0, 0)
        raise DataError(f"{self.files[0]}: no non-empty document in these files")

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "file": self.position[0], "offset": self.position[1]}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.position = (int(state["file"]), int(state["offset"]))
        self._it = None


class TextBlockStream:
    """Endless stream of packed ``(B, T)`` micro-batches from text files, tokenised on the fly.

    Each document comes from the replay (source-language) files with probability ``replay_ratio`` (a
    seeded, stateless draw per document index), else from the target files; with ``shuffle_buffer`` > 1
    the next document is a seeded random pick among that many read ahead (files stay streamed). Documents are tokenised one at
    a time, joined with EOS and cut into blocks by :class:`~warmstart.data.packing.BlockBuffer`; with
    MeCo the ``URL: ...`` prefix carries label -100 while ``tokens_seen < meco.fraction * total_tokens``.
    ``state_dict()`` holds byte offsets and the partial block, so resume is exact. Batches carry
    ``input_ids`` and ``labels`` (GPT-style concatenate-and-chunk, positions continuous in a block).
    """

    def __init__(
        self,
        tokenizer: Any,
        files: Sequence[Path],
        *,
        block_size: int,
        batch_size: int,
        replay_files: Sequence[Path] = (),
        replay_ratio: float = 0.0,
        meco: MeCoConfig | None = None,
        total_tokens: int | None = None,
        text_key: str = "text",
        shuffle_buffer: int = 0,
        seed: int = 0,
        separator: int | None = None,
        block_prefix: int | None = None,
        transform: Any = None,
    ) -> None:
        if not 0.0 <= replay_ratio < 1.0:
            raise DataError(f"replay_ratio={replay_ratio} must be in [0, 1)")
        if replay_ratio > 0 and not replay_files:
            raise DataError("replay_ratio > 0 needs --replay files (source-language text)")
        eos = tokenizer.eos_token_id if separator is None else separator
        if eos is None:
            raise DataError("the tokenizer has no eos_token; set one (tokenizer.eos_token) before packing")
        self.block_prefix = block_prefix
        self.transform = transform
        """``(text, record) -> text`` applied to every target document (PCP's template), not to replay."""
        self.tokenizer = tokenizer
        self.block_size = block_size
        self.batch_size = batch_size
        self.replay_ratio = replay_ratio
        self.meco = meco or MeCoConfig()
        self.total_tokens = total_tokens
        self.seed = seed
        self.target = _Corpus(list(files), text_key)
        self.replay = _Corpus(list(replay_files), text_key) if replay_files else None
        self.buffer = BlockBuffer(block_size - (block_prefix is not None), eos)
        self._meco: MeCo | None = None
        if self.meco.enabled:
            if total_tokens is None:
                raise DataError("MeCo needs the run's token budget (total_tokens) to know when to stop")
            self._meco = MeCo(
                lambda s: tokenizer(s, add_special_tokens=False)["input_ids"],
                total_tokens=total_tokens,
                metadata_fraction=self.meco.fraction,
            )
        self.ready: list[dict[str, list[int]]] = []
        self.shuffle_buffer = shuffle_buffer
        self.pending: list[tuple[str, dict[str, Any], bool]] = []
        self.drawn = 0
        self.docs = 0
        self.tokens_seen = 0
        self.replayed = 0

    def _draw(self) -> tuple[str, dict[str, Any], bool]:
        """The next document in file order: from the replay files with probability replay_ratio."""
        u = random.Random(self.seed * 1_000_003 + self.drawn).random()
        self.drawn += 1
        use_replay = self.replay is not None and u < self.replay_ratio
        text, record = (self.replay if use_replay else self.target).next()  # type: ignore[union-attr]
        return text, record, use_replay

    def _next_doc(self) -> tuple[str, dict[str, Any], bool]:
        """With a shuffle buffer, a seeded random pick among the next ``shuffle_buffer`` documents."""
        if self.shuffle_buffer <= 1:
            return self._draw()
        while len(self.pending) < self.shuffle_buffer:
            self.pending.append(self._draw())
        k = random.Random(self.seed * 7_919 + self.docs + 1).randrange(len(self.pending))
        return self.pending.pop(k)

    def _encode(self, text: str, record: dict[str, Any], replayed: bool) -> tuple[list[int], list[int]]:
        if self.transform is not None and not replayed:
            text = self.transform(text, record)
        if self._meco is None or replayed:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            return ids, [1] * len(ids)
        return self._meco((text, record.get(self.meco.url_key)), self.tokens_seen)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            while len(self.ready) < self.batch_size:
                text, record, use_replay = self._next_doc()
                ids, mask = self._encode(text, record, use_replay)
                self.buffer.add(ids, mask)
                self.docs += 1
                self.replayed += int(use_replay)
                self.tokens_seen += len(ids) + 1
                self.ready += [_with_prefix(b, self.block_prefix) for b in self.buffer.pop_blocks()]
            batch, self.ready = self.ready[: self.batch_size], self.ready[self.batch_size :]
            out = collate_blocks(batch)
            yield {"input_ids": out["input_ids"], "labels": out["labels"]}

    def state_dict(self) -> dict[str, Any]:
        return {
            "target": self.target.state_dict(),
            "replay": self.replay.state_dict() if self.replay is not None else None,
            "buffer": self.buffer.state_dict(),
            "ready": [dict(b) for b in self.ready],
            "pending": [[t, r, b] for t, r, b in self.pending],
            "drawn": self.drawn,
            "docs": self.docs,
            "tokens_seen": self.tokens_seen,
            "replayed": self.replayed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.target.load_state_dict(state["target"])
        if self.replay is not None and state.get("replay") is not None:
            self.replay.load_state_dict(state["replay"])
        self.buffer.load_state_dict(state["buffer"])
        self.ready = [{k: list(v) for k, v in b.items()} for b in state["ready"]]
        self.pending = [(str(t), dict(r), bool(b)) for t, r, b in state["pending"]]
        self.drawn = int(state["drawn"])
        self.docs = int(state["docs"])
        self.tokens_seen = int(state["tokens_seen"])
        self.replayed = int(state["replayed"])


def _with_prefix(block: dict[str, list[int]], prefix: int | None) -> dict[str, list[int]]:
    """Prepend an encoder's ``[CLS]`` to a block (label -100); keeps input_ids and labels only."""
    if prefix is None:
        return block
    out = {
        "input_ids": [prefix, *block["input_ids"]],
        "labels": [IGNORE_INDEX, *block["labels"]],
    }
    return out


def eval_blocks(
    tokenizer: Any,
    texts: Sequence[str],
    block_size: int,
    batch_size: int = 16,
    max_blocks: int = 64,
    *,
    separator: int | None = None,
    block_prefix: int | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Held-out texts packed into at most ``max_blocks`` blocks, grouped in batches (for perplexity).

    ``separator`` goes between documents (default: the tokenizer's EOS; see
    :func:`warmstart_lang.families.separator_id`), ``block_prefix`` starts each block (an encoder's CLS).
    """
    sep = tokenizer.eos_token_id if separator is None else separator
    if sep is None:
        raise DataError("the tokenizer has no eos_token to separate documents; set one or pass separator")
    buffer = BlockBuffer(block_size - (block_prefix is not None), sep)
    blocks: list[dict[str, list[int]]] = []
    for t in texts:
        buffer.add(tokenizer(t, add_special_tokens=False)["input_ids"])
        blocks += [_with_prefix(b, block_prefix) for b in buffer.pop_blocks()]
        if len(blocks) >= max_blocks:
            break
    blocks = blocks[:max_blocks]
    if not blocks:
        raise DataError(f"held-out text holds fewer than {block_size} tokens; add text or lower block_size")
    out = []
    for s in range(0, len(blocks), batch_size):
        b = collate_blocks(blocks[s : s + batch_size])
        out.append({"input_ids": b["input_ids"], "labels": b["labels"]})
    return out
