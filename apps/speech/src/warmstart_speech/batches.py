"""Batches: padded collation and resumable length-bucketed micro-batch streams.

Seed paper: "Pre-training for Speech Translation: CTC Meets Optimal Transport" (Le et al., arXiv 2301.11716)
batches utterances of similar length (fairseq's ``--max-tokens``); here a fixed batch size over length-sorted
buckets, shuffled per epoch by the core's seeded :func:`~warmstart.data.sampling.epoch_permutation`.
The stream's ``state_dict`` goes into the engine's checkpoints, so a resumed run sees exactly the same
batches. Features stored in a :class:`~warmstart_speech.features.FeatureStore` are read per batch: in this
process, or with ``num_workers > 0`` (:func:`bucket_stream`) by the engine's
:class:`~warmstart.engine.data.WorkerLoader` workers (torchdata's ``StatefulDataLoader``) over the same
buckets in the same seeded order, so both give the same batches and resume exactly.
Left out: token-budget batching.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch

from warmstart.data.sampling import epoch_permutation
from warmstart.errors import DataError
from warmstart_speech.features import AudioUtterance, Utterance
from warmstart_speech.text import BOS, EOS, PAD


def _pad(seqs: Sequence[Sequence[int]], value: int = PAD) -> torch.Tensor:
    width = max(1, max(len(s) for s in seqs))
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out  # (B, S)


def collate(utts: Sequence[Utterance]) -> dict[str, torch.Tensor]:
    """Padded fbanks (B, T, C) + lengths, phoneme ids (B, S), decoder input/target pieces (B, U)."""
    feats_list = [u.features() for u in utts]
    lengths = torch.tensor([f.shape[0] for f in feats_list])
    feats = torch.zeros(len(utts), int(lengths.max()), feats_list[0].shape[1])  # (B, T, C)
    for i, f in enumerate(feats_list):
        feats[i, : f.shape[0]] = f
    return {
        "fbank": feats,
        "fbank_lens": lengths,
        "src": _pad([u.src for u in utts]),
        "src_lens": torch.tensor([len(u.src) for u in utts]),
        "tgt_in": _pad([[BOS] + u.tgt for u in utts]),
        "tgt_out": _pad([u.tgt + [EOS] for u in utts]),
    }


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


def length_buckets(utts: Sequence[Any], batch_size: int) -> list[list[int]]:
    """Indices sorted by length, cut into full batches of ``batch_size`` (the short tail is dropped)."""
    if len(utts) < batch_size:
        raise DataError(
            f"{len(utts)} usable utterances: fewer than one batch of {batch_size}; lower the batch size"
        )
    order = sorted(range(len(utts)), key=lambda i: utts[i].n_frames)
    return [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]


class LengthBucketBatches:
    """Resumable stream of micro-batches of similar length (sorted into buckets, then shuffled per epoch)."""

    def __init__(self, utts: Sequence[Any], batch_size: int, seed: int = 0) -> None:
        self.batches = length_buckets(utts, batch_size)
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


class AudioBatches(LengthBucketBatches):
    """:class:`LengthBucketBatches` over raw waveforms (same resumable length bucketing)."""

    def _collate(self, batch: list[int]) -> dict[str, torch.Tensor]:
        return collate_audio([self.utts[i] for i in batch])


class BucketDataset:
    """The length buckets as a map-style dataset: item ``i`` is bucket ``i`` collated (read from the store)."""

    def __init__(
        self,
        utts: Sequence[Any],
        batch_size: int,
        collate_fn: Callable[[list[Any]], dict[str, torch.Tensor]] = collate,
    ) -> None:
        self.utts, self.buckets, self.collate_fn = utts, length_buckets(utts, batch_size), collate_fn

    def __len__(self) -> int:
        return len(self.buckets)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.collate_fn([self.utts[i] for i in self.buckets[index]])


def _one(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return items[0]  # the loader's "batch" of one bucket is that bucket's batch


def bucket_stream(
    utts: Sequence[Any], batch_size: int, seed: int = 0, num_workers: int = 0, audio: bool = False
) -> Iterable[dict[str, torch.Tensor]]:
    """The training stream: :class:`LengthBucketBatches` in this process, or with ``num_workers > 0`` the
    same buckets in the same seeded per-epoch order read by the engine's :class:`WorkerLoader` (one bucket
    per loader item), whose state resumes exactly. ``audio``: raw waveforms (:func:`collate_audio`)."""
    if num_workers <= 0:
        return AudioBatches(utts, batch_size, seed) if audio else LengthBucketBatches(utts, batch_size, seed)
    from warmstart.engine.data import WorkerLoader

    dataset = BucketDataset(utts, batch_size, collate_audio if audio else collate)
    return WorkerLoader(dataset, 1, num_workers=num_workers, seed=seed, collate_fn=_one)


def eval_order(utts: Sequence[Any]) -> list[int]:
    """Indices sorted by length: the order of :func:`eval_batches`."""
    return sorted(range(len(utts)), key=lambda i: utts[i].n_frames)


def eval_batches(utts: Sequence[Utterance], batch_size: int) -> list[dict[str, torch.Tensor]]:
    """Deterministic, length-sorted batches for evaluation (every utterance once)."""
    order = eval_order(utts)
    return [collate([utts[i] for i in order[j : j + batch_size]]) for j in range(0, len(order), batch_size)]
