"""Benches: the paper's comparison in miniature, the data-pipeline throughput, and the demo.

Seed paper: "Pre-training for Speech Translation: CTC Meets Optimal Transport" (Le et al., arXiv 2301.11716).
``run_st_bench``: per seed, one MT model, then four speech encoders — none (scratch), CE (ASR
encoder-decoder), CTC, CTC+OT — each fine-tuned for ST on the same budget with the MT decoder; BLEU, chrF,
the ST loss curve, and the modality gap before/after pretraining, through the core's bench report writer.
``run_throughput``: hours of audio decoded + featurised per second with fairseq2's pipeline vs a plain
soundfile + numpy loop (a hand-written Kaldi-style fbank) on the same files. ``run_ssl_bench``: the claim of
"Adapting Multilingual Speech Representation Model for a New, Underresourced Language ..." (Nowakowski et
al., arXiv 2301.07295) in miniature — a tiny wav2vec2 pretrained on language A, CTC fine-tuned on a little
language-B data directly vs after ``continue-ssl`` on unlabelled B (plus an equal-compute SSL-on-A control
and a scratch encoder); CER/WER on held-out B. Left out: the GPU script.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from warmstart_speech.ctc_ot import OTConfig
from warmstart_speech.data import FeatureConfig, SynthConfig
from warmstart_speech.models import ModelConfig
from warmstart_speech.ssl import SSLConfig

log = logging.getLogger(__name__)
ARMS = ("scratch", "ce", "ctc", "ctc+ot")


@dataclass
class BenchConfig:
    seeds: int = 3
    """Seeds (each: its own MT model and four encoders)."""
    n_train: int = 160
    """Generated training utterances."""
    n_test: int = 32
    """Generated test utterances."""
    mt_steps: int = 150
    """MT training steps."""
    pretrain_steps: int = 60
    """Speech-encoder pretraining steps (ce, ctc, ctc+ot)."""
    st_steps: int = 60
    """ST fine-tuning steps (the equal budget)."""
    batch_size: int = 16
    """Micro-batch size of every stage."""
    lr: float = 2e-3
    """Peak learning rate (cosine schedule) of every stage."""
    arms: list[str] = field(default_factory=lambda: list(ARMS))
    """Encoders to compare: scratch, ce, ctc, ctc+ot."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Architecture."""
    ot: OTConfig = field(default_factory=OTConfig)
    """OT settings."""
    data: Path | None = None
    """A manifest to use instead of generating a corpus."""


