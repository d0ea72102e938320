"""Featurisation on fairseq2's data pipeline, with every skipped row counted *and named*.

Seed paper: "Pre-training for Speech Translation: CTC Meets Optimal Transport" (Le et al., arXiv 2301.11716):
80-bin log-mel filterbanks (standardised) at 16 kHz. Manifest rows go through a fairseq2 pipeline
(``read_sequence`` → decode (:func:`warmstart_speech.audio.decode`) + resample + ``WaveformToFbankConverter``,
``num_parallel_calls`` wide); a bad row — missing, unreadable, truncated, too short for the model, too long,
below the lowest sample rate, without the text a command needs — is skipped and recorded in a
:class:`SkipReport` under its reason with its id, never a crash. :func:`load_audio` returns the 16 kHz
waveforms instead (the wav2vec2 models of ``continue-ssl``, Nowakowski et al., arXiv 2301.07295).

Features are not held in memory: they are written once, as the pipeline yields them, to a memory-mapped
file (:class:`FeatureStore`; in ``FeatureConfig.store``, by default a temporary folder removed at exit) and
each batch reads its rows from it, in the training process or in loader workers
(:func:`warmstart_speech.batches.bucket_stream`). ``FeatureConfig.in_memory`` keeps them as tensors instead
(the same values). Left out: SpecAugment.
"""

from __future__ import annotations

import json
import logging
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from warmstart.errors import DataError
from warmstart_speech.audio import SAMPLE_RATE, AudioProblem, decode, resample
from warmstart_speech.manifest import read_manifest, row_id
from warmstart_speech.text import Vocab

log = logging.getLogger(__name__)

FBANK_WINDOW = 400
"""Samples of one 25 ms fbank window at 16 kHz: the shortest clip that yields a frame."""


@dataclass
class FeatureConfig:
    num_mel_bins: int = 80
    """Log-mel filterbank channels."""
    max_seconds: float = 20.0
    """Utterances longer than this are skipped (counted), never cut mid-word."""
    min_sample_rate: int = 8000
    """Audio below this rate is rejected (counted) instead of being upsampled."""
    num_parallel_calls: int = 1
    """Parallel decode/fbank calls in the fairseq2 pipeline."""
    store: Path | None = None
    """Folder for the memory-mapped feature files (default: a temporary folder, removed at exit)."""
    in_memory: bool = False
    """Hold the features in memory instead of a memory-mapped file (small corpora; the same values)."""


@dataclass
class SkipReport:
    """Rows left out, by reason, each with its id; ``seen`` counts every row offered."""

    counts: Counter = field(default_factory=Counter)
    names: dict[str, list[str]] = field(default_factory=dict)
    seen: int = 0

    def add(self, reason: str, what: str) -> None:
        self.counts[reason] += 1
        self.names.setdefault(reason, []).append(what)

    def merge(self, other: SkipReport) -> None:
        self.counts.update(other.counts)
        for reason, names in other.names.items():
            self.names.setdefault(reason, []).extend(names)
        self.seen += other.seen

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def kept(self) -> int:
        return self.seen - self.total

    def line(self, limit: int = 8) -> str:
        """One line: every reason with its count and (up to ``limit``) the rows' names."""
        if not self.counts:
            return "no rows skipped"
        parts = []
        for reason, n in self.counts.items():
            names = self.names.get(reason, [])
            more = f" +{len(names) - limit} more" if len(names) > limit else ""
            parts.append(f"{n} {reason} ({', '.join(names[:limit])}{more})")
        return f"skipped {self.total} of {self.seen} rows: " + "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"seen": self.seen, "skipped": self.total, "by_reason": dict(self.counts), "rows": self.names}


@dataclass
class Utterance:
    id: str
    fbank: torch.Tensor | FeatureRef  # (T, n_mels), or a reference into a FeatureStore
    src: list[int]  # phoneme ids (CTC / MT source); empty when the command needs no transcript
    tgt: list[int]  # target piece ids
    transcript: str
    translation: str
    n_frames: int = 0

    def __post_init__(self) -> None:
        if not self.n_frames:
            self.n_frames = int(self.fbank.shape[0])

    def features(self) -> torch.Tensor:
        """The (T, n_mels) filterbank, read from the store when it lives there."""
        return self.fbank.load() if isinstance(self.fbank, FeatureRef) else self.fbank


@dataclass
class FeatureRef:
    """Rows ``start:start+length`` of a memory-mapped feature file."""

    path: Path
    start: int
    length: int
    width: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.length, self.width)

    def load(self) -> torch.Tensor:
        return torch.from_numpy(
            np.array(_open_memmap(self.path, self.width)[self.start : self.start + self.length])
        )


_MEMMAPS: dict[tuple[str, int], np.memmap] = {}
_DEFAULT_STORE: list[tempfile.TemporaryDirectory] = []  # this process's temporary store, made on first use


