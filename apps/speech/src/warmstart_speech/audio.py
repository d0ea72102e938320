"""Audio files: decoding through fairseq2, resampling to 16 kHz, and the checks that keep bad files out.

Seed paper: "Pre-training for Speech Translation: CTC Meets Optimal Transport" (Le et al., arXiv 2301.11716)
trains on 16 kHz 80-bin log-mel filterbanks (MuST-C / CoVoST 2). Implemented: :func:`decode` — a whole file
through fairseq2's ``AudioDecoder`` (libsndfile: WAV, FLAC, OGG and, with the bundled libsndfile ≥ 1.1, MP3
as CoVoST's Common Voice clips are), or a segment at ``offset``/``duration`` seconds of a long recording
(MuST-C's talk WAVs, read by seeking with soundfile); :func:`header_frames` — the frame count a WAV's
``data`` chunk or a FLAC's STREAMINFO declares, so a truncated file is caught (frames read < header) instead
of being decoded partially; :func:`resample`, a band-limited resampler.

Written by hand, and why: fairseq2 0.8's fbank converter accepts only 16 kHz input and fairseq2 ships no
resampler (torchaudio is not a dependency), so :func:`resample` is a windowed-sinc polyphase resampler in
torch. The RIFF/FLAC header readers are a few lines each; libsndfile itself reports a truncated WAV's
*available* frames, not the declared ones. Left out: video containers, Opus.
"""

from __future__ import annotations

import math
import struct
from functools import cache
from pathlib import Path

import numpy as np
import torch

SAMPLE_RATE = 16_000
"""The rate fairseq2's fbank converter requires; audio at other rates is resampled to it."""
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")
"""Audio files a folder scan picks up."""


class AudioProblem(Exception):
    """A file that cannot be used; ``reason`` is the skip category, the message its detail."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason


@cache
def mp3_supported() -> bool:
    """Whether the libsndfile in use (the soundfile wheel's, preloaded for fairseq2) decodes MP3."""
    import soundfile as sf

    return "MP3" in sf.available_formats()


def header_frames(path: Path) -> int | None:
    """Frames the file's header declares: a WAV's ``data`` chunk size / block align, a FLAC's STREAMINFO
    total samples; None when unknown (other formats, streamed WAVs with a placeholder size)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
                return _wav_data_frames(f)
            if head[:4] == b"fLaC":
                f.seek(4)
                block = f.read(4 + 34)  # metadata header + STREAMINFO
                if len(block) < 38 or block[0] & 0x7F != 0:
                    return None
                info = block[4:]
                total = int.from_bytes(info[13:18], "big") & ((1 << 36) - 1)
                return total or None
    except OSError:
        return None
    return None


def _wav_data_frames(f) -> int | None:  # noqa: ANN001 - an open binary file after the RIFF header
    block_align = None
    while True:
        chunk = f.read(8)
        if len(chunk) < 8:
            return None
        name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if name == b"fmt ":
            fmt = f.read(size + (size & 1))
            block_align = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else None
            continue
        if name == b"data":
            if not block_align or size in (0, 0xFFFFFFFF):
                return None
            return size // block_align
        f.seek(size + (size & 1), 1)


def decode(
    path: str | Path, offset: float | None = None, duration: float | None = None
) -> tuple[torch.Tensor, int]:
    """Mono float32 waveform (T,) and its sample rate, of a whole file or of a segment in seconds.

    Raises :class:`AudioProblem` for a missing, unreadable, truncated or unsupported file.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioProblem("missing audio file", str(path))
    if path.suffix.lower() == ".mp3" and not mp3_supported():
        raise AudioProblem("MP3 not supported by this libsndfile (needs ≥ 1.1)", str(path))
    if offset is not None or duration is not None:
        return _decode_segment(path, offset or 0.0, duration)
    decoder = _decoder()  # loads fairseq2 (libsndfile preloaded) first
    from fairseq2.data._memory import MemoryBlock

    try:
        decoded = decoder(MemoryBlock(path.read_bytes()))
    except Exception as exc:  # noqa: BLE001 - a bad file must not end the epoch
        raise AudioProblem("unreadable audio", f"{path}: {str(exc).splitlines()[0][:80]}") from None
    wave = decoded["waveform"]
    if wave.dim() == 2:  # (T, C): mix down
        wave = wave.mean(dim=1)
    expected = header_frames(path)
    if expected is not None and wave.numel() < expected:
        raise AudioProblem(
            "truncated audio (fewer frames than the header declares)", f"{path}: {wave.numel()} of {expected}"
        )
    return wave.float(), int(decoded["sample_rate"])


@cache
def _decoder():  # noqa: ANN202
    from warmstart_speech.fs2 import fairseq2_data

    return fairseq2_data().audio.AudioDecoder(dtype=torch.float32)


def _decode_segment(path: Path, offset: float, duration: float | None) -> tuple[torch.Tensor, int]:
    import soundfile as sf

    try:
        info = sf.info(str(path))
        start = int(round(offset * info.samplerate))
        frames = -1 if duration is None else int(round(duration * info.samplerate))
        declared = header_frames(path)
        available = info.frames
        if declared is not None and declared > available:
            raise AudioProblem(
                "truncated audio (fewer frames than the header declares)",
                f"{path}: {available} of {declared}",
            )
        if start + max(frames, 0) > available:
            raise AudioProblem("segment beyond the end of its recording", f"{path}@{offset:g}s+{duration}s")
        wave, rate = sf.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
    except AudioProblem:
        raise
    except Exception as exc:  # noqa: BLE001
        raise AudioProblem("unreadable audio", f"{path}: {str(exc).splitlines()[0][:80]}") from None
    return torch.from_numpy(np.ascontiguousarray(wave.mean(axis=1))), int(rate)


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
