"""``warmstart-speech``: speech-translation pretraining (CTC meets optimal transport) on fairseq2.

Seed paper: "Pre-training for Speech Translation: CTC Meets Optimal Transport" (Le et al., arXiv 2301.11716).
Thin commands over :mod:`warmstart_speech.stages`: data-synth/-prepare → mt-train → pretrain → st-train →
translate / eval, plus demo and bench. Heavy imports (torch models, fairseq2) happen inside the commands.
``continue-ssl`` / ``ssl-ctc``: continued wav2vec2 pretraining on a new language and CTC fine-tuning
("Adapting Multilingual Speech Representation Model for a New, Underresourced Language ...", Nowakowski et
al., arXiv 2301.07295; :mod:`warmstart_speech.ssl`), with ``--languages`` for multilingual CTC fine-tuning.
``--mt`` / ``--encoder`` also take transformers models (:mod:`warmstart_speech.hf_sources`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from warmstart.cli import App, DemoResult, RunContext
from warmstart.engine import EngineConfig
from warmstart.errors import ConfigError, DataError
from warmstart_speech.bench import BenchConfig, SSLBenchConfig, ThroughputConfig
from warmstart_speech.ctc_ot import OTConfig
from warmstart_speech.data import FeatureConfig, SynthConfig, TextConfig
from warmstart_speech.models import ModelConfig
from warmstart_speech.ssl import SSLConfig

app = App("speech", "Speech translation: CTC + optimal-transport pretraining on fairseq2")


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
def data_prepare(
    audio: Path,
    out: Path,
    layout: Literal["folder", "covost", "mustc"] = "folder",
    split: str = "train",
    langs: str = "en-de",
    g2p: str = "en-us",
) -> None:
    """Manifest (TSV) from a corpus in its published layout: CoVoST 2, MuST-C, or a folder of utterances.

    Args:
        audio: the corpus folder. folder: <stem>.wav|flac|mp3|ogg + <stem>.txt transcript and/or <stem>.tr.txt
            translation (searched recursively); covost: a Common Voice language folder (clips/ +
            covost_v2.<src>_<tgt>[.<split>].tsv); mustc: MuST-C's en-<tgt> folder (data/<split>/wav|txt).
        out: the manifest to write.
        layout: folder, covost or mustc.
        split: covost / mustc split (train, dev, test, tst-COMMON, ...).
        langs: source-target languages (covost file names, the MuST-C target suffix).
        g2p: espeak-ng voice for the phoneme column, or "none" (characters of the transcript).
    """
    from warmstart.cli.show import print_table
    from warmstart_speech.data import prepare_manifest

    manifest, report = prepare_manifest(
        audio, out, layout=layout, split=split, langs=langs, g2p_voice=None if g2p == "none" else g2p
    )
    print_table(
        "data prepare",
        ("manifest", "rows", "skipped"),
        [(str(manifest), str(report.kept), str(report.total))],
    )
    print(f"data-prepare {layout}: {report.line()}")


def _beside(manifest: Path, name: str) -> Path | None:
    """``name`` in ``manifest``'s folder if it exists (and is not the manifest itself)."""
    path = Path(manifest).parent / name
    return path if path.is_file() and path.resolve() != Path(manifest).resolve() else None


def _load(data_path: Path, features: FeatureConfig, vocabs=None, text: TextConfig = TextConfig()):  # noqa: ANN001, ANN202
    from warmstart_speech.stages import load_corpus

    return load_corpus(data_path, vocabs=vocabs, features=features, text=text)


def _load_stage(folder: Path, kind: str, vocabs=None):  # noqa: ANN001, ANN202
    """(architecture, vocabularies, model) of a finished ``mt-train`` / ``pretrain`` / ``st-train`` folder."""
    from warmstart_speech.models import load_stage

    cfg, saved, model, _ = load_stage(folder, kind)
    return cfg, vocabs or saved, model


