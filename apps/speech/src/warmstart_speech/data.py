"""The speech app's data layer in one import: the names of its five modules.

Seed paper: "Pre-training for Speech Translation: CTC Meets Optimal Transport" (Le et al., arXiv 2301.11716).
The code lives in :mod:`~warmstart_speech.synth` (the espeak-ng corpus generator),
:mod:`~warmstart_speech.audio` (decoding, truncation checks, resampling), :mod:`~warmstart_speech.manifest`
(TSV manifests; CoVoST 2, MuST-C and per-utterance folders), :mod:`~warmstart_speech.text` (phoneme symbols,
SentencePiece targets), :mod:`~warmstart_speech.features` (fbank/waveform featurisation with named skips)
and :mod:`~warmstart_speech.batches`; this module re-exports them for callers that import from one place.
"""

from __future__ import annotations

from warmstart_speech.audio import AUDIO_SUFFIXES, SAMPLE_RATE, AudioProblem, decode, header_frames, resample
from warmstart_speech.audio import _sinc_kernels as _sinc_kernels
from warmstart_speech.batches import (
    AudioBatches,
    LengthBucketBatches,
    _pad,
    collate,
    collate_audio,
    eval_batches,
    eval_order,
)
from warmstart_speech.features import (
    FBANK_WINDOW,
    AudioUtterance,
    FeatureConfig,
    FeatureStore,
    SkipReport,
    Utterance,
    char_vocab_of,
    featurise_rows,
    load_audio,
    load_utterances,
)
from warmstart_speech.manifest import (
    MANIFEST_COLUMNS,
    prepare_manifest,
    read_manifest,
    row_id,
    write_manifest,
)
from warmstart_speech.synth import LANGUAGE_VOICES, Espeak, SynthConfig, espeak, make_sentence, synth_corpus
from warmstart_speech.text import BOS, EOS, PAD, SPECIALS, UNK, TextConfig, Vocab, build_vocabs

__all__ = [
    "AUDIO_SUFFIXES",
    "BOS",
    "EOS",
    "FBANK_WINDOW",
    "LANGUAGE_VOICES",
    "MANIFEST_COLUMNS",
    "PAD",
    "SAMPLE_RATE",
    "SPECIALS",
    "UNK",
    "AudioBatches",
    "AudioProblem",
    "AudioUtterance",
    "Espeak",
    "FeatureConfig",
    "FeatureStore",
    "LengthBucketBatches",
    "SkipReport",
    "SynthConfig",
    "TextConfig",
    "Utterance",
    "Vocab",
    "_pad",
    "build_vocabs",
    "char_vocab_of",
    "collate",
    "collate_audio",
    "decode",
    "espeak",
    "eval_batches",
    "eval_order",
    "featurise_rows",
    "header_frames",
    "load_audio",
    "load_utterances",
    "make_sentence",
    "prepare_manifest",
    "read_manifest",
    "resample",
    "row_id",
    "synth_corpus",
    "write_manifest",
]
