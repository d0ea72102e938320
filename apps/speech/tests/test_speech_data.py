"""Data: resampling keeps frequencies, the generator writes real audio + manifests, bad rows are skipped."""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from warmstart_speech.data import (
    SAMPLE_RATE,
    UNK,
    LengthBucketBatches,
    Vocab,
    load_utterances,
    make_sentence,
    read_manifest,
    resample,
)


@pytest.mark.parametrize(("orig", "new"), [(22050, 16000), (8000, 16000), (48000, 16000)])
def test_resample_keeps_frequency_and_length(orig: int, new: int) -> None:
    t = torch.arange(orig) / orig  # 1 s
    wave = torch.sin(2 * math.pi * 440 * t)
    out = resample(wave, orig, new)
    assert out.shape[-1] == new
    spectrum = torch.fft.rfft(out).abs()
    assert int(spectrum.argmax()) == 440  # 1 s → bin index = Hz
    assert abs(float(out[new // 4 : 3 * new // 4].pow(2).mean()) - 0.5) < 0.02  # amplitude kept


def test_sentence_translation_is_deterministic_and_reorders() -> None:
    a, b = make_sentence(random.Random(5)), make_sentence(random.Random(5))
    assert a == b
    pairs = [make_sentence(random.Random(i)) for i in range(50)]
    fronted = [(s, t) for s, t in pairs if s.endswith(("today", "at night", "again"))]
    assert fronted and all(t.split()[0] in ("heute", "nachts", "wieder") for _, t in fronted)


def test_synth_writes_real_audio_and_manifest(corpus: dict[str, Path]) -> None:
    rows = read_manifest(corpus["train"])
    assert len(rows) == 24
    suffixes = {Path(r["audio"]).suffix for r in rows}
    assert suffixes <= {".wav", ".flac"} and len(suffixes) == 2
    for r in rows[:5]:
        info = sf.info(r["audio"])
        assert info.frames == int(r["n_samples"]) > 0 and info.samplerate == int(r["sample_rate"])
        assert r["phonemes"] and r["translation"]
        wave, _ = sf.read(r["audio"])
        assert np.abs(wave).max() > 0.05  # actual speech, not silence


def test_featurise_and_bucket(corpus: dict[str, Path]) -> None:
    rows = read_manifest(corpus["train"])
    src, tgt = (
        Vocab.build([r["phonemes"] for r in rows]),
        Vocab.build([r["translation"] for r in rows], "word"),
    )
    utts, report = load_utterances(corpus["train"], src, tgt)
    assert len(utts) == 24 and report.total == 0
    for u, r in zip(utts, rows, strict=True):
        seconds = int(r["n_samples"]) / int(r["sample_rate"])
        assert abs(u.fbank.shape[0] - seconds * 100) < 3  # 10 ms hop, at any source rate
        assert u.fbank.shape[1] == 80
    batches = LengthBucketBatches(utts, 4, seed=0)
    it = iter(batches)
    first = [next(it) for _ in range(3)]
    state = batches.state_dict()
    nxt = next(it)
    again = LengthBucketBatches(utts, 4, seed=0)
    again.load_state_dict(state)
    assert torch.equal(next(iter(again))["fbank"], nxt["fbank"])  # exact resume
    spread = [int(b["fbank_lens"].max() - b["fbank_lens"].min()) for b in first]
    assert max(spread) < max(u.fbank.shape[0] for u in utts) - min(u.fbank.shape[0] for u in utts)


@pytest.fixture
def bad_manifest(corpus: dict[str, Path], tmp_path: Path) -> tuple[Path, list[dict[str, str]]]:
    """4 good rows, one good row re-encoded at 44.1 kHz, and one row of each kind of bad input."""
    rows = read_manifest(corpus["train"])[:4]
    (tmp_path / "garbage.wav").write_bytes(b"not audio at all")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), SAMPLE_RATE)
    sf.write(tmp_path / "long.wav", np.zeros(SAMPLE_RATE * 25, np.float32), SAMPLE_RATE)  # > max_seconds 20
    sf.write(tmp_path / "low.wav", np.zeros(4000, np.float32), 4000)
    wave, rate = sf.read(rows[2]["audio"], dtype="float32")
    sf.write(tmp_path / "hi.flac", resample(torch.from_numpy(wave), rate, 44100).numpy(), 44100)
    bad = [
        {**rows[0], "audio": str(tmp_path / "missing.wav")},
        {**rows[0], "audio": str(tmp_path / "garbage.wav")},
        {**rows[0], "audio": str(tmp_path / "empty.wav")},
        {**rows[0], "audio": str(tmp_path / "long.wav")},
        {**rows[0], "audio": str(tmp_path / "low.wav")},
        {**rows[1], "phonemes": "QQQ§", "transcript": "QQQ§"},
    ]
    good = [*rows, {**rows[2], "id": "hi-rate", "audio": str(tmp_path / "hi.flac"), "sample_rate": "44100"}]
    manifest = tmp_path / "m.tsv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t")
        w.writeheader()
        w.writerows(good + bad)
    return manifest, good


