"""Real inputs: CoVoST 2 / MuST-C / folder layouts, open-vocabulary targets, truncated and MP3 audio, short
clips in continue-ssl (both backends), memory-mapped features (the default) read in-process or by loader
workers, with the same values and batches."""

from __future__ import annotations

import csv
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from warmstart_speech.batches import bucket_stream
from warmstart_speech.cli import app
from warmstart_speech.data import (
    SAMPLE_RATE,
    UNK,
    FeatureConfig,
    SkipReport,
    TextConfig,
    Vocab,
    featurise_rows,
    header_frames,
    load_utterances,
    prepare_manifest,
    read_manifest,
)


def _tone(seconds: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_spm_targets_are_open_vocabulary(corpus: dict[str, Path]) -> None:
    rows = read_manifest(corpus["train"])
    vocab = Vocab.build([r["translation"] for r in rows], "spm", TextConfig(vocab_size=300))
    unseen = "die riesige Giraffe ißt grüne Äpfel"
    ids = vocab.encode(unseen)
    assert UNK not in ids and vocab.decode(ids) == unseen  # byte fallback: every string encodes
    again = Vocab.from_json(vocab.to_json())
    assert again.encode(unseen) == ids and len(again) == len(vocab)
    closed = Vocab.build([r["translation"] for r in rows], "word")
    assert UNK in closed.encode(unseen)  # the old word vocabulary could not


def test_truncated_wav_and_mp3(tmp_path: Path) -> None:
    """A truncated WAV is detected (frames on disk < the header's) and skipped by name, in data-prepare and
    in featurisation; MP3 decodes through the bundled libsndfile, or is counted by name where it cannot."""
    folder = tmp_path / "utts"
    folder.mkdir()
    for name in ("good", "cut"):
        sf.write(folder / f"{name}.wav", _tone(1.0), SAMPLE_RATE, subtype="PCM_16")
        (folder / f"{name}.txt").write_text("the cat")
    sf.write(folder / "clip.mp3", _tone(1.0), SAMPLE_RATE, format="MP3")
    (folder / "clip.txt").write_text("the dog")
    assert header_frames(folder / "cut.wav") == SAMPLE_RATE
    _truncate(folder / "cut.wav")
    assert header_frames(folder / "cut.wav") == SAMPLE_RATE > sf.info(str(folder / "cut.wav")).frames
    manifest, report = prepare_manifest(folder, tmp_path / "m.tsv", g2p_voice=None)
    assert [r["id"] for r in read_manifest(manifest)] == ["clip", "good"]
    assert report.names["truncated audio (fewer frames than the header declares)"] == ["cut"]
    rows = [{"id": p.stem, "audio": str(p)} for p in sorted(folder.glob("*.wav")) + [folder / "clip.mp3"]]
    seen = SkipReport()
    out = {r["id"]: r for r in featurise_rows(rows, FeatureConfig(), seen)}
    assert set(out) == {"good", "clip"} and seen.names[next(iter(seen.names))] == ["cut"]
    assert abs(out["clip"]["fbank"].shape[0] - out["good"]["fbank"].shape[0]) <= 5  # the MP3 decoded in full

    import warmstart_speech.audio as audio

    audio.mp3_supported.cache_clear()
    real = audio.mp3_supported
    try:
        audio.mp3_supported = lambda: False  # type: ignore[assignment]
        import warmstart_speech.manifest as manifest_module

        manifest_module.mp3_supported = audio.mp3_supported
        _, report = prepare_manifest(folder, tmp_path / "m2.tsv", g2p_voice=None)
        assert report.names["MP3 not supported by this libsndfile (needs ≥ 1.1)"] == ["clip"]
        skipped = SkipReport()
        assert not list(featurise_rows([rows[-1]], FeatureConfig(), skipped))
        assert "clip" in skipped.line()
    finally:
        audio.mp3_supported = real
        manifest_module.mp3_supported = real


def test_covost2_layout(tmp_path: Path) -> None:
    """A Common Voice folder with clips/*.mp3 and CoVoST 2 TSVs (split files, or the full TSV + validated.tsv)."""
    root = tmp_path / "en"
    (root / "clips").mkdir(parents=True)
    names = [f"common_voice_en_{i}.mp3" for i in range(3)]
    for name in names:
        sf.write(root / "clips" / name, _tone(0.8), SAMPLE_RATE, format="MP3")
    header = "path\tsentence\ttranslation\tclient_id\n"
    body = "".join(f"{n}\tHello number {i}.\tHallo Nummer {i}.\tc{i}\n" for i, n in enumerate(names[:2]))
    (root / "covost_v2.en_de.train.tsv").write_text(header + body + "missing.mp3\tGone.\tWeg.\tc9\n")
    manifest, report = prepare_manifest(
        root, tmp_path / "train.tsv", layout="covost", split="train", g2p_voice=None
    )
    rows = read_manifest(manifest)
    assert [r["translation"] for r in rows] == ["Hallo Nummer 0.", "Hallo Nummer 1."]
    assert rows[0]["transcript"] == "Hello number 0." and report.names["missing audio file"] == ["missing"]
    (root / "covost_v2.en_de.train.tsv").unlink()
    (root / "covost_v2.en_de.tsv").write_text(
        "path\ttranslation\tsplit\n"
        + "".join(f"{n}\tT{i}\t{'test' if i == 2 else 'train'}\n" for i, n in enumerate(names))
    )
    (root / "validated.tsv").write_text(
        "client_id\tpath\tsentence\n" + "".join(f"c\t{n}\tS{i}\n" for i, n in enumerate(names))
    )
    manifest, _ = prepare_manifest(root, tmp_path / "test.tsv", layout="covost", split="test", g2p_voice=None)
    assert [(r["transcript"], r["translation"]) for r in read_manifest(manifest)] == [("S2", "T2")]


def test_mustc_layout_reads_segments_by_offset(tmp_path: Path) -> None:
    """MuST-C: talk WAVs + train.yaml offsets + .en/.de lines; segments are read by seeking, not pre-cut."""
    base = tmp_path / "en-de" / "data" / "train"
    (base / "wav").mkdir(parents=True)
    (base / "txt").mkdir()
    talk = np.concatenate([_tone(1.0), np.zeros(SAMPLE_RATE // 2, np.float32), 0.5 * _tone(2.0)])
    sf.write(base / "wav" / "ted_1.wav", talk, SAMPLE_RATE, subtype="PCM_16")
    segments = [(0.0, 1.0), (1.5, 2.0), (3.2, 1.0)]  # the last runs past the end of the recording
    (base / "txt" / "train.yaml").write_text(
        "".join(
            f"- {{duration: {d}, offset: {o}, rW: 2, uW: 0, speaker_id: spk.1, wav: ted_1.wav}}\n"
            for o, d in segments
        )
    )
    (base / "txt" / "train.en").write_text("hello there\ngood morning\ntoo far\n")
    (base / "txt" / "train.de").write_text("hallo\nguten morgen\nzu weit\n")
    manifest, _ = prepare_manifest(tmp_path / "en-de", tmp_path / "m.tsv", layout="mustc", g2p_voice=None)
    rows = read_manifest(manifest)
    assert [r["id"] for r in rows] == ["ted_1_0", "ted_1_1", "ted_1_2"]
    assert rows[1]["offset"] == "1.500" and rows[1]["translation"] == "guten morgen"
    report = SkipReport()
    out = {r["id"]: r for r in featurise_rows(rows, FeatureConfig(), report)}
    beyond = report.names["segment beyond the end of its recording"]
    assert set(out) == {"ted_1_0", "ted_1_1"} and beyond == ["ted_1_2 (ted_1.wav)"]
    assert abs(out["ted_1_1"]["seconds"] - 2.0) < 1e-3 and abs(out["ted_1_0"]["seconds"] - 1.0) < 1e-3
    wave_cut = out["ted_1_1"]["fbank"]
    sf.write(
        tmp_path / "cut.wav",
        talk[int(1.5 * SAMPLE_RATE) : int(3.5 * SAMPLE_RATE)],
        SAMPLE_RATE,
        subtype="PCM_16",
    )
    precut = next(
        featurise_rows([{"id": "x", "audio": str(tmp_path / "cut.wav")}], FeatureConfig(), SkipReport())
    )
    assert torch.allclose(wave_cut, precut["fbank"], atol=1e-4)  # the same features as a pre-cut file


def _vocabs(manifest: Path) -> tuple[Vocab, Vocab]:
    rows = read_manifest(manifest)
    return Vocab.build([r["phonemes"] for r in rows]), Vocab.build([r["translation"] for r in rows], "word")


def test_features_live_on_disk_by_default(corpus: dict[str, Path], tmp_path: Path) -> None:
    from warmstart_speech.features import FeatureRef, default_store

    src, tgt = _vocabs(corpus["test"])
    memory, _ = load_utterances(corpus["test"], src, tgt, FeatureConfig(in_memory=True))
    default, _ = load_utterances(corpus["test"], src, tgt)
    stored, _ = load_utterances(corpus["test"], src, tgt, FeatureConfig(store=tmp_path / "feats"))
    assert isinstance(memory[0].fbank, torch.Tensor)
    assert all(isinstance(u.fbank, FeatureRef) for u in default + stored)
    assert default[0].fbank.path.parent == default_store() and (tmp_path / "feats" / "test.f32").is_file()
    again, _ = load_utterances(corpus["test"], src, tgt)  # a second load writes a file of its own
    assert again[0].fbank.path != default[0].fbank.path
    for a, b, c in zip(memory, default, stored, strict=True):
        assert a.n_frames == b.n_frames == c.n_frames
        assert torch.equal(a.features(), b.features()) and torch.equal(a.features(), c.features())


def _equal_batches(xs: list[dict[str, torch.Tensor]], ys: list[dict[str, torch.Tensor]]) -> bool:
    return len(xs) == len(ys) and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(xs, ys, strict=True)
    )


def test_loader_workers_give_the_same_batches_and_resume_exactly(corpus: dict[str, Path]) -> None:
    """Two workers reading the stored features yield the in-process stream's batches, across an epoch
    boundary, and a stream restored from a mid-epoch state continues with exactly the next ones."""
    src, tgt = _vocabs(corpus["train"])
    utts, _ = load_utterances(corpus["train"], src, tgt)  # 24 utterances: 6 buckets of 4
    expected = list(islice(iter(bucket_stream(utts, 4, seed=5)), 9))
    assert not _equal_batches(expected[:3], expected[6:])  # the second epoch's order is another
    workers = bucket_stream(utts, 4, seed=5, num_workers=2)
    stream = iter(workers)
    first = [next(stream) for _ in range(4)]
    state = workers.state_dict()
    del stream, workers
    resumed = bucket_stream(utts, 4, seed=5, num_workers=2)
    resumed.load_state_dict(state)
    assert _equal_batches(expected, first + list(islice(iter(resumed), 5)))


@pytest.mark.parametrize("backend", ["fairseq2", "hf"])
def test_continue_ssl_skips_short_clips(
    quiet, tmp_path: Path, corpus: dict[str, Path], backend: str, capsys
) -> None:  # noqa: ANN001
    """A 0.1 s clip is skipped and named (too short for the mask spans), never a crash, on both backends."""
    rows = read_manifest(corpus["train"])[:4]
    sf.write(tmp_path / "short.wav", _tone(0.1), SAMPLE_RATE, subtype="PCM_16")
    manifest = tmp_path / "unlabelled.tsv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["id", "audio"])
        writer.writerows([[r["id"], r["audio"]] for r in rows] + [["short", str(tmp_path / "short.wav")]])
    code = app.main(
        [
            "continue-ssl",
            "--data",
            str(manifest),
            "--ssl.backend",
            backend,
            "--engine.train.micro_batch_size",
            "2",
            "--out",
            str(tmp_path / "ssl"),
            *quiet(max_steps=2),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "too short for the wav2vec2 mask spans" in out and "(short)" in out
