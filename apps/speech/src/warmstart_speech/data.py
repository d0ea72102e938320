"""Speech-translation data: an offline spoken-corpus generator, manifests, and fbank featurisation on fairseq2.

Seed paper: "Pre-training for Speech Translation: CTC Meets Optimal Transport" (Le et al., arXiv 2301.11716),
whose CTC targets are phonemes (transcripts through g2p) and whose MT model translates phonemes to target
words. This module implements (1) a structured English → German generator with a deterministic translation
(word-order change included) that *speaks* the source with espeak-ng (voice, rate, pitch, noise vary) and
writes real WAV/FLAC files plus a TSV manifest; (2) ``prepare_manifest`` for folders of audio + text; (3)
decoding and featurisation through fairseq2's data pipeline (``read_sequence`` → ``FileMapper`` →
``AudioDecoder`` → ``WaveformToFbankConverter``) with bad rows counted and skipped, never a crash; (4) length
bucketing of ready micro-batches with a resumable state; (5) the same pipeline returning 16 kHz waveforms
(:func:`load_audio`, :class:`AudioBatches`) for the wav2vec2 models of ``continue-ssl`` (Nowakowski et al.,
arXiv 2301.07295). ``SynthConfig.language="de"`` speaks the German side with German voices: a second
language for the continued-pretraining experiment.

Written by hand, and why: fairseq2 0.8's fbank converter accepts only 16 kHz input and fairseq2 ships no
resampler (torchaudio is not a dependency), so :func:`resample` is a windowed-sinc polyphase resampler in
torch. The espeak-ng binding is ctypes over the ``espeakng-loader`` wheel (no Python binding ships one).
Left out: MuST-C/CoVoST YAML segment files (convert them to the TSV layout documented in the README).
"""

from __future__ import annotations

import csv
import ctypes
import json
import logging
import math
import random
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from warmstart.data.sampling import epoch_permutation
from warmstart.errors import DataError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
"""The rate fairseq2's fbank converter requires; audio at other rates is resampled to it."""
MANIFEST_COLUMNS = ("id", "audio", "n_samples", "sample_rate", "transcript", "phonemes", "translation")
AUDIO_SUFFIXES = (".wav", ".flac")
LANGUAGE_VOICES = {
    "en": ["en-us", "en", "en-gb-scotland", "en-029"],
    "de": ["de", "de+m3", "de+f2", "de+f4"],
}
"""espeak-ng voices (with variants) per generated language."""

# ------------------------------------------------------------------------------------------------
# the structured sentence generator: English source, German target, deterministic translation
# ------------------------------------------------------------------------------------------------
SUBJECTS = [
    ("the cat", "die katze"),
    ("the dog", "der hund"),
    ("a bird", "ein vogel"),
    ("the man", "der mann"),
    ("the woman", "die frau"),
    ("a child", "ein kind"),
]
VERBS = [("sees", "sieht"), ("likes", "mag"), ("finds", "findet"), ("paints", "malt"), ("buys", "kauft")]
ADJECTIVES = [("red", "rot"), ("big", "gross"), ("old", "alt"), ("new", "neu"), ("green", "gruen")]
NOUNS = [
    ("house", "haus", "n"),
    ("car", "auto", "n"),
    ("tree", "baum", "m"),
    ("book", "buch", "n"),
    ("ball", "ball", "m"),
]
TIMES = [("today", "heute"), ("at night", "nachts"), ("again", "wieder")]


def _german_object(article: str, adjective: str, noun: str, gender: str) -> str:
    """Accusative noun phrase with the right article and adjective ending."""
    if article == "the":
        return f"den {adjective}en {noun}" if gender == "m" else f"das {adjective}e {noun}"
    return f"einen {adjective}en {noun}" if gender == "m" else f"ein {adjective}es {noun}"