def default_store() -> Path:
    """This process's temporary feature folder (removed when the process exits)."""
    if not _DEFAULT_STORE:
        _DEFAULT_STORE.append(tempfile.TemporaryDirectory(prefix="warmstart-speech-features-"))
    return Path(_DEFAULT_STORE[0].name)


def _open_memmap(path: Path, width: int) -> np.memmap:
    key = (str(path), width)
    if key not in _MEMMAPS:
        _MEMMAPS[key] = np.memmap(path, dtype=np.float32, mode="r").reshape(-1, width)
    return _MEMMAPS[key]


class FeatureStore:
    """Append-only float32 feature file + JSON index: featurise once, read rows by memory map."""

    def __init__(self, folder: Path, name: str, width: int) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / f"{name}.f32"
        self.width = width
        self.rows = 0
        _MEMMAPS.pop((str(self.path), width), None)  # the file is rewritten: a map of its old bytes is stale
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close()

    def add(self, feats: torch.Tensor) -> FeatureRef:
        array = feats.detach().cpu().numpy().astype(np.float32, copy=False)
        self._file.write(array.tobytes())
        ref = FeatureRef(self.path, self.rows, array.shape[0], self.width)
        self.rows += array.shape[0]
        return ref

    def close(self) -> None:
        self._file.close()
        (self.folder / f"{self.path.stem}.json").write_text(
            json.dumps({"rows": self.rows, "width": self.width})
        )


def _fbank_converter(config: FeatureConfig):  # noqa: ANN202
    from warmstart_speech.fs2 import fairseq2_data

    return fairseq2_data().audio.WaveformToFbankConverter(
        num_mel_bins=config.num_mel_bins, waveform_scale=2**15, channel_last=True, standardize=True
    )


def _featuriser(config: FeatureConfig, output: str, min_samples: int, short_reason: str):  # noqa: ANN202
    """A pipeline callable: manifest row → row with ``fbank`` (or the 16 kHz ``waveform``) or ``error``."""
    fbank = _fbank_converter(config) if output == "fbank" else None

    def run(row: dict[str, Any]) -> dict[str, Any]:
        offset = float(row["offset"]) if row.get("offset") not in (None, "") else None
        duration = float(row["duration"]) if row.get("duration") not in (None, "") else None
        try:
            wave, rate = decode(row["audio"], offset, duration)
        except AudioProblem as problem:
            return {**row, "error": problem.reason}
        if wave.numel() == 0:
            return {**row, "error": "zero-length audio"}
        if rate < config.min_sample_rate:
            return {**row, "error": f"sample rate below {config.min_sample_rate} Hz"}
        if wave.numel() / rate > config.max_seconds:
            return {**row, "error": f"audio longer than {config.max_seconds:g} s"}
        if rate != SAMPLE_RATE:
            wave = resample(wave, rate, SAMPLE_RATE)
        if wave.numel() < min_samples:
            return {**row, "error": short_reason}
        seconds = wave.numel() / SAMPLE_RATE
        if fbank is None:
            return {**row, "waveform": wave.float(), "seconds": seconds}  # (T,)
        feats = fbank({"waveform": wave.unsqueeze(1), "sample_rate": SAMPLE_RATE})["fbank"]  # (T, n_mels)
        return {**row, "fbank": feats, "seconds": seconds}

    return run


def featurise_rows(
    rows: Sequence[dict[str, Any]],
    config: FeatureConfig,
    report: SkipReport,
    output: str = "fbank",
    min_samples: int = FBANK_WINDOW,
    short_reason: str = "clip too short for one fbank frame (< 25 ms)",
) -> Iterator[dict[str, Any]]:
    """Decode + (resample) + fbank every row through a fairseq2 pipeline; yields good rows, records bad ones.

    ``min_samples`` (16 kHz samples) is the shortest clip the consuming model accepts (the SSL mask span,
    the subsampler); shorter clips are skipped as ``short_reason``.
    """
    from warmstart_speech.fs2 import fairseq2_data

    pipe = fairseq2_data().data_pipeline
    pipeline = (
        pipe.read_sequence([dict(r) for r in rows])
        .map(
            _featuriser(config, output, min_samples, short_reason),
            num_parallel_calls=config.num_parallel_calls,
        )
        .and_return()
    )
    for row in pipeline:
        if "error" in row:
            report.add(row["error"], _audio_name(row))
            continue
        yield row


def _audio_name(row: dict[str, Any]) -> str:
    """A row's id, with its file's name when the id does not already say it."""
    name, audio = row_id(row), Path(str(row.get("audio", "")))
    return name if audio.stem == name or str(audio) in name else f"{name} ({audio.name})"