def test_bad_rows_are_counted_not_fatal(bad_manifest: tuple[Path, list[dict[str, str]]]) -> None:
    from warmstart_speech.data import FeatureConfig

    manifest, good = bad_manifest
    src = Vocab.build([r["phonemes"] for r in good])
    tgt = Vocab.build([r["translation"] for r in good], "word")
    utts, report = load_utterances(manifest, src, tgt, FeatureConfig(max_seconds=2.5))
    long_good = sum(1 for r in good if int(r["n_samples"]) / int(r["sample_rate"]) > 2.5)
    assert len(utts) == len(good) - long_good + 1  # the row with unknown symbols is kept (as <unk>)
    assert report.total == 5 + long_good and report.seen == len(good) + 6
    assert {"missing audio file", "unreadable audio", "zero-length audio"} <= set(report.counts)
    assert report.counts["sample rate below 8000 Hz"] == 1
    assert "skipped" in report.line() and "missing.wav" in report.line() and "garbage.wav" in report.line()
    odd = next(u for u in utts if u.transcript == "QQQ§")
    assert UNK in odd.src
    same = {u.id: u for u in utts}
    if "hi-rate" in same:  # the 44.1 kHz copy is resampled to 16 kHz: the same number of fbank frames
        assert abs(same["hi-rate"].n_frames - same[good[2]["id"]].n_frames) <= 1


def test_bad_rows_waveform_path(bad_manifest: tuple[Path, list[dict[str, str]]]) -> None:
    """The wav2vec2 loader (raw waveforms) skips and counts the same rows; unlabelled use ignores text."""
    from warmstart_speech.data import FeatureConfig, load_audio

    manifest, good = bad_manifest
    vocab = Vocab.build([r["transcript"].lower() for r in good])
    utts, report = load_audio(manifest, vocab, FeatureConfig())
    assert len(utts) == len(good) + 1 and report.total == 5
    assert all(u.waveform.dim() == 1 and u.labels for u in utts)
    hi = next(u for u in utts if u.id == "hi-rate")
    ref = next(u for u in utts if u.id == good[2]["id"])
    assert abs(hi.waveform.numel() - ref.waveform.numel()) <= 2  # resampled 44.1 kHz → 16 kHz
    unlabelled, report = load_audio(manifest, None, FeatureConfig())
    assert len(unlabelled) == len(good) + 1 and report.total == 5


def test_training_survives_bad_rows(
    quiet, bad_manifest: tuple[Path, list[dict[str, str]]], capsys: pytest.CaptureFixture
) -> None:
    """A whole CLI training run over a manifest full of bad rows finishes and reports the skipped count."""
    from warmstart_speech.cli import app

    manifest, _ = bad_manifest
    code = app.main(
        [
            "pretrain",
            "--data",
            str(manifest),
            "--objective",
            "ctc",
            *quiet(max_steps=3, micro_batch_size=2),
            "--model.model_dim",
            "32",
            "--model.ffn_dim",
            "64",
            "--model.subsampler_dim",
            "32",
            "--out",
            str(manifest.parent / "run"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "skipped" in out and "missing audio file" in out


def test_synth_second_language(tmp_path: Path) -> None:
    """language=de speaks the German side (German voices); the English sentence becomes the translation."""
    from warmstart.errors import DataError
    from warmstart_speech.data import SynthConfig, synth_corpus

    paths = synth_corpus(tmp_path / "de", SynthConfig(n_train=3, n_test=0, language="de", seed=4))
    rows = read_manifest(paths["train"])
    english = {w for pair in [make_sentence(random.Random(i)) for i in range(200)] for w in pair[0].split()}
    for row in rows:
        assert set(row["transcript"].split()) - english  # German words (der/die/sieht ...) are spoken
        assert set(row["translation"].split()) <= english
        assert sf.info(row["audio"]).frames > 0
    with pytest.raises(DataError, match="synth.language"):
        synth_corpus(tmp_path / "xx", SynthConfig(n_train=1, n_test=0, language="xx"))