def make_sentence(rng: random.Random) -> tuple[str, str]:
    """One (English, German) pair. With a time adverb German fronts it and inverts verb and subject (V2)."""
    subj_en, subj_de = rng.choice(SUBJECTS)
    verb_en, verb_de = rng.choice(VERBS)
    adj_en, adj_de = rng.choice(ADJECTIVES)
    noun_en, noun_de, gender = rng.choice(NOUNS)
    article = rng.choice(["the", "a"])
    obj_de = _german_object(article, adj_de, noun_de, gender)
    source = f"{subj_en} {verb_en} {article} {adj_en} {noun_en}"
    if rng.random() < 0.5:
        time_en, time_de = rng.choice(TIMES)
        return f"{source} {time_en}", f"{time_de} {verb_de} {subj_de} {obj_de}"
    return source, f"{subj_de} {verb_de} {obj_de}"


# ------------------------------------------------------------------------------------------------
# espeak-ng through ctypes
# ------------------------------------------------------------------------------------------------
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _PITCH = 1, 3
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class Espeak:
    """Offline speech synthesis and grapheme-to-phoneme conversion with the ``espeakng-loader`` wheel."""

    def __init__(self) -> None:
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        self.sample_rate = int(
            lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
        )
        if self.sample_rate <= 0:
            raise RuntimeError(
                "espeak_Initialize failed: espeak-ng data not found in the espeakng-loader wheel"
            )
        self._chunks: list[np.ndarray] = []

        def on_audio(wav, n, _events) -> int:  # noqa: ANN001 - ctypes callback
            if n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = _CALLBACK(on_audio)  # keep a reference: ctypes does not
        lib.espeak_SetSynthCallback(self._callback)
        self.lib = lib

    def set_voice(self, name: str) -> bool:
        return self.lib.espeak_SetVoiceByName(name.encode()) == 0

    def synthesize(self, text: str, *, voice: str = "en-us", rate: int = 170, pitch: int = 50) -> np.ndarray:
        """int16 samples at :attr:`sample_rate` (22,050 Hz) speaking ``text``."""
        if not self.set_voice(voice):
            raise ValueError(f"espeak-ng has no voice {voice!r}")
        self.lib.espeak_SetParameter(_RATE, int(rate), 0)
        self.lib.espeak_SetParameter(_PITCH, int(pitch), 0)
        self._chunks = []
        data = text.encode()
        self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)

    def phonemize(self, text: str, voice: str = "en-us") -> str:
        """espeak-ng's ASCII phoneme names for ``text`` (clauses joined by a space), stress marks removed."""
        self.set_voice(voice)
        pointer = ctypes.c_char_p(text.encode())
        clauses = []
        while pointer.value:
            clauses.append(self.lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, 0).decode())
        phonemes = " ".join(c.strip() for c in clauses if c.strip())
        return re.sub(r"[',%=_;#2:]", "", phonemes)  # drop stress/length marks: shorter CTC targets


@cache
def espeak() -> Espeak:
    """The process-wide espeak-ng instance (the library keeps global state)."""
    return Espeak()


# ------------------------------------------------------------------------------------------------
# resampling (fairseq2 0.8 has none; its fbank converter wants 16 kHz)
# ------------------------------------------------------------------------------------------------
@cache
def _sinc_kernels(orig: int, new: int, lowpass_width: int, rolloff: float) -> tuple[torch.Tensor, int]:
    """Polyphase Hann-windowed sinc filters (new, K) and the padding width, for reduced rates orig → new."""
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_width * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None] / orig  # (1, K)
    t = (torch.arange(0, -new, -1, dtype=torch.float64)[:, None] / new + idx) * base  # (new, K)
    t = t.clamp(-lowpass_width, lowpass_width)
    window = torch.cos(t * math.pi / lowpass_width / 2) ** 2
    t = t * math.pi
    kernels = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t) * window * (base / orig)
    return kernels.float(), width


def resample(
    waveform: torch.Tensor, orig_rate: int, new_rate: int, lowpass_width: int = 6, rolloff: float = 0.99
) -> torch.Tensor:
    """Band-limited (Hann-windowed sinc) polyphase resampling of (..., T) audio, as torchaudio does it."""
    if orig_rate == new_rate:
        return waveform
    gcd = math.gcd(int(orig_rate), int(new_rate))
    orig, new = int(orig_rate) // gcd, int(new_rate) // gcd
    kernels, width = _sinc_kernels(orig, new, lowpass_width, rolloff)
    shape = waveform.shape
    x = waveform.reshape(-1, shape[-1]).float()  # (B, T)
    x = torch.nn.functional.pad(x, (width, width + orig))
    frames = x.unfold(-1, kernels.shape[-1], orig)  # (B, T', K): one window per output block
    y = (frames @ kernels.T).reshape(x.shape[0], -1)  # (B, T' * new): a strided conv as one matmul
    target = math.ceil(new * shape[-1] / orig)
    return y[:, :target].reshape(*shape[:-1], target).to(waveform.dtype)


