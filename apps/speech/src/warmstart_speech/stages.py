"""The recipe's stages as functions over loaded data: MT → pretrain (ctc | ctc+ot | ce) → ST, on the engine.

Seed paper: "Pre-training for Speech Translation: CTC Meets Optimal Transport" (Le et al., arXiv 2301.11716).
Each stage builds its fairseq2 model, wraps the maths in a task (:mod:`warmstart_speech.ctc_ot`) and hands
it to the core's :class:`~warmstart.engine.Engine`; the CLI and the bench call these. Continued wav2vec2 SSL
pretraining (Nowakowski et al., arXiv 2301.07295) has its stages in :mod:`warmstart_speech.ssl`.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from warmstart.engine import Engine, EngineConfig, RunSummary
from warmstart.errors import DataError
from warmstart_speech.batches import bucket_stream
from warmstart_speech.ctc_ot import (
    MTTask,
    Objective,
    OTConfig,
    PretrainModel,
    PretrainTask,
    STTask,
    text_batches,
)
from warmstart_speech.data import (
    FeatureConfig,
    SkipReport,
    TextConfig,
    Utterance,
    Vocab,
    build_vocabs,
    load_utterances,
    read_manifest,
)
from warmstart_speech.models import (
    ModelConfig,
    SpeechEncoder,
    build_mt,
    build_speech_seq2seq,
    subsampled_lengths,
)

log = logging.getLogger(__name__)


@dataclass
class Corpus:
    train: list[Utterance]
    test: list[Utterance]
    src_vocab: Vocab
    tgt_vocab: Vocab
    skipped: SkipReport
    test_seen: int = 0
    """Rows of the held-out manifest (``len(test)`` of them were usable)."""


def load_corpus(
    train: Path,
    test: Path | None = None,
    vocabs: dict[str, Vocab] | None = None,
    features: FeatureConfig = FeatureConfig(),
    text: TextConfig = TextConfig(),
) -> Corpus:
    """Featurise a training manifest (and ``test``, default ``test.tsv`` beside it, else a 10 % split).

    Without ``vocabs`` they are built from the training rows (phoneme symbols; SentencePiece pieces of the
    translations per ``text``). Every skipped row of either split is named in ``Corpus.skipped``.
    """
    train = Path(train)
    if vocabs is None:
        vocabs = build_vocabs(read_manifest(train), text)
    report = SkipReport()
    train_utts, _ = load_utterances(train, vocabs["src"], vocabs["tgt"], features, report=report)
    test = test or (
        train.parent / "test.tsv"
        if (train.parent / "test.tsv").is_file() and train.name != "test.tsv"
        else None
    )
    if test is not None:
        test_report = SkipReport()
        test_utts, _ = load_utterances(Path(test), vocabs["src"], vocabs["tgt"], features, report=test_report)
        report.merge(test_report)
        test_seen = test_report.seen
    else:
        n = max(1, len(train_utts) // 10)
        train_utts, test_utts = train_utts[n:], train_utts[:n]
        test_seen = len(test_utts)
    return Corpus(train_utts, test_utts, vocabs["src"], vocabs["tgt"], report, test_seen)


def ctc_feasible(utts: list[Utterance], report: SkipReport) -> list[Utterance]:
    """Utterances whose subsampled frames can carry their CTC target (frames ≥ labels + repeats); the rest
    are skipped as too short for the subsampler and named in ``report``."""
    kept = []
    for u in utts:
        frames = int(subsampled_lengths(torch.tensor([u.n_frames]))[0])
        repeats = sum(1 for a, b in zip(u.src, u.src[1:], strict=False) if a == b)
        if frames < len(u.src) + repeats:
            report.add("too short for its CTC target after the 4× subsampler", u.id)
        else:
            kept.append(u)
    return kept


class _Batches:
    """A fixed list of ready micro-batches as a plain iterable (the engine repeats it; resume skips ahead)."""

    def __init__(self, batches: list) -> None:
        self.batches = batches

    def __iter__(self):  # noqa: ANN204
        return iter(self.batches)


def fresh_encoder(cfg: ModelConfig, n_phonemes: int, seed: int) -> SpeechEncoder:
    torch.manual_seed(seed)
    return SpeechEncoder(cfg, n_phonemes)


def train_mt(
    corpus: Corpus, cfg: ModelConfig, engine: EngineConfig, run_dir: Path | None = None
) -> tuple[nn.Module, RunSummary]:
    """Train the phoneme → target-word MT model (its encoder is the OT teacher, its decoder the ST decoder)."""
    torch.manual_seed(engine.train.seed)
    model = build_mt(cfg, len(corpus.src_vocab), len(corpus.tgt_vocab))
    batches = text_batches(corpus.train, engine.train.micro_batch_size)
    if not batches:
        raise DataError(
            f"{len(corpus.train)} utterances: fewer than one batch of {engine.train.micro_batch_size}"
        )
    summary = Engine(engine, run_dir).fit(MTTask(model, corpus.test, corpus.tgt_vocab), _Batches(batches))
    return model, summary


def pretrain_encoder(
    corpus: Corpus,
    cfg: ModelConfig,
    engine: EngineConfig,
    objective: Objective,
    mt: nn.Module | None = None,
    ot: OTConfig = OTConfig(),
    run_dir: Path | None = None,
    resume_from: Path | None = None,
    encoder: SpeechEncoder | None = None,
) -> tuple[SpeechEncoder, RunSummary]:
    """Siamese pretraining of a speech encoder; ``ctc+ot`` needs the MT model (frozen teacher)."""
    if objective == "ctc+ot" and mt is None:
        raise DataError("--objective ctc+ot needs the MT model: pass --mt <folder of `mt-train`>")
    encoder = encoder or fresh_encoder(cfg, len(corpus.src_vocab), engine.train.seed)
    model = PretrainModel(cfg, encoder, objective, len(corpus.src_vocab), ot)
    teacher = copy.deepcopy(mt) if objective == "ctc+ot" else None
    train = ctc_feasible(corpus.train, corpus.skipped) if objective != "ce" else corpus.train
    data = bucket_stream(train, engine.train.micro_batch_size, engine.train.seed, engine.train.num_workers)
    summary = Engine(engine, run_dir).fit(PretrainTask(model, teacher), data, resume_from=resume_from)
    return encoder, summary


def train_st(
    corpus: Corpus,
    cfg: ModelConfig,
    engine: EngineConfig,
    encoder: SpeechEncoder,
    mt: nn.Module | None,
    run_dir: Path | None = None,
    eval_bleu: bool = True,
    resume_from: Path | None = None,
    beam: int = 5,
) -> tuple[nn.Module, RunSummary]:
    """ST fine-tuning: the speech encoder + the MT decoder (a fresh decoder when ``mt`` is None)."""
    torch.manual_seed(engine.train.seed + 1)
    model = build_speech_seq2seq(cfg, copy.deepcopy(encoder), len(corpus.tgt_vocab), decoder_from=mt)
    data = bucket_stream(
        corpus.train, engine.train.micro_batch_size, engine.train.seed, engine.train.num_workers
    )
    task = STTask(model, corpus.test, corpus.tgt_vocab, eval_bleu=eval_bleu, beam=beam)
    summary = Engine(engine, run_dir).fit(task, data, resume_from=resume_from)
    return model, summary