def _curve(run_dir: Path) -> list[tuple[int, float]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def run_st_bench(out: Path, cfg: BenchConfig = BenchConfig()):  # noqa: ANN201
    """The comparison; returns the core's :class:`~warmstart.eval.BenchReport`."""
    from warmstart.errors import ConfigError
    from warmstart.eval import write_bench_report
    from warmstart_speech.ctc_ot import modality_gap, phoneme_error_rate
    from warmstart_speech.data import synth_corpus
    from warmstart_speech.stages import (
        fresh_encoder,
        load_corpus,
        pretrain_encoder,
        quick_engine,
        train_mt,
        train_st,
    )

    unknown = set(cfg.arms) - set(ARMS)
    if unknown or "scratch" not in cfg.arms:
        raise ConfigError(f"config.arms={cfg.arms}: use a subset of {list(ARMS)} that includes scratch")
    out = Path(out)
    start = time.perf_counter()
    manifest = (
        cfg.data or synth_corpus(out / "corpus", SynthConfig(n_train=cfg.n_train, n_test=cfg.n_test))["train"]
    )
    corpus = load_corpus(manifest)
    bleu: dict[str, dict[int, float]] = {a: {} for a in cfg.arms}
    chrf: dict[str, dict[int, float]] = {a: {} for a in cfg.arms}
    gap: dict[str, dict[int, float]] = {a: {} for a in cfg.arms}
    per: dict[str, dict[int, float]] = {a: {} for a in cfg.arms if a != "scratch"}
    seconds: dict[str, dict[int, float]] = {a: {} for a in cfg.arms}
    curves: dict[str, dict[int, list]] = {a: {} for a in cfg.arms}
    for seed in range(cfg.seeds):
        mt, _ = train_mt(corpus, cfg.model, quick_engine(cfg.mt_steps, cfg.batch_size, cfg.lr, seed))
        for arm in cfg.arms:
            t0 = time.perf_counter()
            encoder = fresh_encoder(cfg.model, len(corpus.src_vocab), seed)
            if arm != "scratch":
                encoder, _ = pretrain_encoder(
                    corpus,
                    cfg.model,
                    quick_engine(cfg.pretrain_steps, cfg.batch_size, cfg.lr, seed),
                    arm,
                    mt,
                    cfg.ot,
                )
                per[arm][seed] = (
                    phoneme_error_rate(encoder, corpus.test, corpus.src_vocab)
                    if arm != "ce"
                    else float("nan")
                )
            gap[arm][seed] = modality_gap(encoder, mt, corpus.test, cfg.ot)
            run_dir = out / f"seed{seed}" / arm.replace("+", "_")
            _, summary = train_st(
                corpus,
                cfg.model,
                quick_engine(cfg.st_steps, cfg.batch_size, cfg.lr, seed, log_every=5),
                encoder,
                mt,
                run_dir,
            )
            bleu[arm][seed] = summary.final_metrics.get("eval/bleu", float("nan"))
            chrf[arm][seed] = summary.final_metrics.get("eval/chrf", float("nan"))
            curves[arm][seed] = _curve(run_dir)
            seconds[arm][seed] = time.perf_counter() - t0
            log.info("seed %d %s: BLEU %.2f gap %.3f", seed, arm, bleu[arm][seed], gap[arm][seed])
    per = {k: v for k, v in per.items() if k != "ce"}
    return write_bench_report(
        out,
        f"speech: ST BLEU with scratch / CE / CTC / CTC+OT speech encoders ({cfg.st_steps} ST steps)",
        bleu,
        metric="ST BLEU (greedy)",
        higher_is_better=True,
        baseline="scratch",
        curves=curves,
        curve_metric="ST train loss (label-smoothed CE)",
        extra_metrics={
            "chrF": chrf,
            "modality gap (Sinkhorn, ↓)": gap,
            "phoneme error rate % (CTC greedy)": per,
            "seconds (pretrain + ST)": seconds,
        },
        description=(
            f"espeak-ng speech (English) → German, {len(corpus.train)} train / {len(corpus.test)} test utterances; "
            f"per seed one MT model ({cfg.mt_steps} steps; its decoder initialises every ST model), encoders "
            f"pretrained {cfg.pretrain_steps} steps, ST fine-tuned {cfg.st_steps} steps, batch {cfg.batch_size}, "
            f"lr {cfg.lr}. Modality gap: mean Sinkhorn divergence between speech-encoder and MT-encoder outputs "
            f"(scratch = before pretraining). Total {time.perf_counter() - start:.0f} s."
        ),
        config=json.loads(json.dumps(asdict(cfg), default=str)),
    )


# ------------------------------------------------------------------------------------------------
# throughput
# ------------------------------------------------------------------------------------------------
@dataclass
class ThroughputConfig:
    n_files: int = 200
    """Generated utterances to decode (ignored with --throughput.data)."""
    repeats: int = 2
    """Timed passes over the files (best is reported)."""
    num_parallel_calls: int = 2
    """fairseq2 pipeline: parallel decode + fbank calls."""
    data: Path | None = None
    """A manifest to use instead of generating files."""


def numpy_fbank(wave: np.ndarray, rate: int = 16_000, n_mels: int = 80) -> np.ndarray:
    """Kaldi-style log-mel fbank in numpy (25 ms Povey window, 10 ms hop, pre-emphasis 0.97), standardised."""
    frame, hop, n_fft = int(0.025 * rate), int(0.010 * rate), 512
    if len(wave) < frame:
        return np.zeros((0, n_mels), np.float32)
    n = 1 + (len(wave) - frame) // hop
    idx = np.arange(frame)[None] + hop * np.arange(n)[:, None]
    frames = wave[idx].astype(np.float64) * 32768.0  # (N, frame)
    frames -= frames.mean(axis=1, keepdims=True)
    frames[:, 1:] -= 0.97 * frames[:, :-1]
    frames[:, 0] *= 0.03
    frames *= (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(frame) / (frame - 1))) ** 0.85
    power = np.abs(np.fft.rfft(frames, n_fft)) ** 2  # (N, n_fft/2 + 1)
    mel = lambda f: 1127.0 * np.log(1 + f / 700.0)  # noqa: E731
    edges = np.linspace(mel(20.0), mel(rate / 2), n_mels + 2)
    bins = mel(np.fft.rfftfreq(n_fft, 1 / rate))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    weights = np.maximum(0, np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)))  # (n_mels, F)
    feats = np.log(np.maximum(power @ weights.T, np.finfo(np.float32).eps))
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-5)
    return feats.astype(np.float32)