# ------------------------------------------------------------------------------------------------
# writing corpora
# ------------------------------------------------------------------------------------------------
@dataclass
class SynthConfig:
    n_train: int = 400
    """Training utterances to generate."""
    n_test: int = 60
    """Held-out utterances (written to test.tsv)."""
    voices: list[str] = field(default_factory=lambda: ["en-us", "en", "en-gb-scotland", "en-029"])
    """espeak-ng voices to draw from."""
    rate: tuple[int, int] = (140, 200)
    """Speaking rate range (words per minute)."""
    pitch: tuple[int, int] = (30, 70)
    """Pitch range (0-99)."""
    snr_db: tuple[float, float] = (15.0, 35.0)
    """Signal-to-noise range of the added white noise."""
    flac_fraction: float = 0.5
    """Share of utterances written as FLAC (the rest WAV)."""
    seed: int = 0
    """Seed of the sentences, voices and noise."""
    language: str = "en"
    """Spoken language: ``en`` speaks the English source (→ German translation); ``de`` speaks the German
    side with espeak-ng's German voices (→ English translation), e.g. a second language for ``continue-ssl``."""


def _write_manifest(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS, delimiter="\t", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def synth_corpus(out: Path, config: SynthConfig = SynthConfig()) -> dict[str, Path]:
    """Speak generated sentences into ``out/audio/*.wav|flac``; write ``train.tsv`` and ``test.tsv``.

    Audio is synthesised at 22,050 Hz, noised, and resampled to 16 kHz on write (a few files keep 22,050 Hz
    so the loader's resampling path is exercised).
    """
    import soundfile as sf

    out = Path(out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    rng = random.Random(config.seed)
    noise = np.random.default_rng(config.seed)
    tts = espeak()
    if config.language not in LANGUAGE_VOICES:
        raise DataError(f"synth.language={config.language!r}: use one of {sorted(LANGUAGE_VOICES)}")
    wanted = config.voices if config.language == "en" else LANGUAGE_VOICES[config.language]
    voices = [v for v in wanted if tts.set_voice(v)] or [config.language]
    paths: dict[str, Path] = {}
    counter = 0
    for split, n in (("train", config.n_train), ("test", config.n_test)):
        rows = []
        for _ in range(n):
            source, target = make_sentence(rng)
            if config.language == "de":  # speak the German side; the English sentence is its translation
                source, target = target, source
            voice = rng.choice(voices)
            pcm = tts.synthesize(
                source, voice=voice, rate=rng.randint(*config.rate), pitch=rng.randint(*config.pitch)
            )
            wave = pcm.astype(np.float32) / 32768.0
            power = float(np.mean(wave**2)) + 1e-12
            snr = rng.uniform(*config.snr_db)
            wave = wave + noise.normal(0.0, math.sqrt(power / 10 ** (snr / 10)), size=wave.shape).astype(
                np.float32
            )
            rate = tts.sample_rate
            if rng.random() < 0.8:  # most files at the model's 16 kHz; the rest stay at 22.05 kHz
                wave = resample(torch.from_numpy(wave), rate, SAMPLE_RATE).numpy()
                rate = SAMPLE_RATE
            wave = np.clip(wave, -1.0, 1.0)
            suffix = ".flac" if rng.random() < config.flac_fraction else ".wav"
            name = f"audio/{split}-{counter:05d}{suffix}"
            sf.write(out / name, wave, rate, subtype="PCM_16")
            rows.append(
                {
                    "id": f"{split}-{counter:05d}",
                    "audio": name,
                    "n_samples": len(wave),
                    "sample_rate": rate,
                    "transcript": source,
                    "phonemes": tts.phonemize(
                        source, "en-us" if config.language == "en" else config.language
                    ),
                    "translation": target,
                }
            )
            counter += 1
        paths[split] = out / f"{split}.tsv"
        _write_manifest(paths[split], rows)
    (out / "synth.json").write_text(
        json.dumps({"config": config.__dict__, "sample_rate_tts": tts.sample_rate}, default=list)
    )
    return paths


def prepare_manifest(audio_dir: Path, out: Path, *, g2p_voice: str = "en-us") -> tuple[Path, int]:
    """Manifest from a folder of ``<stem>.wav|flac`` + ``<stem>.txt`` (transcript) [+ ``<stem>.tr.txt``].

    Reads only audio headers (soundfile). Phonemes come from espeak-ng's g2p with ``g2p_voice``. Audio
    without a transcript is skipped and counted. Returns (manifest path, skipped count).
    """
    import soundfile as sf

    audio_dir = Path(audio_dir)
    if not audio_dir.is_dir():
        raise DataError(
            f"{audio_dir}: not a directory; pass a folder of WAV/FLAC files with .txt transcripts"
        )
    tts = espeak()
    rows, skipped = [], 0
    for path in sorted(p for p in audio_dir.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
        text_file = path.with_suffix(".txt")
        if not text_file.is_file():
            skipped += 1
            continue
        try:
            info = sf.info(str(path))
        except Exception:  # noqa: BLE001 - unreadable header: skip, counted
            skipped += 1
            continue
        transcript = text_file.read_text().strip()
        tr_file = path.with_suffix(".tr.txt")
        rows.append(
            {
                "id": path.stem,
                "audio": str(path.resolve()),
                "n_samples": info.frames,
                "sample_rate": info.samplerate,
                "transcript": transcript,
                "phonemes": tts.phonemize(transcript, g2p_voice),
                "translation": tr_file.read_text().strip() if tr_file.is_file() else "",
            }
        )
    if not rows:
        raise DataError(
            f"{audio_dir}: no WAV/FLAC file with a matching .txt transcript; add <stem>.txt files"
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_manifest(out, rows)
    return out, skipped


def read_manifest(path: Path, require_transcript: bool = True) -> list[dict[str, str]]:
    """Rows of a TSV manifest (header with at least ``audio`` and ``transcript``); audio paths made absolute.

    ``require_transcript=False`` (unlabelled audio for ``continue-ssl``) needs only the ``audio`` column.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: manifest not found; create one with `warmstart-speech data synth` or `data prepare`"
        )
    with open(path, newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        required = {"audio", "transcript"} if require_transcript else {"audio"}
        missing = required - set(reader.fieldnames or [])
        if missing:
            raise DataError(
                f"{path}: manifest header lacks column(s) {sorted(missing)}; expected {list(MANIFEST_COLUMNS)}"
            )
        rows = list(reader)
    if not rows:
        raise DataError(f"{path}: manifest has no rows")
    for row in rows:
        audio = Path(row["audio"])
        row["audio"] = str(audio if audio.is_absolute() else (path.parent / audio).resolve())
        row.setdefault("translation", "")
        row["transcript"] = row.get("transcript") or ""
        if not row.get("phonemes"):
            row["phonemes"] = row["transcript"].lower()  # real corpora without g2p: characters as units
    return rows


# ------------------------------------------------------------------------------------------------
# vocabularies
# ------------------------------------------------------------------------------------------------
PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]


@dataclass
class Vocab:
    """Characters (phoneme units) or words. Index 0 is padding and doubles as the CTC blank."""

    tokens: list[str]
    unit: str = "char"
    """``char`` (one symbol per character) or ``word`` (whitespace-split)."""

    def __post_init__(self) -> None:
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(cls, texts: Sequence[str], unit: str = "char") -> Vocab:
        counts = Counter(t for text in texts for t in (text if unit == "char" else text.split()))
        return cls(SPECIALS + sorted(counts), unit)

    def __len__(self) -> int:
        return len(self.tokens)

    def split(self, text: str) -> list[str]:
        return list(text) if self.unit == "char" else text.split()

    def oov(self, text: str) -> set[str]:
        return {t for t in self.split(text) if t not in self.index}

    def encode(self, text: str) -> list[int]:
        return [self.index.get(t, UNK) for t in self.split(text)]

    def decode(self, ids: Sequence[int]) -> str:
        toks = [self.tokens[i] for i in ids if i >= len(SPECIALS)]
        return "".join(toks) if self.unit == "char" else " ".join(toks)

    def to_json(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "unit": self.unit}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Vocab:
        return cls(list(data["tokens"]), data.get("unit", "char"))

    def vocab_info(self):
        """fairseq2's ``VocabularyInfo`` for generators."""
        from warmstart_speech.fs2 import fairseq2_data

        fairseq2_data()
        from fairseq2.data.tokenizers import VocabularyInfo

        return VocabularyInfo(len(self), UNK, BOS, EOS, PAD)


# ------------------------------------------------------------------------------------------------
# featurisation through fairseq2's data pipeline
# ------------------------------------------------------------------------------------------------
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


@dataclass
class Utterance:
    id: str
    fbank: torch.Tensor  # (T, n_mels)
    src: list[int]  # phoneme ids (CTC / MT source)
    tgt: list[int]  # target word ids
    transcript: str
    translation: str


@dataclass
class SkipReport:
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, reason: str, what: str) -> None:
        self.counts[reason] += 1
        self.examples.setdefault(reason, what)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def line(self) -> str:
        if not self.counts:
            return "no rows skipped"
        return "skipped " + ", ".join(
            f"{n} {reason} (e.g. {self.examples[reason]})" for reason, n in self.counts.items()
        )


def _decode_and_featurise(config: FeatureConfig, output: str = "fbank"):
    """A pipeline callable: manifest row (with FileMapper output) → row with ``fbank`` (or the 16 kHz
    ``waveform`` when ``output="waveform"``, for wav2vec2 models) or ``error``."""
    data = fairseq2_data_modules()
    decoder = data.audio.AudioDecoder(dtype=torch.float32)
    fbank = data.audio.WaveformToFbankConverter(
        num_mel_bins=config.num_mel_bins, waveform_scale=2**15, channel_last=True, standardize=True
    )

    def run(row: dict[str, Any]) -> dict[str, Any]:
        try:
            decoded = decoder(row["audio"]["data"])
        except Exception as exc:  # noqa: BLE001 - a bad file must not end the epoch
            return {**row, "error": "unreadable audio", "detail": str(exc).split("\n")[0][:80]}
        wave = decoded["waveform"]
        if wave.dim() == 2:  # (T, C): mix down
            wave = wave.mean(dim=1)
        rate = int(decoded["sample_rate"])
        if wave.numel() == 0:
            return {**row, "error": "zero-length audio"}
        if rate < config.min_sample_rate:
            return {**row, "error": f"sample rate below {config.min_sample_rate} Hz"}
        if wave.numel() / rate > config.max_seconds:
            return {**row, "error": f"audio longer than {config.max_seconds:g} s"}
        if rate != SAMPLE_RATE:
            wave = resample(wave, rate, SAMPLE_RATE)
        if output == "waveform":
            return {**row, "waveform": wave.float(), "seconds": wave.numel() / SAMPLE_RATE}  # (T,)
        feats = fbank({"waveform": wave.unsqueeze(1), "sample_rate": SAMPLE_RATE})["fbank"]  # (T, n_mels)
        return {**row, "fbank": feats, "seconds": wave.numel() / SAMPLE_RATE}

    return run


def fairseq2_data_modules():
    from warmstart_speech.fs2 import fairseq2_data

    return fairseq2_data()


def featurise_rows(
    rows: Sequence[dict[str, Any]], config: FeatureConfig, report: SkipReport, output: str = "fbank"
) -> Iterator[dict[str, Any]]:
    """Decode + (resample) + fbank every row through a fairseq2 pipeline; yields good rows, counts bad ones."""
    data = fairseq2_data_modules()
    pipe = data.data_pipeline
    present = []
    for row in rows:
        if not Path(row["audio"]).is_file():
            report.add("missing audio file", row["audio"])
        else:
            present.append(dict(row))
    pipeline = (
        pipe.read_sequence(present)
        .map(pipe.FileMapper(cached_fd_count=16), selector="audio")
        .map(_decode_and_featurise(config, output), num_parallel_calls=config.num_parallel_calls)
        .and_return()
    )
    for row in pipeline:
        if "error" in row:
            report.add(row["error"], str(row["audio"]["path"]))
            continue
        row["audio"] = str(row["audio"]["path"])
        yield row


def load_utterances(
    manifest: Path,
    src_vocab: Vocab,
    tgt_vocab: Vocab | None,
    config: FeatureConfig = FeatureConfig(),
    limit: int | None = None,
) -> tuple[list[Utterance], SkipReport]:
    """Featurised utterances of a manifest; rows with characters outside the vocabulary are skipped."""
    rows = read_manifest(manifest)[:limit]
    report = SkipReport()
    kept = []
    for row in rows:
        bad = src_vocab.oov(row["phonemes"])
        if bad:
            report.add(
                "transcript symbols outside the vocabulary",
                f"{row.get('id', row['audio'])}: {''.join(sorted(bad))[:10]}",
            )
        elif tgt_vocab is not None and (not row["translation"] or tgt_vocab.oov(row["translation"])):
            report.add("translation missing or outside the vocabulary", str(row.get("id", row["audio"])))
        else:
            kept.append(row)
    out = [
        Utterance(
            id=row.get("id", Path(row["audio"]).stem),
            fbank=row["fbank"],
            src=src_vocab.encode(row["phonemes"]),
            tgt=tgt_vocab.encode(row["translation"]) if tgt_vocab is not None else [],
            transcript=row["transcript"],
            translation=row["translation"],
        )
        for row in featurise_rows(kept, config, report)
    ]
    if report.total:
        log.warning("%s: %s", manifest, report.line())
    if not out:
        raise DataError(
            f"{manifest}: no usable rows ({report.line()}); check the audio files and transcripts"
        )
    return out, report


# ------------------------------------------------------------------------------------------------
# batches
# ------------------------------------------------------------------------------------------------
def _pad(seqs: Sequence[Sequence[int]], value: int = PAD) -> torch.Tensor:
    width = max(1, max(len(s) for s in seqs))
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out  # (B, S)


def collate(utts: Sequence[Utterance]) -> dict[str, torch.Tensor]:
    """Padded fbanks (B, T, C) + lengths, phoneme ids (B, S), decoder input/target words (B, U)."""
    lengths = torch.tensor([u.fbank.shape[0] for u in utts])
    feats = torch.zeros(len(utts), int(lengths.max()), utts[0].fbank.shape[1])  # (B, T, C)
    for i, u in enumerate(utts):
        feats[i, : u.fbank.shape[0]] = u.fbank
    return {
        "fbank": feats,
        "fbank_lens": lengths,
        "src": _pad([u.src for u in utts]),
        "src_lens": torch.tensor([len(u.src) for u in utts]),
        "tgt_in": _pad([[BOS] + u.tgt for u in utts]),
        "tgt_out": _pad([u.tgt + [EOS] for u in utts]),
    }


class LengthBucketBatches:
    """Resumable stream of micro-batches of similar length (sorted into buckets, then shuffled per epoch).

    The engine stores ``state_dict()`` in checkpoints, so a resumed run sees exactly the same batches.
    """

    def __init__(self, utts: Sequence[Utterance], batch_size: int, seed: int = 0) -> None:
        if len(utts) < batch_size:
            raise DataError(
                f"{len(utts)} usable utterances: fewer than one batch of {batch_size}; lower the batch size"
            )
        order = sorted(range(len(utts)), key=lambda i: utts[i].fbank.shape[0])
        self.batches = [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
        self.utts = utts
        self.seed = seed
        self.epoch = 0
        self.position = 0

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            perm = epoch_permutation(len(self.batches), self.seed, self.epoch).tolist()
            while self.position < len(perm):
                batch = self.batches[perm[self.position]]
                self.position += 1
                yield self._collate(batch)
            self.epoch += 1
            self.position = 0

    def _collate(self, batch: list[int]) -> dict[str, torch.Tensor]:
        return collate([self.utts[i] for i in batch])

    def __len__(self) -> int:
        return len(self.batches)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def eval_batches(utts: Sequence[Utterance], batch_size: int) -> list[dict[str, torch.Tensor]]:
    """Deterministic, length-sorted batches for evaluation (every utterance once)."""
    order = sorted(range(len(utts)), key=lambda i: utts[i].fbank.shape[0])
    return [collate([utts[i] for i in order[j : j + batch_size]]) for j in range(0, len(order), batch_size)]


# ------------------------------------------------------------------------------------------------
# raw waveforms (wav2vec2 models: continue-ssl and its CTC fine-tuning)
# ------------------------------------------------------------------------------------------------
@dataclass
class AudioUtterance:
    id: str
    waveform: torch.Tensor  # (T,) float32 at 16 kHz
    labels: list[int]  # CTC targets (characters of the transcript); empty for unlabelled audio
    transcript: str


def load_audio(
    manifest: Path, vocab: Vocab | None = None, config: FeatureConfig = FeatureConfig()
) -> tuple[list[AudioUtterance], SkipReport]:
    """16 kHz waveforms of a manifest through the same fairseq2 pipeline (bad rows skipped and counted).

    With ``vocab`` (CTC fine-tuning) the lower-cased transcript's characters are the labels and rows with
    an empty transcript or characters outside ``vocab`` are skipped; without it (unlabelled audio for
    ``continue-ssl``) only the ``audio`` column is needed.
    """
    rows = read_manifest(manifest, require_transcript=vocab is not None)
    report = SkipReport()
    kept = []
    for row in rows:
        text = row["transcript"].lower()
        if vocab is not None and not text:
            report.add("empty transcript", str(row.get("id", row["audio"])))
        elif vocab is not None and vocab.oov(text):
            bad = "".join(sorted(vocab.oov(text)))[:10]
            report.add("transcript symbols outside the vocabulary", f"{row.get('id', row['audio'])}: {bad}")
        else:
            kept.append(row)
    out = [
        AudioUtterance(
            id=row.get("id") or Path(row["audio"]).stem,
            waveform=row["waveform"],
            labels=vocab.encode(row["transcript"].lower()) if vocab is not None else [],
            transcript=row["transcript"].lower(),
        )
        for row in featurise_rows(kept, config, report, output="waveform")
    ]
    if report.total:
        log.warning("%s: %s", manifest, report.line())
    if not out:
        raise DataError(
            f"{manifest}: no usable rows ({report.line()}); check the audio files and transcripts"
        )
    return out, report


def collate_audio(utts: Sequence[AudioUtterance]) -> dict[str, torch.Tensor]:
    """Right-padded waveforms (B, T) + lengths and CTC labels (B, S) + lengths."""
    lengths = torch.tensor([u.waveform.numel() for u in utts])
    wave = torch.zeros(len(utts), int(lengths.max()))  # (B, T)
    for i, u in enumerate(utts):
        wave[i, : u.waveform.numel()] = u.waveform
    return {
        "wave": wave,
        "wave_lens": lengths,
        "labels": _pad([u.labels for u in utts]),
        "label_lens": torch.tensor([len(u.labels) for u in utts]),
    }


def char_vocab_of(manifest: Path) -> Vocab:
    """Character vocabulary of a manifest's lower-cased transcripts (CTC labels of wav2vec2 fine-tuning)."""
    return Vocab.build([r["transcript"].lower() for r in read_manifest(manifest) if r["transcript"]], "char")


class AudioBatches(LengthBucketBatches):
    """:class:`LengthBucketBatches` over raw waveforms (same resumable length bucketing)."""

    def __init__(self, utts: Sequence[AudioUtterance], batch_size: int, seed: int = 0) -> None:
        if len(utts) < batch_size:
            raise DataError(
                f"{len(utts)} usable utterances: fewer than one batch of {batch_size}; lower the batch size"
            )
        order = sorted(range(len(utts)), key=lambda i: utts[i].waveform.numel())
        self.batches = [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
        self.utts = utts
        self.seed = seed
        self.epoch = 0
        self.position = 0

    def _collate(self, batch: list[int]) -> dict[str, torch.Tensor]:
        return collate_audio([self.utts[i] for i in batch])
