"""Benches: the paper's comparison in miniature, the data-pipeline throughput, and the demo.

Seed paper: "Pre-training for Speech Translation: CTC Meets Optimal Transport" (Le et al., arXiv 2301.11716).
``run_st_bench``: per seed, one MT model, then four speech encoders — none (scratch), CE (ASR
encoder-decoder), CTC, CTC+OT, pretrained 10× the ST budget — each fine-tuned for ST on the same budget with
the MT decoder; beam-5 BLEU, chrF, the ST loss curve, the modality gap and whether the paper's ordering
CTC+OT > CTC > CE appears, through the core's bench report writer (bootstrap CIs). The MT models and the
pretrained encoders are sources cached by :func:`warmstart.cache.cached` (config + data recipe + code hash),
as the corpus is: a second run reuses them.
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
from warmstart_speech.data import FeatureConfig, SynthConfig, TextConfig
from warmstart_speech.models import ModelConfig
from warmstart_speech.ssl import SSLConfig

log = logging.getLogger(__name__)
ARMS = ("scratch", "ce", "ctc", "ctc+ot")


@dataclass
class BenchConfig:
    seeds: int = 3
    """Seeds (each: its own MT model, its own pretrained encoders and ST runs)."""
    n_train: int = 200
    """Generated training utterances."""
    n_test: int = 40
    """Generated test utterances."""
    mt_steps: int = 300
    """MT training steps (the teacher and the ST decoder)."""
    pretrain_steps: int = 300
    """Speech-encoder pretraining steps (ce, ctc, ctc+ot): 10× the ST budget."""
    st_steps: int = 30
    """ST fine-tuning steps (the equal budget of every arm)."""
    batch_size: int = 16
    """Micro-batch size of every stage."""
    lr: float = 2e-3
    """Peak learning rate (cosine schedule) of every stage."""
    beam: int = 5
    """Beam of the held-out BLEU (paper: 5)."""
    arms: list[str] = field(default_factory=lambda: list(ARMS))
    """Encoders to compare: scratch, ce, ctc, ctc+ot."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Architecture."""
    ot: OTConfig = field(default_factory=OTConfig)
    """OT settings."""
    text: TextConfig = field(default_factory=lambda: TextConfig(vocab_size=300))
    """Target units (SentencePiece)."""
    data: Path | None = None
    """A manifest to use instead of the generated corpus."""