def _report(manifest: Path, report: SkipReport, any_kept: bool) -> None:
    """Log the rows a load skipped; none kept is a one-line :class:`DataError`."""
    if report.total:
        log.warning("%s: %s", manifest, report.line())
    if not any_kept:
        raise DataError(
            f"{manifest}: no usable rows ({report.line()}); check the audio files and transcripts"
        )


def _need(row: dict[str, str], src: Vocab | None, tgt: Vocab | None, report: SkipReport) -> bool:
    if src is not None and not row.get("phonemes"):
        report.add("no transcript (needed for CTC / MT source)", row_id(row))
        return False
    if tgt is not None and not row.get("translation"):
        report.add("no translation", row_id(row))
        return False
    return True


def load_utterances(
    manifest: Path,
    src_vocab: Vocab | None,
    tgt_vocab: Vocab | None,
    config: FeatureConfig = FeatureConfig(),
    limit: int | None = None,
    report: SkipReport | None = None,
) -> tuple[list[Utterance], SkipReport]:
    """Featurised utterances of a manifest. ``src_vocab`` None: transcripts are not needed (``eval``);
    ``tgt_vocab`` None: translations are not needed. Unknown symbols become <unk>; no row is dropped for
    its words. Rows without the text a caller needs, and bad audio, are skipped and named in the report."""
    rows = read_manifest(manifest)[:limit]
    report = report if report is not None else SkipReport()
    report.seen += len(rows)
    kept = [row for row in rows if _need(row, src_vocab, tgt_vocab, report)]
    store = None
    if not config.in_memory:
        # a folder of the user's holds <manifest stem>.f32 (rewritten by the next load); the temporary one
        # a uniquely named file per load, since earlier loads' utterances still read theirs
        name = Path(manifest).stem
        folder = Path(config.store) if config.store is not None else default_store()
        if config.store is None:
            name = f"{name}-{uuid.uuid4().hex[:8]}"
        store = FeatureStore(folder, name, config.num_mel_bins)
    out = []
    try:
        for row in featurise_rows(kept, config, report):
            feats = row["fbank"]  # (T, n_mels): written out at once, only its reference is kept
            out.append(
                Utterance(
                    id=row_id(row),
                    fbank=store.add(feats) if store is not None else feats,
                    src=src_vocab.encode(row["phonemes"]) if src_vocab is not None else [],
                    tgt=tgt_vocab.encode(row["translation"]) if tgt_vocab is not None else [],
                    transcript=row.get("transcript", ""),
                    translation=row.get("translation", ""),
                    n_frames=int(feats.shape[0]),
                )
            )
    finally:
        if store is not None:
            store.close()
    _report(manifest, report, bool(out))
    return out, report


# ------------------------------------------------------------------------------------------------
# raw waveforms (wav2vec2 models: continue-ssl and its CTC fine-tuning)
# ------------------------------------------------------------------------------------------------
@dataclass
class AudioUtterance:
    id: str
    waveform: torch.Tensor  # (T,) float32 at 16 kHz
    labels: list[int]  # CTC targets (characters of the transcript); empty for unlabelled audio
    transcript: str

    @property
    def n_frames(self) -> int:
        return int(self.waveform.numel())


def load_audio(
    manifest: Path,
    vocab: Vocab | None = None,
    config: FeatureConfig = FeatureConfig(),
    min_samples: int = FBANK_WINDOW,
    short_reason: str = "clip too short for the model",
) -> tuple[list[AudioUtterance], SkipReport]:
    """16 kHz waveforms of a manifest through the same fairseq2 pipeline (bad rows skipped and named).

    With ``vocab`` (CTC fine-tuning) the lower-cased transcript's characters are the labels and rows with
    an empty transcript are skipped (unknown characters become <unk>); without it (unlabelled audio for
    ``continue-ssl``) only the ``audio`` column is needed. ``min_samples``: see :func:`featurise_rows`.
    """
    rows = read_manifest(manifest)
    report = SkipReport(seen=len(rows))
    kept = []
    for row in rows:
        if vocab is not None and not row["transcript"]:
            report.add("empty transcript", row_id(row))
        else:
            kept.append(row)
    out = [
        AudioUtterance(
            id=row_id(row),
            waveform=row["waveform"],
            labels=vocab.encode(row["transcript"].lower()) if vocab is not None else [],
            transcript=row["transcript"].lower(),
        )
        for row in featurise_rows(kept, config, report, "waveform", min_samples, short_reason)
    ]
    _report(manifest, report, bool(out))
    return out, report


def char_vocab_of(manifest: Path) -> Vocab:
    """Character vocabulary of a manifest's lower-cased transcripts (CTC labels of wav2vec2 fine-tuning)."""
    return Vocab.build([r["transcript"].lower() for r in read_manifest(manifest) if r["transcript"]], "char")
