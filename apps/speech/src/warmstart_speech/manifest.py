"""Manifests (one TSV row per utterance) and the readers that write them from real corpora's own layouts.

Seed paper: "Pre-training for Speech Translation: CTC Meets Optimal Transport" (Le et al., arXiv 2301.11716),
evaluated on MuST-C and CoVoST 2. :func:`prepare_manifest` reads, from local files:

- ``covost``: CoVoST 2 over a Common Voice language folder — ``clips/*.mp3`` plus either the split TSVs
  ``covost_v2.<src>_<tgt>.<split>.tsv`` (``path sentence translation client_id``, as fairseq's
  ``get_covost_splits.py`` and torchaudio write them) or the released ``covost_v2.<src>_<tgt>.tsv``
  (``path translation split``) joined with Common Voice's ``validated.tsv`` for the transcripts;
- ``mustc``: MuST-C's ``en-<tgt>/data/<split>/wav/<talk>.wav`` with ``txt/<split>.yaml`` (one
  ``{duration, offset, wav, speaker_id}`` per segment) and ``txt/<split>.en`` / ``.<tgt>``: rows point at the
  talk WAV with ``offset``/``duration`` seconds, and segments are read by seeking, never pre-cut;
- ``folder``: per-utterance files ``<stem>.wav|flac|mp3|ogg`` + ``<stem>.txt`` (transcript) and/or
  ``<stem>.tr.txt`` (translation).

Only headers are read here (soundfile); a truncated WAV (frames on disk < the header's data chunk) or an
MP3 the bundled libsndfile cannot decode is skipped and named. Phonemes come from espeak-ng's g2p.
Left out: Europarl-ST, CoVoST's X→En TSV conventions beyond the column names above.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from warmstart.errors import DataError
from warmstart_speech.audio import AUDIO_SUFFIXES, header_frames, mp3_supported

if TYPE_CHECKING:
    from warmstart_speech.features import SkipReport

MANIFEST_COLUMNS = (
    "id",
    "audio",
    "n_samples",
    "sample_rate",
    "transcript",
    "phonemes",
    "translation",
    "offset",
    "duration",
)
"""``audio`` is required; ``offset``/``duration`` (seconds) cut a segment out of a longer recording."""
Layout = Literal["folder", "covost", "mustc"]

csv.field_size_limit(sys.maxsize)


def row_id(row: dict[str, Any]) -> str:
    """The name a row is reported by: its ``id``, else its audio file (and offset)."""
    if row.get("id"):
        return str(row["id"])
    audio = row["audio"]["path"] if isinstance(row.get("audio"), dict) else str(row.get("audio", "?"))
    return f"{audio}@{row['offset']}" if row.get("offset") else audio


def write_manifest(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(
            f,
            fieldnames=MANIFEST_COLUMNS,
            delimiter="\t",
            extrasaction="ignore",
            quoting=csv.QUOTE_NONE,
            escapechar="\\",
        )
        writer.writeheader()
        writer.writerows([{k: _clean(v) for k, v in r.items()} for r in rows])
    tmp.replace(path)
    return path


def _clean(value: Any) -> Any:
    return value.replace("\t", " ").replace("\n", " ") if isinstance(value, str) else value


def read_manifest(path: Path, require: Sequence[str] = ("audio",)) -> list[dict[str, str]]:
    """Rows of a TSV manifest (a header with at least ``audio``); audio paths made absolute.

    Missing optional columns read as empty strings; without ``phonemes`` the lower-cased transcript's
    characters are the source units.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: manifest not found; create one with `warmstart-speech data-synth` or `data-prepare`"
        )
    with open(path, newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
        missing = set(require) - set(reader.fieldnames or [])
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
        for column in ("translation", "transcript", "offset", "duration", "id"):
            row[column] = row.get(column) or ""
        if not row.get("phonemes"):
            row["phonemes"] = row["transcript"].lower()  # real corpora without g2p: characters as units
    return rows


def _phonemize(text: str, voice: str | None) -> str:
    if not text or voice is None:
        return text.lower()
    from warmstart_speech.synth import espeak

    return espeak().phonemize(text, voice)


def _audio_ok(path: Path, report: SkipReport, name: str) -> dict[str, int] | None:
    """Header facts of a file (frames, rate) or None after recording why it is skipped."""
    import soundfile as sf

    if not path.is_file():
        report.add("missing audio file", name)
        return None
    if path.suffix.lower() == ".mp3" and not mp3_supported():
        report.add("MP3 not supported by this libsndfile (needs ≥ 1.1)", name)
        return None
    try:
        info = sf.info(str(path))
    except Exception:  # noqa: BLE001 - unreadable header: skipped, named
        report.add("unreadable audio", name)
        return None
    declared = header_frames(path)
    if declared is not None and info.frames < declared:
        report.add("truncated audio (fewer frames than the header declares)", name)
        return None
    return {"n_samples": info.frames, "sample_rate": info.samplerate}


def prepare_manifest(
    root: Path,
    out: Path,
    *,
    layout: Layout = "folder",
    split: str = "train",
    langs: str = "en-de",
    g2p_voice: str | None = "en-us",
) -> tuple[Path, SkipReport]:
    """Write a manifest for the corpus at ``root`` in its published ``layout``; returns it and what was skipped."""
    from warmstart_speech.features import SkipReport

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory; pass the corpus folder (--audio) in the {layout} layout")
    src_lang, _, tgt_lang = langs.partition("-")
    report = SkipReport()
    if layout == "covost":
        raw = _covost_rows(root, split, src_lang, tgt_lang)
    elif layout == "mustc":
        raw = _mustc_rows(root, split, tgt_lang)
    else:
        raw = _folder_rows(root, report)
    report.seen += len(raw)
    rows: list[dict[str, Any]] = []
    headers: dict[str, dict[str, int] | None] = {}
    for row in raw:
        key = row["audio"]
        if key not in headers:
            headers[key] = _audio_ok(Path(key), report, row["id"])
        elif headers[key] is None:
            report.add("segment of an unusable recording", row["id"])
        facts = headers[key]
        if facts is None:
            continue
        if not row["transcript"] and not row["translation"]:
            report.add("no transcript and no translation", row["id"])
            continue
        if row.get("duration"):
            facts = {**facts, "n_samples": round(float(row["duration"]) * facts["sample_rate"])}
        rows.append({**facts, **row, "phonemes": _phonemize(row["transcript"], g2p_voice)})
    if not rows:
        raise DataError(f"{root}: no usable utterance in the {layout} layout ({report.line()})")
    return write_manifest(out, rows), report


def _folder_rows(root: Path, report: SkipReport) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()):
        if path.name.endswith(".tr.txt"):
            continue
        transcript, translation = path.with_suffix(".txt"), path.with_suffix(".tr.txt")
        rows.append(
            {
                "id": path.stem,
                "audio": str(path.resolve()),
                "transcript": transcript.read_text().strip() if transcript.is_file() else "",
                "translation": translation.read_text().strip() if translation.is_file() else "",
            }
        )
    if not rows:
        suffixes = "/".join(s.lstrip(".") for s in AUDIO_SUFFIXES)
        raise DataError(
            f"{root}: no audio files ({suffixes}); pass a folder of <stem>.wav + <stem>.txt files"
        )
    return rows