def _curve(run_dir: Path) -> list[tuple[int, float]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def _code():  # noqa: ANN202
    from warmstart.cache import code_version
    from warmstart_speech import batches, ctc_ot, features, models, stages, text

    return code_version(batches, ctc_ot, features, models, stages, text)


def bench_corpus(cfg: BenchConfig) -> Path:
    """The bench's training manifest: ``cfg.data``, or the generated corpus as a cached artifact."""
    if cfg.data is not None:
        return Path(cfg.data)
    from warmstart.cache import cached, code_version
    from warmstart_speech import synth
    from warmstart_speech.data import synth_corpus

    synth_cfg = SynthConfig(n_train=cfg.n_train, n_test=cfg.n_test)
    folder = cached(
        "speech.corpus",
        synth_cfg,
        lambda out: synth_corpus(out, synth_cfg),
        code=code_version(synth),
        description=f"espeak-ng corpus, {cfg.n_train} train / {cfg.n_test} test utterances",
    )
    return folder / "train.tsv"


def _source(kind: str, config: dict[str, Any], data: dict[str, Any], build, description: str):  # noqa: ANN001, ANN202
    """A pretrained source (MT model or speech encoder) as a cached artifact; returns (model, meta)."""
    from warmstart.cache import cached
    from warmstart_speech.models import load_stage

    stage = "mt" if kind == "speech.mt-source" else "speech-encoder"
    folder = cached(kind, config, build, data=data, code=_code(), description=description)
    _, _, model, meta = load_stage(folder, stage)
    return model, meta


def run_st_bench(out: Path, cfg: BenchConfig = BenchConfig()):  # noqa: ANN201
    """The comparison; returns the core's :class:`~warmstart.eval.BenchReport`."""
    from warmstart.engine import quick_config
    from warmstart.errors import ConfigError
    from warmstart.eval import write_bench_report
    from warmstart.integrity import digest_file
    from warmstart_speech.ctc_ot import modality_gap, phoneme_error_rate
    from warmstart_speech.data import build_vocabs, read_manifest
    from warmstart_speech.models import save_model
    from warmstart_speech.stages import (
        fresh_encoder,
        load_corpus,
        pretrain_encoder,
        train_mt,
        train_st,
    )

    unknown = set(cfg.arms) - set(ARMS)
    if unknown or "scratch" not in cfg.arms:
        raise ConfigError(f"config.arms={cfg.arms}: use a subset of {list(ARMS)} that includes scratch")
    out = Path(out)
    start = time.perf_counter()
    manifest = bench_corpus(cfg)
    vocabs = build_vocabs(read_manifest(manifest), cfg.text)
    corpus = load_corpus(manifest, vocabs=vocabs)
    test = manifest.parent / "test.tsv"
    data = {
        "train": digest_file(manifest),
        "test": digest_file(test) if test.is_file() else None,
        "vocabs": json.dumps({k: v.to_json() for k, v in vocabs.items()}, sort_keys=True),
    }
    common = {"model": asdict(cfg.model), "batch": cfg.batch_size, "lr": cfg.lr}
    metrics = ("bleu", "chrf", "gap", "per", "pretrain_s", "st_s")
    res: dict[str, dict[str, dict[int, float]]] = {m: {a: {} for a in cfg.arms} for m in metrics}
    curves: dict[str, dict[int, list]] = {a: {} for a in cfg.arms}
    for seed in range(cfg.seeds):
        mt_cfg = {**common, "steps": cfg.mt_steps, "seed": seed}

        def build_mt(folder: Path, seed: int = seed) -> None:
            mt, _ = train_mt(
                corpus,
                cfg.model,
                quick_config(cfg.mt_steps, cfg.batch_size, cfg.lr, seed, warmup=0, log_every=10),
            )
            save_model(folder, "mt", mt, cfg.model, vocabs)

        mt, _ = _source("speech.mt-source", mt_cfg, data, build_mt, f"bench MT teacher, seed {seed}")
        for arm in cfg.arms:
            t0 = time.perf_counter()
            encoder = fresh_encoder(cfg.model, len(corpus.src_vocab), seed)
            if arm != "scratch":
                enc_cfg = {
                    **common,
                    "objective": arm,
                    "steps": cfg.pretrain_steps,
                    "seed": seed,
                    "mt": mt_cfg,
                }
                if arm == "ctc+ot":
                    enc_cfg["ot"] = asdict(cfg.ot)

                def build_encoder(folder: Path, arm: str = arm, seed: int = seed, mt: Any = mt) -> None:
                    engine = quick_config(
                        cfg.pretrain_steps, cfg.batch_size, cfg.lr, seed, warmup=0, log_every=10
                    )
                    enc, _ = pretrain_encoder(corpus, cfg.model, engine, arm, mt, cfg.ot)
                    save_model(folder, "speech-encoder", enc, cfg.model, vocabs, {"objective": arm})

                encoder, _ = _source(
                    "speech.encoder-source", enc_cfg, data, build_encoder, f"bench {arm} encoder, seed {seed}"
                )
                if arm != "ce":
                    res["per"][arm][seed] = phoneme_error_rate(encoder, corpus.test, corpus.src_vocab)
            res["pretrain_s"][arm][seed] = time.perf_counter() - t0
            res["gap"][arm][seed] = modality_gap(encoder, mt, corpus.test, cfg.ot)
            run_dir = out / f"seed{seed}" / arm.replace("+", "_")
            t0 = time.perf_counter()
            engine = quick_config(cfg.st_steps, cfg.batch_size, cfg.lr, seed, warmup=0, log_every=5)
            _, summary = train_st(corpus, cfg.model, engine, encoder, mt, run_dir, beam=cfg.beam)
            res["st_s"][arm][seed] = time.perf_counter() - t0
            res["bleu"][arm][seed] = summary.final_metrics.get("eval/bleu", float("nan"))
            res["chrf"][arm][seed] = summary.final_metrics.get("eval/chrf", float("nan"))
            curves[arm][seed] = _curve(run_dir)
            log.info(
                "seed %d %s: BLEU %.2f gap %.3f", seed, arm, res["bleu"][arm][seed], res["gap"][arm][seed]
            )
    ordering = seed_ordering(res["bleu"])
    report = write_bench_report(
        out,
        f"speech: ST BLEU with scratch / CE / CTC / CTC+OT speech encoders ({cfg.st_steps} ST steps)",
        res["bleu"],
        metric=f"ST BLEU (beam {cfg.beam})",
        higher_is_better=True,
        baseline="scratch",
        curves=curves,
        curve_metric="ST train loss (label-smoothed CE)",
        extra_metrics={
            "chrF": res["chrf"],
            "modality gap (Sinkhorn, ↓)": res["gap"],
            "phoneme error rate % (CTC greedy)": {k: v for k, v in res["per"].items() if v},
            "seconds (pretraining or cache load)": res["pretrain_s"],
            "seconds (ST + evaluation)": res["st_s"],
        },
        description=(
            f"espeak-ng speech (English) → German, {len(corpus.train)} train / {len(corpus.test)} test utterances "
            f"(targets: {len(corpus.tgt_vocab)} SentencePiece pieces); per seed one MT model ({cfg.mt_steps} "
            f"steps; its decoder initialises every ST model), encoders pretrained {cfg.pretrain_steps} steps "
            f"({cfg.pretrain_steps / max(cfg.st_steps, 1):.0f}× the ST budget; cached sources), ST fine-tuned "
            f"{cfg.st_steps} steps, batch {cfg.batch_size}, lr {cfg.lr}, BLEU with beam {cfg.beam}. Modality gap: "
            f"mean Sinkhorn divergence between speech-encoder and MT-encoder outputs (scratch = before "
            f"pretraining). The seed paper's ordering CTC+OT > CTC > CE {ordering['verdict']}. "
            f"Total {time.perf_counter() - start:.0f} s."
        ),
        config={**json.loads(json.dumps(asdict(cfg), default=str)), "ordering": ordering},
    )
    return report


def seed_ordering(bleu: dict[str, dict[int, float]]) -> dict[str, Any]:
    """Whether the seed paper's ordering CTC+OT > CTC > CE holds in mean BLEU, and per seed."""
    arms = ("ctc+ot", "ctc", "ce")
    if not all(a in bleu and bleu[a] for a in arms):
        return {"verdict": "was not measured (arms missing)", "holds": None}
    means = {a: float(np.nanmean(list(bleu[a].values()))) for a in arms}
    holds = means["ctc+ot"] > means["ctc"] > means["ce"]
    seeds = sorted(set.intersection(*(set(bleu[a]) for a in arms)))
    per_seed = sum(1 for s in seeds if bleu["ctc+ot"][s] > bleu["ctc"][s] > bleu["ce"][s])
    verdict = (
        f"{'appears' if holds else 'does not appear'} in the means "
        f"({means['ctc+ot']:.2f} / {means['ctc']:.2f} / {means['ce']:.2f}); it holds in {per_seed} of {len(seeds)} seeds"
    )
    return {
        "verdict": verdict,
        "holds": holds,
        "means": means,
        "seeds_holding": per_seed,
        "seeds": len(seeds),
    }


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
    from warmstart.engine import quick_config
    from warmstart_speech.ctc_ot import modality_gap
    from warmstart_speech.data import synth_corpus
    from warmstart_speech.stages import (
        fresh_encoder,
        load_corpus,
        pretrain_encoder,
        train_mt,
        train_st,
    )

    out = Path(out)
    start = time.perf_counter()
    manifest = synth_corpus(out / "corpus", SynthConfig(n_train=n_train, n_test=n_test))["train"]
    corpus = load_corpus(manifest)
    cfg = ModelConfig()
    mt, _ = train_mt(corpus, cfg, quick_config(steps * 2, 16, 3e-3, warmup=0, log_every=10))
    encoder = fresh_encoder(cfg, len(corpus.src_vocab), 0)
    gap_before = modality_gap(encoder, mt, corpus.test)
    encoder, pre = pretrain_encoder(
        corpus, cfg, quick_config(steps, 16, 2e-3, warmup=0, log_every=10), "ctc+ot", mt
    )
    gap_after = modality_gap(encoder, mt, corpus.test)
    _, st = train_st(corpus, cfg, quick_config(steps, 16, 2e-3, warmup=0, log_every=10), encoder, mt)
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
    from warmstart.engine import quick_config
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
    continue_ssl(
        base, a_audio, quick_config(cfg.a_steps, cfg.batch_size, cfg.ssl_lr, 0, warmup=0, log_every=10)
    )
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
                        model,
                        audio,
                        quick_config(
                            cfg.continue_steps, cfg.batch_size, cfg.ssl_lr, seed, warmup=0, log_every=10
                        ),
                    )
            ssl_b[arm][seed] = held_out_ssl_loss(model, probe)
            run_dir = out / f"seed{seed}" / arm.replace("+", "_")
            ctc, summary = ctc_finetune(
                model,
                b_labelled,
                b_test,
                vocab,
                quick_config(cfg.ctc_steps, cfg.batch_size, cfg.ctc_lr, seed, warmup=0, log_every=10),
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