def _save_stage(run_dir: Path, kind: str, model_, cfg: ModelConfig, corpus, extra=None) -> None:  # noqa: ANN001
    from warmstart_speech.models import save_model

    save_model(run_dir, kind, model_, cfg, {"src": corpus.src_vocab, "tgt": corpus.tgt_vocab}, extra)


def _coverage_line(what: str, scored: int, seen: int) -> str:
    """The last line of a scoring run: how many rows were scored, with a warning below 90 %."""
    share = 100.0 * scored / max(seen, 1)
    if share < 90.0:
        return f"WARNING: {what}: scored {scored} of {seen} rows ({share:.0f} %, < 90 %): the metric covers a subset"
    return f"{what}: scored {scored} of {seen} rows ({share:.0f} %)"


def _finish(summary, title: str, corpus) -> None:  # noqa: ANN001
    from warmstart.cli.show import print_summary

    summary.extra["skipped"] = corpus.skipped.to_json()
    print_summary(summary, title)
    print(corpus.skipped.line())
    if corpus.test_seen:
        print(_coverage_line("held-out set", len(corpus.test), corpus.test_seen))


@app.command(name="mt-train")
def mt_train(
    data: Path,
    model: ModelConfig = ModelConfig(),
    engine: EngineConfig = EngineConfig(),
    features: FeatureConfig = FeatureConfig(),
    text: TextConfig = TextConfig(),
    resume: str | None = None,
    out: Path | None = None,
    run: RunContext | None = None,
) -> None:
    """Train the MT model (phonemes → target subwords): the OT teacher and the ST decoder.

    Args:
        data: training manifest (TSV); test.tsv beside it is the held-out set.
        model: architecture.
        engine: steps, batch, optimiser, devices.
        features: featurisation settings.
        text: target units (SentencePiece by default).
        resume: 'latest', a run directory or a checkpoint.
        out: run directory (default runs/speech/mt-train/<time>).
    """
    from warmstart_speech.stages import train_mt

    run_dir, _ = run.open(resume=resume, out=out)
    corpus = _load(data, features, text=text)
    model_, summary = train_mt(corpus, model, engine, run_dir)
    _save_stage(run_dir, "mt", model_, model, corpus, {"skipped": corpus.skipped.to_json()})
    _finish(summary, "mt train", corpus)