def _read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def _covost_rows(root: Path, split: str, src: str, tgt: str) -> list[dict[str, Any]]:
    split_tsv = root / f"covost_v2.{src}_{tgt}.{split}.tsv"
    full_tsv = root / f"covost_v2.{src}_{tgt}.tsv"
    if split_tsv.is_file():
        table = _read_tsv(split_tsv)
    elif full_tsv.is_file():
        validated = root / "validated.tsv"
        if not validated.is_file():
            raise DataError(
                f"{root}: {full_tsv.name} needs Common Voice's validated.tsv beside it (transcripts)"
            )
        sentences = {r["path"]: r.get("sentence", "") for r in _read_tsv(validated)}
        table = [
            {**r, "sentence": sentences.get(r["path"], "")}
            for r in _read_tsv(full_tsv)
            if r.get("split") == split
        ]
    else:
        raise DataError(
            f"{root}: no {split_tsv.name} or {full_tsv.name}; pass a Common Voice language folder with the "
            "CoVoST 2 TSVs (and clips/)"
        )
    clips = root / "clips"
    return [
        {
            "id": Path(r["path"]).stem,
            "audio": str((clips / r["path"]).resolve()),
            "transcript": r.get("sentence", "").strip(),
            "translation": r.get("translation", "").strip(),
        }
        for r in table
    ]


def _mustc_rows(root: Path, split: str, tgt: str) -> list[dict[str, Any]]:
    import yaml

    base = root / "data" / split
    if not base.is_dir() and (root / f"en-{tgt}" / "data" / split).is_dir():
        base = root / f"en-{tgt}" / "data" / split
    yaml_file = base / "txt" / f"{split}.yaml"
    src_file, tgt_file = base / "txt" / f"{split}.en", base / "txt" / f"{split}.{tgt}"
    for needed in (yaml_file, src_file, tgt_file):
        if not needed.is_file():
            raise DataError(
                f"{needed}: missing; pass MuST-C's en-{tgt} folder (data/<split>/wav, data/<split>/txt)"
            )
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    segments = yaml.load(yaml_file.read_text(), Loader=loader) or []
    sources = src_file.read_text(encoding="utf-8").splitlines()
    targets = tgt_file.read_text(encoding="utf-8").splitlines()
    if not len(segments) == len(sources) == len(targets):
        raise DataError(
            f"{base / 'txt'}: {len(segments)} segments in {yaml_file.name} but {len(sources)} / {len(targets)} "
            f"lines in {src_file.name} / {tgt_file.name}; the files must align line by line"
        )
    rows, index = [], {}
    for seg, source, target in zip(segments, sources, targets, strict=True):
        talk = Path(seg["wav"]).stem
        index[talk] = index.get(talk, -1) + 1
        rows.append(
            {
                "id": f"{talk}_{index[talk]}",
                "audio": str((base / "wav" / seg["wav"]).resolve()),
                "offset": f"{float(seg['offset']):.3f}",
                "duration": f"{float(seg['duration']):.3f}",
                "transcript": source.strip(),
                "translation": target.strip(),
            }
        )
    return rows
