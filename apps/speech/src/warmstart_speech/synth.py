"""An offline spoken-corpus generator: English → German sentence pairs spoken by espeak-ng, as real files.

Seed paper: "Pre-training for Speech Translation: CTC Meets Optimal Transport" (Le et al., arXiv 2301.11716),
whose CTC targets are phonemes (transcripts through g2p). Implemented: a structured English → German sentence
generator with a deterministic translation (word-order change included), spoken with espeak-ng (voice, rate,
pitch and white noise vary) into WAV/FLAC files plus a TSV manifest with espeak-ng's phonemes;
``SynthConfig.language="de"`` speaks the German side with German voices (a second language for
``continue-ssl``, Nowakowski et al., arXiv 2301.07295). The espeak-ng binding is ctypes over the
``espeakng-loader`` wheel (no Python binding ships one). Left out: other languages' grammars.
"""

from __future__ import annotations

import ctypes
import json
import math
import random
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import torch

from warmstart.errors import DataError
from warmstart_speech.audio import SAMPLE_RATE, resample
from warmstart_speech.manifest import write_manifest

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
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
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
        write_manifest(paths[split], rows)
    (out / "synth.json").write_text(
        json.dumps({"config": config.__dict__, "sample_rate_tts": tts.sample_rate}, default=list)
    )
    return paths
