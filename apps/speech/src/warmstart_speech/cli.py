"""``warmstart-speech``: speech-translation pretraining (CTC meets optimal transport) on fairseq2.

Seed paper: "Pre-training for Speech Translation: CTC Meets Optimal Transport" (Le et al., arXiv 2301.11716).
Thin commands over :mod:`warmstart_speech.stages`: data-synth/-prepare → mt-train → pretrain → st-train →
translate / eval, plus demo and bench. Heavy imports (torch models, fairseq2) happen inside the commands.
``continue-ssl`` / ``ssl-ctc``: continued wav2vec2 pretraining on a new language and CTC fine-tuning
("Adapting Multilingual Speech Representation Model for a New, Underresourced Language ...", Nowakowski et
al., arXiv 2301.07295; :mod:`warmstart_speech.ssl`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from warmstart.cli import App, DemoResult, RunContext
from warmstart.engine import EngineConfig
from warmstart.errors import ConfigError, DataError
from warmstart_speech.bench import BenchConfig, SSLBenchConfig, ThroughputConfig
from warmstart_speech.ctc_ot import OTConfig
from warmstart_speech.data import FeatureConfig, SynthConfig
from warmstart_speech.models import ModelConfig
from warmstart_speech.ssl import SSLConfig

app = App("speech", "Speech translation: CTC + optimal-transport pretraining on fairseq2")


def _run(run: RunContext | None, command: str) -> RunContext:
    return run if run is not None else RunContext("speech", command)


@app.command(name="data-synth")
def data_synth(out: Path, synth: SynthConfig = SynthConfig()) -> None:
    """Speak generated sentences with espeak-ng: OUT/audio/*.wav|flac, OUT/train.tsv, OUT/test.tsv.

    Args:
        out: output folder.
        synth: generator settings.
    """
    from warmstart.cli.show import print_table
    from warmstart_speech.data import synth_corpus

    paths = synth_corpus(out, synth)
    print_table("data synth", ("split", "manifest"), [(k, str(v)) for k, v in paths.items()])


@app.command(name="data-prepare")
def data_prepare(audio: Path, out: Path) -> None:
    """Manifest from a folder of <stem>.wav|flac + <stem>.txt transcripts [+ <stem>.tr.txt translations].

    Args:
        audio: the folder (searched recursively).
        out: the manifest (TSV) to write.
    """
    from warmstart.cli.show import print_table
    from warmstart_speech.data import prepare_manifest

    manifest, skipped = prepare_manifest(audio, out)
    print_table(
        "data prepare", ("manifest", "skipped (no transcript / unreadable)"), [(str(manifest), str(skipped))]
    )


def _beside(manifest: Path, name: str) -> Path | None:
    """``name`` in ``manifest``'s folder if it exists (and is not the manifest itself)."""
    path = Path(manifest).parent / name
    return path if path.is_file() and path.resolve() != Path(manifest).resolve() else None


def _load(data_path: Path, features: FeatureConfig, vocabs=None):  # noqa: ANN001, ANN202
    from warmstart_speech.stages import load_corpus

    return load_corpus(data_path, vocabs=vocabs, features=features)


def _load_stage(folder: Path, kind: str, vocabs=None):  # noqa: ANN001, ANN202
    """(architecture, vocabularies, model) of a finished ``mt-train`` / ``pretrain`` / ``st-train`` folder."""
    from warmstart_speech.models import (
        SpeechEncoder,
        build_mt,
        build_speech_seq2seq,
        config_from,
        load_meta,
        load_state,
        load_vocabs,
    )

    meta = load_meta(folder, kind)
    cfg, vocabs = config_from(meta), vocabs or load_vocabs(meta)
    if kind == "mt":
        model = build_mt(cfg, len(vocabs["src"]), len(vocabs["tgt"]))
    elif kind == "speech-encoder":
        model = SpeechEncoder(cfg, len(vocabs["src"]))
    else:
        model = build_speech_seq2seq(cfg, SpeechEncoder(cfg, len(vocabs["src"])), len(vocabs["tgt"]))
    return cfg, vocabs, load_state(model, folder)


def _save_stage(run_dir: Path, kind: str, model_, cfg: ModelConfig, corpus, extra=None) -> None:  # noqa: ANN001
    from warmstart_speech.models import save_model

    save_model(run_dir, kind, model_, cfg, {"src": corpus.src_vocab, "tgt": corpus.tgt_vocab}, extra)


@app.command(name="mt-train")
def mt_train(
    data: Path,
    model: ModelConfig = ModelConfig(),
    engine: EngineConfig = EngineConfig(),
    features: FeatureConfig = FeatureConfig(),
    resume: str | None = None,
    out: Path | None = None,
    run: RunContext | None = None,
) -> None:
    """Train the MT model (phonemes → target words): the OT teacher and the ST decoder.

    Args:
        data: training manifest (TSV); test.tsv beside it is the held-out set.
        model: architecture.
        engine: steps, batch, optimiser, devices.
        features: featurisation settings.
        resume: 'latest', a run directory or a checkpoint.
        out: run directory (default runs/speech/mt/<time>).
    """
    from warmstart.cli.show import print_summary
    from warmstart_speech.stages import train_mt

    run_dir, _ = _run(run, "mt-train").open(resume=resume, out=out)
    corpus = _load(data, features)
    model_, summary = train_mt(corpus, model, engine, run_dir)
    _save_stage(run_dir, "mt", model_, model, corpus)
    print_summary(summary, f"mt train; {corpus.skipped.line()}")


@app.command
def pretrain(
    data: Path,
    objective: Literal["ctc", "ctc+ot", "ce"] = "ctc+ot",
    mt: Path | None = None,
    model: ModelConfig = ModelConfig(),
    ot: OTConfig = OTConfig(),
    engine: EngineConfig = EngineConfig(),
    features: FeatureConfig = FeatureConfig(),
    resume: str | None = None,
    out: Path | None = None,
    run: RunContext | None = None,
) -> None:
    """Siamese speech-encoder pretraining: CTC on phonemes (+ OT to the frozen MT encoder), or CE.

    Args:
        data: training manifest (TSV).
        objective: ctc, ctc+ot (needs --mt) or ce (ASR encoder-decoder baseline).
        mt: folder of a finished `mt-train` (its vocabularies and architecture are reused).
        model: architecture (with --mt the MT model's sizes are used; --model.encoder transformer|conformer
            and --model.conv_kernel still apply).
        ot: CTC/OT weights and Sinkhorn settings.
        engine: steps, batch, optimiser, devices.
        features: featurisation settings.
        resume: 'latest', a run directory or a checkpoint.
        out: run directory (default runs/speech/pretrain/<time>).
    """
    from warmstart.cli.show import print_summary
    from warmstart_speech.ctc_ot import modality_gap
    from warmstart_speech.stages import pretrain_encoder

    teacher, vocabs = None, None
    if mt is not None:
        kind, kernel = model.encoder, model.conv_kernel
        model, vocabs, teacher = _load_stage(mt, "mt")
        model.encoder, model.conv_kernel = kind, kernel  # the speech encoder's type is this command's choice
    elif objective == "ctc+ot":
        raise ConfigError("--objective ctc+ot needs --mt <folder of `warmstart-speech mt-train`>")
    run_dir, checkpoint = _run(run, "pretrain").open(resume=resume, out=out)
    corpus = _load(data, features, vocabs)
    encoder, summary = pretrain_encoder(corpus, model, engine, objective, teacher, ot, run_dir, checkpoint)
    extra = {"objective": objective}
    if teacher is not None:
        extra["modality_gap"] = modality_gap(encoder, teacher, corpus.test, ot)
        summary.final_metrics["modality_gap"] = extra["modality_gap"]
    _save_stage(run_dir, "speech-encoder", encoder, model, corpus, extra)
    print_summary(summary, f"pretrain ({objective}); {corpus.skipped.line()}")


@app.command(name="st-train")
def st_train(
    data: Path,
    encoder: Path | None = None,
    mt: Path | None = None,
    model: ModelConfig = ModelConfig(),
    engine: EngineConfig = EngineConfig(),
    features: FeatureConfig = FeatureConfig(),
    resume: str | None = None,
    out: Path | None = None,
    run: RunContext | None = None,
) -> None:
    """Speech-translation fine-tuning: pretrained speech encoder + MT decoder (either may be absent).

    Args:
        data: training manifest (TSV).
        encoder: folder of a finished `pretrain` (None: a random encoder, the scratch baseline).
        mt: folder of a finished `mt-train` whose decoder initialises the ST decoder.
        model: architecture when neither --encoder nor --mt is given.
        engine: steps, batch, optimiser, devices.
        features: featurisation settings.
        resume: 'latest', a run directory or a checkpoint.
        out: run directory (default runs/speech/st/<time>).
    """
    from warmstart.cli.show import print_summary
    from warmstart_speech.stages import fresh_encoder, train_st

    vocabs, mt_model, enc = None, None, None
    if mt is not None:
        model, vocabs, mt_model = _load_stage(mt, "mt")
    if encoder is not None:
        model, vocabs, enc = _load_stage(encoder, "speech-encoder", vocabs)
    run_dir, checkpoint = _run(run, "st-train").open(resume=resume, out=out)
    corpus = _load(data, features, vocabs)
    enc = enc or fresh_encoder(model, len(corpus.src_vocab), engine.train.seed)
    st_model, summary = train_st(corpus, model, engine, enc, mt_model, run_dir, resume_from=checkpoint)
    _save_stage(run_dir, "st", st_model, model, corpus)
    print_summary(summary, f"st train; {corpus.skipped.line()}")


@app.command(name="continue-ssl")
def continue_ssl(
    data: Path,
    init: str | None = None,
    held_out: Path | None = None,
    ssl: SSLConfig = SSLConfig(),
    engine: EngineConfig = EngineConfig(),
    features: FeatureConfig = FeatureConfig(),
    resume: str | None = None,
    out: Path | None = None,
    run: RunContext | None = None,
) -> None:
    """Continued wav2vec 2.0 pretraining (contrastive + diversity loss) on unlabelled new-language audio.

    Args:
        data: manifest (TSV) of unlabelled audio: only the `audio` column is needed.
        init: the checkpoint to continue: a `continue-ssl` folder, an HF Wav2Vec2ForPreTraining folder or hub id
            (facebook/wav2vec2-xls-r-300m), or a fairseq .pt file with --ssl.arch. None: a new model of --ssl.*.
        held_out: manifest whose SSL loss is reported before and after (default: test.tsv beside --data).
        ssl: architecture of a new model and the loss settings.
        engine: steps, batch, optimiser, devices.
        features: audio settings (longest utterance, lowest sample rate).
        resume: 'latest', a run directory or a checkpoint.
        out: run directory (default runs/speech/continue-ssl/<time>).
    """
    from warmstart.cli.show import print_summary
    from warmstart_speech.data import collate_audio, load_audio
    from warmstart_speech.ssl import build_ssl, held_out_ssl_loss, load_ssl, save_ssl
    from warmstart_speech.ssl import continue_ssl as run_continue_ssl

    model = load_ssl(init, ssl) if init is not None else build_ssl(ssl, engine.train.seed)
    run_dir, checkpoint = _run(run, "continue-ssl").open(resume=resume, out=out)
    utts, report = load_audio(data, config=features)
    held_out = held_out or _beside(data, "test.tsv")
    probe = None
    if held_out is not None:
        test, _ = load_audio(held_out, config=features)
        probe = [collate_audio(test[i : i + 8]) for i in range(0, len(test), 8)]
    before = held_out_ssl_loss(model, probe) if probe else None
    summary = run_continue_ssl(model, utts, engine, run_dir, checkpoint)
    extra = {"init": str(init), "skipped": dict(report.counts)}
    if probe:
        extra["held_out_ssl_loss"] = [before, held_out_ssl_loss(model, probe)]
        summary.final_metrics["held-out SSL loss before"] = before
        summary.final_metrics["held-out SSL loss after"] = extra["held_out_ssl_loss"][1]
    save_ssl(model, run_dir, extra)
    print_summary(summary, f"continue-ssl ({model.backend}; {report.line()})")


@app.command(name="ssl-ctc")
def ssl_ctc(
    data: Path,
    init: str,
    test: Path | None = None,
    ssl: SSLConfig = SSLConfig(),
    freeze_feature_extractor: bool = True,
    engine: EngineConfig = EngineConfig(),
    features: FeatureConfig = FeatureConfig(),
    resume: str | None = None,
    out: Path | None = None,
    run: RunContext | None = None,
) -> dict:
    """CTC fine-tuning (characters) of a wav2vec2 encoder on labelled audio; CER and WER on --test.

    Args:
        data: manifest with transcripts.
        init: a `continue-ssl` folder, an HF wav2vec2 folder or hub id, or a fairseq .pt file with --ssl.arch.
        test: held-out manifest (default: test.tsv beside --data).
        ssl: only `arch` (for .pt checkpoints) is read.
        freeze_feature_extractor: keep the convolutional feature extractor fixed (wav2vec2 fine-tuning).
        engine: steps, batch, optimiser, devices.
        features: audio settings.
        resume: 'latest', a run directory or a checkpoint.
        out: run directory (default runs/speech/ssl-ctc/<time>).
    """
    from warmstart.cli.show import print_summary
    from warmstart_speech.data import char_vocab_of, load_audio
    from warmstart_speech.ssl import ctc_finetune, load_ssl, save_ctc

    model = load_ssl(init, ssl)
    run_dir, checkpoint = _run(run, "ssl-ctc").open(resume=resume, out=out)
    vocab = char_vocab_of(data)
    train, report = load_audio(data, vocab, features)
    test = test or _beside(data, "test.tsv")
    held = load_audio(test, vocab, features)[0] if test is not None else None
    ctc, summary = ctc_finetune(
        model, train, held, vocab, engine, run_dir, freeze_feature_extractor, checkpoint
    )
    save_ctc(ctc, vocab, run_dir, {"init": str(init)})
    print_summary(summary, f"ssl-ctc ({model.backend}); {report.line()}")
    return 0


def _load_st(model_dir: Path):  # noqa: ANN202
    _, vocabs, model = _load_stage(model_dir, "st")
    return model.eval(), vocabs


@app.command
def translate(
    model: Path, audio: list[Path], beam: int = 5, features: FeatureConfig = FeatureConfig()
) -> None:
    """Translate audio files (WAV/FLAC) with a trained ST model; greedy with --beam 1.

    Args:
        model: folder of a finished `st-train`.
        audio: audio files.
        beam: beam size (1 = greedy).
        features: featurisation settings.
    """
    import torch

    from warmstart.cli.show import print_table
    from warmstart_speech.ctc_ot import translate_batch
    from warmstart_speech.data import SkipReport, featurise_rows

    if beam < 1:
        raise ConfigError(f"--beam {beam}: must be ≥ 1")
    st_model, vocabs = _load_st(model)
    report = SkipReport()
    rows = list(featurise_rows([{"audio": str(Path(a).resolve())} for a in audio], features, report))
    if not rows:
        raise DataError(f"no audio could be read ({report.line()})")
    out = []
    for row in rows:
        fbank = row["fbank"].unsqueeze(0)  # (1, T, C)
        out.append(
            (
                Path(row["audio"]).name,
                translate_batch(st_model, fbank, torch.tensor([fbank.shape[1]]), vocabs["tgt"], beam)[0],
            )
        )
    print_table(f"translate (beam {beam}); {report.line()}", ("audio", "translation"), out)


@app.command(name="eval")
def evaluate(model: Path, data: Path, beam: int = 5, features: FeatureConfig = FeatureConfig()) -> dict:
    """BLEU, chrF (sacrebleu) and WER of an ST model on a manifest.

    Args:
        model: folder of a finished `st-train`.
        data: manifest with translations.
        beam: beam size (1 = greedy).
        features: featurisation settings.
    """
    from warmstart.cli.show import print_table
    from warmstart_speech.ctc_ot import translate_batch, translation_scores
    from warmstart_speech.data import eval_batches, load_utterances

    st_model, vocabs = _load_st(model)
    utts, report = load_utterances(data, vocabs["src"], vocabs["tgt"], features)
    order = sorted(range(len(utts)), key=lambda i: utts[i].fbank.shape[0])
    hyps = [
        h
        for b in eval_batches(utts, 16)
        for h in translate_batch(st_model, b["fbank"], b["fbank_lens"], vocabs["tgt"], beam)
    ]
    scores = translation_scores(hyps, [utts[i].translation for i in order])
    print_table(
        f"eval {data} ({len(utts)} utterances; {report.line()})",
        ("metric", "value"),
        [(k, f"{v:.2f}") for k, v in scores.items()],
    )
    return 0


@app.command(demo=True)
def demo(out: Path | None = None, run: RunContext | None = None) -> DemoResult:
    """A tour of the recipe on generated speech: synth → MT → CTC+OT pretraining → ST → BLEU (< 1 min CPU).

    Args:
        out: where the corpus and the report go (default runs/speech/demo/<time>).
    """
    from warmstart_speech.bench import run_demo

    run_dir, _ = _run(run, "demo").open(out=out)
    result = run_demo(run_dir)
    from warmstart.cli.show import print_table

    print_table(
        "speech demo",
        ("", ""),
        [(k, f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in result.items()],
    )
    return DemoResult(
        what="espeak-ng corpus → MT → CTC+OT speech-encoder pretraining → ST fine-tuning (tiny, CPU)",
        metric="ST BLEU (greedy)",
        value=result["bleu"],
        details=result,
    )


@app.command
def bench(
    kind: Literal["st", "ssl", "throughput"] = "st",
    st: BenchConfig = BenchConfig(),
    ssl: SSLBenchConfig = SSLBenchConfig(),
    throughput: ThroughputConfig = ThroughputConfig(),
    out: Path | None = None,
    run: RunContext | None = None,
) -> None:
    """st: scratch vs CE vs CTC vs CTC+OT encoders, equal ST budget, seeds; throughput: fairseq2 vs soundfile+numpy.

    Args:
        kind: st (the paper's comparison), ssl (continued wav2vec2 pretraining on a new language, then CTC)
            or throughput (data-pipeline speed).
        st: ST bench settings.
        ssl: continue-ssl bench settings.
        throughput: throughput bench settings.
        out: run directory (default runs/speech/bench/<time>).
    """
    from warmstart.cli.show import print_table
    from warmstart_speech.bench import run_ssl_bench, run_st_bench, run_throughput

    run_dir, _ = _run(run, "bench").open(out=out)
    if kind == "throughput":
        rows = run_throughput(run_dir, throughput)
        print_table("data-pipeline throughput", ("pipeline", "hours of audio / s", "utterances / s"), rows)
        return
    if kind == "ssl":
        report = run_ssl_bench(run_dir, ssl)
        rows = [
            (name, f"{m['mean']:.1f} ± {m['std']:.1f}" if m["mean"] is not None else "—")
            for name, m in report.summary["methods"].items()
        ]
        print_table(f"CER % on held-out language B, {report.report_md}", ("encoder", "CER %"), rows)
        return
    report = run_st_bench(run_dir, st)
    rows = [
        (name, f"{m['mean']:.2f} ± {m['std']:.2f}" if m["mean"] is not None else "—")
        for name, m in report.summary["methods"].items()
    ]
    print_table(f"ST BLEU, {report.report_md}", ("encoder", "BLEU"), rows)


def main() -> None:
    app.entry()


if __name__ == "__main__":
    main()