@app.command
def pretrain(
    data: Path,
    objective: Literal["ctc", "ctc+ot", "ce"] = "ctc+ot",
    mt: Path | None = None,
    encoder: str | None = None,
    model: ModelConfig = ModelConfig(),
    ot: OTConfig = OTConfig(),
    engine: EngineConfig = EngineConfig(),
    features: FeatureConfig = FeatureConfig(),
    text: TextConfig = TextConfig(),
    resume: str | None = None,
    out: Path | None = None,
    run: RunContext | None = None,
) -> None:
    """Siamese speech-encoder pretraining: CTC on phonemes (+ OT to the frozen MT encoder), or CE.

    Args:
        data: training manifest (TSV).
        objective: ctc, ctc+ot (needs --mt) or ce (ASR encoder-decoder baseline).
        mt: folder of a finished `mt-train` (its vocabularies and architecture are reused), or a transformers
            seq2seq MT model (folder or hub id, e.g. Helsinki-NLP/opus-mt-en-de): its tokenizer's source pieces
            are the CTC targets and its frozen encoder the OT teacher.
        encoder: with a transformers --mt: the transformers speech encoder to pretrain (wav2vec 2.0 / HuBERT /
            XLS-R folder or hub id, e.g. facebook/wav2vec2-xls-r-300m).
        model: architecture (with --mt the MT model's sizes are used; --model.encoder transformer|conformer
            and --model.conv_kernel still apply).
        ot: CTC/OT weights and Sinkhorn settings.
        engine: steps, batch, optimiser, devices.
        features: featurisation settings.
        text: target units when no --mt is given.
        resume: 'latest', a run directory or a checkpoint.
        out: run directory (default runs/speech/pretrain/<time>).
    """
    from warmstart_speech import hf_sources as hf
    from warmstart_speech.ctc_ot import modality_gap
    from warmstart_speech.stages import pretrain_encoder

    if hf.is_hf_mt(mt):
        return _pretrain_hf(data, objective, mt, encoder, ot, engine, features, resume, out, run)
    if encoder is not None:
        raise ConfigError("--encoder (a transformers speech encoder) needs a transformers --mt model")
    teacher, vocabs = None, None
    if mt is not None:
        kind, kernel = model.encoder, model.conv_kernel
        model, vocabs, teacher = _load_stage(mt, "mt")
        model.encoder, model.conv_kernel = kind, kernel  # the speech encoder's type is this command's choice
    elif objective == "ctc+ot":
        raise ConfigError("--objective ctc+ot needs --mt <folder of `warmstart-speech mt-train`>")
    run_dir, checkpoint = run.open(resume=resume, out=out)
    corpus = _load(data, features, vocabs, text)
    encoder, summary = pretrain_encoder(corpus, model, engine, objective, teacher, ot, run_dir, checkpoint)
    extra: dict = {"objective": objective, "skipped": corpus.skipped.to_json()}
    if teacher is not None:
        extra["modality_gap"] = modality_gap(encoder, teacher, corpus.test, ot)
        summary.final_metrics["modality_gap"] = extra["modality_gap"]
    _save_stage(run_dir, "speech-encoder", encoder, model, corpus, extra)
    _finish(summary, f"pretrain ({objective})", corpus)


def _pretrain_hf(data, objective, mt, encoder, ot, engine, features, resume, out, run) -> None:  # noqa: ANN001
    from warmstart.cli.show import print_summary
    from warmstart_speech import hf_sources as hf

    if encoder is None:
        raise ConfigError("--mt is a transformers MT model: pass --encoder <transformers speech encoder>")
    mt_model, tokenizer = hf.load_mt(mt)
    speech = hf.load_encoder(encoder, mt_model, tokenizer)
    run_dir, checkpoint = run.open(resume=resume, out=out)
    items, report = hf.load_items(data, tokenizer, need_src=True, need_tgt=False, features=features)
    summary = hf.pretrain(items, speech, mt_model, tokenizer, objective, ot, engine, run_dir, checkpoint)
    meta = {"objective": objective, "mt": str(mt), "encoder": str(encoder), "skipped": report.to_json()}
    speech.save(run_dir, meta)
    print_summary(summary, f"pretrain ({objective}, transformers sources)")
    print(report.line())