def _numpy_resample(wave: np.ndarray, orig: int, new: int) -> np.ndarray:
    import math

    from warmstart_speech.data import _sinc_kernels

    if orig == new:
        return wave
    g = math.gcd(orig, new)
    kernels, width = _sinc_kernels(orig // g, new // g, 6, 0.99)
    k = kernels.numpy()
    x = np.pad(wave.astype(np.float32), (width, width + orig // g))
    frames = np.lib.stride_tricks.sliding_window_view(x, k.shape[1])[:: orig // g]
    y = (frames @ k.T).reshape(-1)
    return y[: math.ceil(new // g * len(wave) / (orig // g))]


def run_throughput(out: Path, cfg: ThroughputConfig = ThroughputConfig()) -> list[tuple[str, str, str]]:
    """Time fairseq2's pipeline and the soundfile+numpy loop on the same files; writes throughput.json."""
    import soundfile as sf

    from warmstart_speech.data import SAMPLE_RATE, SkipReport, featurise_rows, read_manifest, synth_corpus

    out = Path(out)
    manifest = cfg.data or synth_corpus(out / "corpus", SynthConfig(n_train=cfg.n_files, n_test=0))["train"]
    rows = read_manifest(manifest)
    hours = sum(int(r["n_samples"]) / int(r["sample_rate"]) for r in rows) / 3600

    def fairseq2_pass() -> int:
        report = SkipReport()
        return sum(
            1 for _ in featurise_rows(rows, FeatureConfig(num_parallel_calls=cfg.num_parallel_calls), report)
        )

    def numpy_pass() -> int:
        count = 0
        for r in rows:
            wave, rate = sf.read(r["audio"], dtype="float32")
            numpy_fbank(_numpy_resample(wave, rate, SAMPLE_RATE))
            count += 1
        return count

    results: dict[str, Any] = {"files": len(rows), "audio_hours": hours}
    table = []
    fairseq2_pass()  # warm-up: imports, file cache
    for name, fn in (("fairseq2 pipeline", fairseq2_pass), ("soundfile + numpy loop", numpy_pass)):
        best = float("inf")
        for _ in range(cfg.repeats):
            t0 = time.perf_counter()
            n = fn()
            best = min(best, time.perf_counter() - t0)
        results[name] = {"seconds": best, "hours_per_s": hours / best, "utterances_per_s": n / best}
        table.append((name, f"{hours / best:.4f}", f"{n / best:.1f}"))
    results["ratio_fairseq2_over_numpy"] = (
        results["fairseq2 pipeline"]["hours_per_s"] / results["soundfile + numpy loop"]["hours_per_s"]
    )
    table.append(("ratio fairseq2 / numpy", f"{results['ratio_fairseq2_over_numpy']:.2f}×", ""))
    (out / "throughput.json").write_text(json.dumps(results, indent=1))
    return table


# ------------------------------------------------------------------------------------------------
# demo
# ------------------------------------------------------------------------------------------------
def run_demo(out: Path, n_train: int = 96, n_test: int = 16, steps: int = 40) -> dict[str, Any]:
    """Synthesise a small corpus, train MT, pretrain CTC+OT, fine-tune ST; return BLEU and the gaps."""
    from warmstart_speech.ctc_ot import modality_gap
    from warmstart_speech.data import synth_corpus
    from warmstart_speech.stages import (
        fresh_encoder,
        load_corpus,
        pretrain_encoder,
        quick_engine,
        train_mt,
        train_st,
    )

    out = Path(out)
    start = time.perf_counter()
    manifest = synth_corpus(out / "corpus", SynthConfig(n_train=n_train, n_test=n_test))["train"]
    corpus = load_corpus(manifest)
    cfg = ModelConfig()
    mt, _ = train_mt(corpus, cfg, quick_engine(steps * 2, 16, 3e-3))
    encoder = fresh_encoder(cfg, len(corpus.src_vocab), 0)
    gap_before = modality_gap(encoder, mt, corpus.test)
    encoder, pre = pretrain_encoder(corpus, cfg, quick_engine(steps, 16, 2e-3), "ctc+ot", mt)
    gap_after = modality_gap(encoder, mt, corpus.test)
    _, st = train_st(corpus, cfg, quick_engine(steps, 16, 2e-3), encoder, mt)
    result = {
        "bleu": st.final_metrics.get("eval/bleu", float("nan")),
        "chrf": st.final_metrics.get("eval/chrf", float("nan")),
        "modality_gap_before": gap_before,
        "modality_gap_after": gap_after,
        "pretrain_ctc": pre.final_metrics.get("ctc", float("nan")),
        "pretrain_ot": pre.final_metrics.get("ot", float("nan")),
        "seconds": time.perf_counter() - start,
        "corpus": str(manifest.parent),
    }
    (out / "demo.json").write_text(json.dumps(result, indent=1))
    return result


# ------------------------------------------------------------------------------------------------
# continued SSL pretraining on a new language (Nowakowski et al., arXiv 2301.07295), in miniature
# ------------------------------------------------------------------------------------------------
SSL_ARMS = ("scratch", "A", "A+ssl-A", "A+ssl-B")


@dataclass
class SSLBenchConfig:
    seeds: int = 3
    """Seeds of the continued pretraining and the CTC fine-tuning (the language-A model is shared)."""
    n_a: int = 120
    """Unlabelled language-A (English, espeak-ng) utterances for the base pretraining."""
    n_b: int = 120
    """Unlabelled language-B (German voices) utterances for continue-ssl."""
    n_labelled: int = 40
    """Of those, how many carry transcripts for CTC fine-tuning (the 'little labelled data')."""
    n_test: int = 24
    """Held-out language-B utterances (CER/WER)."""
    a_steps: int = 400
    """SSL steps on language A (the given 'pretrained model'; shared by every seed)."""
    continue_steps: int = 100
    """continue-ssl steps (on B, or on A for the equal-compute control arm)."""
    ctc_steps: int = 150
    """CTC fine-tuning steps of every arm (the equal budget)."""
    batch_size: int = 8
    """Micro-batch size of every stage."""
    ssl_lr: float = 2e-3
    """Peak learning rate of the SSL stages."""
    ctc_lr: float = 2e-3
    """Peak learning rate of CTC fine-tuning."""
    arms: list[str] = field(default_factory=lambda: list(SSL_ARMS))
    """scratch (random encoder), A (fine-tune the A model directly), A+ssl-A (equal extra SSL compute on
    A: the control), A+ssl-B (continue-ssl on B first)."""
    model: SSLConfig = field(default_factory=SSLConfig)
    """The tiny wav2vec2 built for language A."""


def run_ssl_bench(out: Path, cfg: SSLBenchConfig = SSLBenchConfig()):  # noqa: ANN201
    """A tiny wav2vec2 pretrained on language A, then CTC on a little language-B data: directly, after
    continue-ssl on unlabelled B, after equal extra SSL on A, or from scratch; CER/WER on held-out B."""
    from warmstart.errors import ConfigError
    from warmstart.eval import write_bench_report
    from warmstart_speech.data import char_vocab_of, load_audio, synth_corpus
    from warmstart_speech.ssl import (
        build_ssl,
        continue_ssl,
        ctc_finetune,
        held_out_ssl_loss,
        load_ssl,
        save_ssl,
    )
    from warmstart_speech.stages import quick_engine

    unknown = set(cfg.arms) - set(SSL_ARMS)
    if unknown or "A" not in cfg.arms:
        raise ConfigError(f"ssl.arms={cfg.arms}: use a subset of {list(SSL_ARMS)} that includes A")
    model_cfg = cfg.model
    out = Path(out)
    start = time.perf_counter()
    a_paths = synth_corpus(out / "corpus-A", SynthConfig(n_train=cfg.n_a, n_test=0, language="en", seed=11))
    b_paths = synth_corpus(
        out / "corpus-B", SynthConfig(n_train=cfg.n_b, n_test=cfg.n_test, language="de", seed=12)
    )
    a_audio, _ = load_audio(a_paths["train"])
    b_audio, _ = load_audio(b_paths["train"])
    vocab = char_vocab_of(b_paths["train"])
    b_labelled, _ = load_audio(b_paths["train"], vocab)
    b_labelled = b_labelled[: cfg.n_labelled]
    b_test, _ = load_audio(b_paths["test"], vocab)
    from warmstart_speech.data import collate_audio

    probe = [collate_audio(b_test[i : i + 8]) for i in range(0, len(b_test), 8)]

    t0 = time.perf_counter()
    base = build_ssl(model_cfg, seed=0)
    continue_ssl(base, a_audio, quick_engine(cfg.a_steps, cfg.batch_size, cfg.ssl_lr, 0))
    save_ssl(base, out / "pretrained-A", {"language": "en", "steps": cfg.a_steps})
    a_seconds = time.perf_counter() - t0

    cer: dict[str, dict[int, float]] = {a: {} for a in cfg.arms}
    wer: dict[str, dict[int, float]] = {a: {} for a in cfg.arms}
    ssl_b: dict[str, dict[int, float]] = {a: {} for a in cfg.arms}
    curves: dict[str, dict[int, list]] = {a: {} for a in cfg.arms}
    seconds: dict[str, dict[int, float]] = {a: {} for a in cfg.arms}
    for seed in range(cfg.seeds):
        for arm in cfg.arms:
            t0 = time.perf_counter()
            if arm == "scratch":
                model = build_ssl(model_cfg, seed=100 + seed)
            else:
                model = load_ssl(out / "pretrained-A", model_cfg)  # by path, as a user would
                if arm != "A":
                    audio = b_audio if arm == "A+ssl-B" else a_audio
                    continue_ssl(
                        model, audio, quick_engine(cfg.continue_steps, cfg.batch_size, cfg.ssl_lr, seed)
                    )
            ssl_b[arm][seed] = held_out_ssl_loss(model, probe)
            run_dir = out / f"seed{seed}" / arm.replace("+", "_")
            ctc, summary = ctc_finetune(
                model,
                b_labelled,
                b_test,
                vocab,
                quick_engine(cfg.ctc_steps, cfg.batch_size, cfg.ctc_lr, seed, log_every=10),
                run_dir,
            )
            cer[arm][seed] = summary.final_metrics.get("eval/cer", float("nan"))
            wer[arm][seed] = summary.final_metrics.get("eval/wer", float("nan"))
            curves[arm][seed] = _curve(run_dir)
            seconds[arm][seed] = time.perf_counter() - t0
            log.info("seed %d %s: CER %.1f WER %.1f", seed, arm, cer[arm][seed], wer[arm][seed])
    return write_bench_report(
        out,
        "speech: continued wav2vec2 pretraining on a new language, then CTC (CER on held-out language B)",
        cer,
        metric="CER % (greedy CTC, held-out B)",
        higher_is_better=False,
        baseline="A",
        curves=curves,
        curve_metric="CTC train loss (per character)",
        extra_metrics={
            "WER %": wer,
            "SSL loss on held-out B before fine-tuning (↓)": ssl_b,
            "seconds (continue-ssl + CTC)": seconds,
        },
        description=(
            f"A tiny {model_cfg.backend} wav2vec2 ({model_cfg.layers}×{model_cfg.model_dim}) pretrained "
            f"{cfg.a_steps} SSL steps on {len(a_audio)} unlabelled English espeak-ng utterances (language A, "
            f"{a_seconds:.0f} s, shared by all seeds). Arms: A = CTC fine-tuning directly; A+ssl-B = "
            f"continue-ssl {cfg.continue_steps} steps on {len(b_audio)} unlabelled German-voice utterances "
            f"(language B) first; A+ssl-A = the same extra SSL steps on A (equal-compute control); scratch = "
            f"random encoder. CTC fine-tuning: {cfg.ctc_steps} steps on {len(b_labelled)} labelled B "
            f"utterances (characters), batch {cfg.batch_size}, lr {cfg.ctc_lr}, feature extractor frozen; "
            f"{len(b_test)} held-out B utterances. Total {time.perf_counter() - start:.0f} s."
        ),
        config=json.loads(json.dumps(asdict(cfg), default=str)),
    )