def _st_train_hf(data, encoder, mt, engine, features, beam, resume, out, run) -> None:  # noqa: ANN001
    from warmstart.cli.show import print_summary
    from warmstart_speech import hf_sources as hf

    if encoder is None:
        raise ConfigError(
            "--mt is a transformers MT model: pass --encoder (a `pretrain` folder or a speech encoder)"
        )
    mt_model, tokenizer = hf.load_mt(mt)
    speech = hf.load_encoder(encoder, mt_model, tokenizer)
    run_dir, checkpoint = run.open(resume=resume, out=out)
    train, report = hf.load_items(data, tokenizer, need_src=False, need_tgt=True, features=features)
    test_file = _beside(data, "test.tsv")
    if test_file is not None:
        test, test_report = hf.load_items(
            test_file, tokenizer, need_src=False, need_tgt=True, features=features
        )
    else:
        n = max(1, len(train) // 10)
        train, test, test_report = train[n:], train[:n], None
    model_, summary = hf.train_st(train, test, speech, mt_model, tokenizer, engine, run_dir, beam, checkpoint)
    if test_report is not None:
        report.merge(test_report)
    metrics = {k: v for k, v in summary.final_metrics.items() if k.startswith("eval/")}
    model_.save(
        run_dir, tokenizer, {"mt": str(mt), "encoder": str(encoder), **metrics, "skipped": report.to_json()}
    )
    print_summary(summary, "st train (transformers sources)")
    print(report.line())
    seen = test_report.seen if test_report is not None else len(test)
    print(_coverage_line("held-out set", len(test), seen))


@app.command(name="st-train")
def st_train(
    data: Path,
    encoder: Path | None = None,
    mt: Path | None = None,
    model: ModelConfig = ModelConfig(),
    engine: EngineConfig = EngineConfig(),
    features: FeatureConfig = FeatureConfig(),
    text: TextConfig = TextConfig(),
    beam: int = 5,
    resume: str | None = None,
    out: Path | None = None,
    run: RunContext | None = None,
) -> None:
    """Speech-translation fine-tuning: pretrained speech encoder + MT decoder (either may be absent).

    Args:
        data: training manifest (TSV).
        encoder: folder of a finished `pretrain` (None: a random encoder, the scratch baseline); with a
            transformers --mt also a transformers speech encoder.
        mt: folder of a finished `mt-train` whose decoder initialises the ST decoder, or a transformers
            seq2seq MT model (folder or hub id): the ST model is that MT model fed the speech encoder's states.
        model: architecture when neither --encoder nor --mt is given.
        engine: steps, batch, optimiser, devices.
        features: featurisation settings.
        text: target units when neither --mt nor --encoder is given.
        beam: beam size of the held-out BLEU at the end (paper: 5).
        resume: 'latest', a run directory or a checkpoint.
        out: run directory (default runs/speech/st-train/<time>).
    """
    from warmstart_speech import hf_sources as hf
    from warmstart_speech.stages import fresh_encoder, train_st

    if hf.is_hf_mt(mt):
        return _st_train_hf(data, encoder, mt, engine, features, beam, resume, out, run)
    vocabs, mt_model, enc = None, None, None
    if mt is not None:
        model, vocabs, mt_model = _load_stage(mt, "mt")
    if encoder is not None:
        model, vocabs, enc = _load_stage(encoder, "speech-encoder", vocabs)
    run_dir, checkpoint = run.open(resume=resume, out=out)
    corpus = _load(data, features, vocabs, text)
    enc = enc or fresh_encoder(model, len(corpus.src_vocab), engine.train.seed)
    st_model, summary = train_st(
        corpus, model, engine, enc, mt_model, run_dir, resume_from=checkpoint, beam=beam
    )
    metrics = {k: v for k, v in summary.final_metrics.items() if k.startswith("eval/")}
    _save_stage(run_dir, "st", st_model, model, corpus, {**metrics, "skipped": corpus.skipped.to_json()})
    _finish(summary, "st train", corpus)


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
    from warmstart_speech.ssl import build_ssl, held_out_ssl_loss, load_ssl, min_samples, save_ssl
    from warmstart_speech.ssl import continue_ssl as run_continue_ssl

    model = load_ssl(init, ssl) if init is not None else build_ssl(ssl, engine.train.seed)
    run_dir, checkpoint = run.open(resume=resume, out=out)
    shortest = min_samples(model)
    short = f"clip too short for the wav2vec2 mask spans (< {shortest / 16000:.3f} s)"
    utts, report = load_audio(data, config=features, min_samples=shortest, short_reason=short)
    held_out = held_out or _beside(data, "test.tsv")
    probe = None
    if held_out is not None:
        test, _ = load_audio(held_out, config=features, min_samples=shortest, short_reason=short)
        probe = [collate_audio(test[i : i + 8]) for i in range(0, len(test), 8)]
    before = held_out_ssl_loss(model, probe) if probe else None
    summary = run_continue_ssl(model, utts, engine, run_dir, checkpoint)
    extra = {"init": str(init), "skipped": report.to_json()}
    if probe:
        extra["held_out_ssl_loss"] = [before, held_out_ssl_loss(model, probe)]
        summary.final_metrics["held-out SSL loss before"] = before
        summary.final_metrics["held-out SSL loss after"] = extra["held_out_ssl_loss"][1]
    save_ssl(model, run_dir, extra)
    print_summary(summary, f"continue-ssl ({model.backend})")
    print(report.line())


@app.command(name="ssl-ctc")
def ssl_ctc(
    data: Path,
    init: str,
    test: Path | None = None,
    languages: list[Path] | None = None,
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
        languages: manifests of related languages fine-tuned together with --data (multilingual CTC
            fine-tuning: one joint character vocabulary, batches mixed); CER/WER per language on the
            test.tsv beside each.
        ssl: only `arch` (for .pt checkpoints) is read.
        freeze_feature_extractor: keep the convolutional feature extractor fixed (wav2vec2 fine-tuning).
        engine: steps, batch, optimiser, devices.
        features: audio settings.
        resume: 'latest', a run directory or a checkpoint.
        out: run directory (default runs/speech/ssl-ctc/<time>).
    """
    from warmstart.cli.show import print_summary
    from warmstart_speech.data import Vocab, load_audio, read_manifest
    from warmstart_speech.ssl import ctc_finetune, error_rates, load_ssl, min_samples, save_ctc

    model = load_ssl(init, ssl)
    run_dir, checkpoint = run.open(resume=resume, out=out)
    manifests = [Path(data), *(Path(m) for m in languages or [])]
    texts = [r["transcript"].lower() for m in manifests for r in read_manifest(m) if r["transcript"]]
    vocab = Vocab.build(texts, "char")
    shortest = min_samples(model)
    short = f"clip too short for the wav2vec2 feature extractor (< {shortest / 16000:.3f} s)"
    train, report = load_audio(data, vocab, features, min_samples=shortest, short_reason=short)
    tests = {}
    first_test = test or _beside(data, "test.tsv")
    if first_test is not None:
        tests[Path(data).stem if not languages else Path(data).parent.name] = first_test
    for manifest in languages or []:
        more, more_report = load_audio(manifest, vocab, features, min_samples=shortest, short_reason=short)
        train = train + more
        report.merge(more_report)
        if (beside := _beside(manifest, "test.tsv")) is not None:
            tests[Path(manifest).parent.name] = beside
    held = {name: load_audio(t, vocab, features, shortest, short)[0] for name, t in tests.items()}
    first = next(iter(held.values()), None)
    ctc, summary = ctc_finetune(
        model, train, first, vocab, engine, run_dir, freeze_feature_extractor, checkpoint
    )
    per_language = {}
    if languages:
        per_language = {name: error_rates(ctc, utts, vocab) for name, utts in held.items()}
        for name, rates in per_language.items():
            summary.final_metrics[f"eval/{name}/cer"] = rates["cer"]
            summary.final_metrics[f"eval/{name}/wer"] = rates["wer"]
    extra = {"init": str(init), "languages": [str(m) for m in manifests], "per_language": per_language}
    save_ctc(ctc, vocab, run_dir, {**extra, "skipped": report.to_json()})
    print_summary(summary, f"ssl-ctc ({model.backend}{', multilingual' if languages else ''})")
    print(report.line())
    return 0


def _load_st(model_dir: Path):  # noqa: ANN202
    _, vocabs, model = _load_stage(model_dir, "st")
    return model.eval(), vocabs


@app.command
def translate(
    model: Path, audio: list[Path], beam: int = 5, features: FeatureConfig = FeatureConfig()
) -> None:
    """Translate audio files (WAV/FLAC/MP3/OGG) with a trained ST model; greedy with --beam 1.

    Args:
        model: folder of a finished `st-train` (or a hub id).
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
    from warmstart_speech import hf_sources as hf

    if hf.is_hf_st(model):
        hf_model, tokenizer = hf.load_st(model)
        report = SkipReport(seen=len(audio))
        rows = list(
            featurise_rows([{"audio": str(Path(a).resolve())} for a in audio], features, report, "waveform")
        )
        if not rows:
            raise DataError(f"no audio could be read ({report.line()})")
        texts = [
            hf_model.translate(r["waveform"][None], torch.tensor([r["waveform"].numel()]), tokenizer, beam)[0]
            for r in rows
        ]
        print_table(
            f"translate (beam {beam})",
            ("audio", "translation"),
            [(Path(r["audio"]).name, t) for r, t in zip(rows, texts, strict=True)],
        )
        print(report.line())
        return
    st_model, vocabs = _load_st(model)
    report = SkipReport(seen=len(audio))
    rows = list(featurise_rows([{"audio": str(Path(a).resolve())} for a in audio], features, report))
    if not rows:
        raise DataError(f"no audio could be read ({report.line()})")
    out = []
    for row in rows:
        fbank = row["fbank"].unsqueeze(0)  # (1, T, C)
        lens = torch.tensor([fbank.shape[1]])
        out.append((Path(row["audio"]).name, translate_batch(st_model, fbank, lens, vocabs["tgt"], beam)[0]))
    print_table(f"translate (beam {beam})", ("audio", "translation"), out)
    print(report.line())


@app.command(name="eval")
def evaluate(
    model: Path,
    data: Path,
    beam: int = 5,
    features: FeatureConfig = FeatureConfig(),
    out: Path | None = None,
) -> dict:
    """BLEU, chrF (sacrebleu) and WER of an ST model on a manifest (audio + translation; no transcripts needed).

    Args:
        model: folder of a finished `st-train` (or a hub id).
        data: manifest with `audio` and `translation` columns.
        beam: beam size (1 = greedy; paper: 5).
        features: featurisation settings.
        out: a JSON file for the scores, the coverage and every skipped row by name.
    """
    import json

    from warmstart.cli.show import print_table
    from warmstart_speech.ctc_ot import translate_batch, translation_scores
    from warmstart_speech.data import eval_batches, eval_order, load_utterances

    if beam < 1:
        raise ConfigError(f"--beam {beam}: must be ≥ 1")
    from warmstart_speech import hf_sources as hf

    if hf.is_hf_st(model):
        hf_model, tokenizer = hf.load_st(model)
        utts, report = hf.load_items(data, tokenizer, need_src=False, need_tgt=True, features=features)
        scores = hf.evaluate_items(hf_model, utts, tokenizer, tokenizer.pad_token_id, beam)
    else:
        st_model, vocabs = _load_st(model)
        utts, report = load_utterances(data, None, vocabs["tgt"], features)
        hyps = [
            h
            for b in eval_batches(utts, 16)
            for h in translate_batch(st_model, b["fbank"], b["fbank_lens"], vocabs["tgt"], beam)
        ]
        refs = [utts[i].translation for i in eval_order(utts)]
        scores = translation_scores(hyps, refs)
    coverage = _coverage_line(str(data), len(utts), report.seen)
    if out is not None:
        result = {
            "scores": scores,
            "beam": beam,
            "scored": len(utts),
            "rows": report.seen,
            "skipped": report.to_json(),
        }
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1))
    print_table(
        f"eval {data} (beam {beam})", ("metric", "value"), [(k, f"{v:.2f}") for k, v in scores.items()]
    )
    print(report.line())
    print(coverage)
    return 0


@app.command(demo=True)
def demo(out: Path | None = None, run: RunContext | None = None) -> DemoResult:
    """A tour of the recipe on generated speech: synth → MT → CTC+OT pretraining → ST → BLEU (< 1 min CPU).

    Args:
        out: where the corpus and the report go (default runs/speech/demo/<time>).
    """
    from warmstart_speech.bench import run_demo

    run_dir, _ = run.open(out=out)
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

    run_dir, _ = run.open(out=out)
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
