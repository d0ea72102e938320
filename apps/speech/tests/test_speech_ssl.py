"""continue-ssl: the wav2vec2 loss goes down, checkpoints round-trip (fairseq2 and transformers), CTC
fine-tuning starts from exactly the pretrained encoder, and the CLI commands run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from warmstart.engine import quick_config
from warmstart.errors import CheckpointError
from warmstart_speech.cli import app
from warmstart_speech.data import char_vocab_of, collate_audio, load_audio
from warmstart_speech.ssl import (
    CTC_KIND,
    CTCModel,
    SSLConfig,
    build_ssl,
    continue_ssl,
    ctc_finetune,
    held_out_ssl_loss,
    load_ctc,
    load_ssl,
    save_ctc,
    save_ssl,
)

TINY = SSLConfig(model_dim=32, ffn_dim=64, conv_dim=32, codebook_entries=16, distractors=10)


@pytest.fixture(scope="module")
def audio(corpus: dict[str, Path]) -> list:
    return load_audio(corpus["train"])[0]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ssl_loss_decreases(audio: list) -> None:
    """Training on the wav2vec2 objective lowers it on fixed masks/negatives of held-out batches."""
    model = build_ssl(TINY, seed=0)
    probe = [collate_audio(audio[:4])]
    before = held_out_ssl_loss(model, probe)
    assert held_out_ssl_loss(model, probe) == pytest.approx(before)  # the probe is deterministic
    summary = continue_ssl(model, audio[4:], quick_config(12, 4, 3e-3, warmup=0, log_every=10))
    after = held_out_ssl_loss(model, probe)
    assert after < 0.9 * before
    assert summary.final_metrics["contrastive"] > 0 and 0 <= summary.final_metrics["diversity"] <= 1


@pytest.mark.parametrize("backend", ["fairseq2", "hf"])
def test_checkpoint_round_trip_and_ctc_starts_from_it(
    backend: str, audio: list, tmp_path: Path, corpus: dict[str, Path]
) -> None:
    cfg = SSLConfig(**{**TINY.__dict__, "backend": backend})
    model = build_ssl(cfg, seed=1)
    continue_ssl(
        model, audio, quick_config(2, 4, 1e-3, warmup=0, log_every=10)
    )  # weights differ from any fresh init
    save_ssl(model, tmp_path / "ck")
    loaded = load_ssl(tmp_path / "ck")
    assert loaded.backend == backend and _same(model.encoder_state(), loaded.encoder_state())
    assert not _same(build_ssl(cfg, seed=1).encoder_state(), loaded.encoder_state())
    probe = collate_audio(audio[:3])
    model.eval(), loaded.eval()
    torch.manual_seed(5)
    a = held_out_ssl_loss(model, [probe])
    b = held_out_ssl_loss(loaded, [probe])
    assert a == pytest.approx(b, rel=1e-5)  # same masks, same weights → same loss
    # CTC fine-tuning starts from exactly these encoder weights, with a fresh output layer
    vocab = char_vocab_of(corpus["train"])
    ctc = CTCModel(loaded, len(vocab))
    assert _same(ctc.encoder_state(), loaded.encoder_state())
    train, _ = load_audio(corpus["train"], vocab)
    tuned, summary = ctc_finetune(
        loaded, train, train[:4], vocab, quick_config(3, 4, 1e-3, warmup=0, log_every=10)
    )
    assert summary.final_metrics["eval/cer"] >= 0 and summary.final_metrics["eval/wer"] <= 100 + 1e-6
    after = tuned.encoder_state()
    conv = next(k for k in after if "feature_extractor" in k and k.endswith("weight"))
    assert torch.equal(after[conv], loaded.encoder_state()[conv])  # frozen feature extractor
    assert not _same(after, loaded.encoder_state())  # the transformer did train
    assert _same(loaded.encoder_state(), load_ssl(tmp_path / "ck").encoder_state())  # source untouched
    save_ctc(tuned, vocab, tmp_path / "ctc")
    again, again_vocab = load_ctc(tmp_path / "ctc")  # every model this app trains reloads with one call
    assert again_vocab.tokens == vocab.tokens and _same(again.state_dict(), tuned.state_dict())


def test_fairseq_pt_checkpoint(audio: list, tmp_path: Path) -> None:
    """A torch .pt checkpoint ({'model': state}) goes through fairseq2's convert_wav2vec2_state_dict."""
    model = build_ssl(TINY, seed=2)
    save_ssl(model, tmp_path / "ref")
    torch.save({"model": {f"module.{k}": v for k, v in model.net.state_dict().items()}}, tmp_path / "w.pt")
    loaded = load_ssl(tmp_path / "w.pt", SSLConfig(arch=str(tmp_path / "ref" / "config.json")))
    assert _same(model.encoder_state(), loaded.encoder_state())
    with pytest.raises(Exception, match="--ssl.arch"):
        load_ssl(tmp_path / "w.pt")


def test_hub_id_goes_to_transformers(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub id (no such local path) is handed to Wav2Vec2ForPreTraining.from_pretrained unchanged."""
    import transformers

    tiny = build_ssl(SSLConfig(**{**TINY.__dict__, "backend": "hf"})).net
    asked: list[str] = []
    monkeypatch.setattr(
        transformers.Wav2Vec2ForPreTraining, "from_pretrained", lambda name, **kw: asked.append(name) or tiny
    )
    model = load_ssl("facebook/wav2vec2-xls-r-300m")
    assert asked == ["facebook/wav2vec2-xls-r-300m"] and model.backend == "hf" and model.net is tiny


def test_bad_checkpoints_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers

    def offline(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - what from_pretrained does without a network
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files\nmore lines")

    monkeypatch.setattr(transformers.Wav2Vec2ForPreTraining, "from_pretrained", offline)
    with pytest.raises(CheckpointError, match="Wav2Vec2ForPreTraining.*couldn't connect"):
        load_ssl("no-such-org/no-such-model")
    with pytest.raises(CheckpointError, match="not a wav2vec2 checkpoint"):
        load_ssl(tmp_path)
    code = app.main(["continue-ssl", "--data", str(tmp_path / "x.tsv"), "--init", str(tmp_path / "missing")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len([line for line in err if "error" in line]) == 1 and "missing" in err[-1]


def test_cli_continue_ssl_then_ctc(quiet, corpus: dict[str, Path], tmp_path: Path) -> None:
    base = build_ssl(TINY, seed=3)
    save_ssl(base, tmp_path / "base")
    train = str(corpus["train"])
    code = app.main(
        [
            "continue-ssl",
            "--data",
            train,
            "--init",
            str(tmp_path / "base"),
            "--out",
            str(tmp_path / "c"),
            "--engine.train.max_steps",
            "4",
            *quiet(micro_batch_size=4),
        ]
    )
    assert code == 0
    meta = json.loads((tmp_path / "c" / "config.json").read_text())
    assert meta["warmstart_kind"] == "speech.wav2vec2" and meta["config"]["backend"] == "fairseq2"
    assert len(meta["held_out_ssl_loss"]) == 2  # test.tsv beside the manifest is the probe
    assert not _same(load_ssl(tmp_path / "c").encoder_state(), base.encoder_state())
    code = app.main(
        [
            "ssl-ctc",
            "--data",
            train,
            "--init",
            str(tmp_path / "c"),
            "--out",
            str(tmp_path / "f"),
            "--engine.train.max_steps",
            "3",
            *quiet(micro_batch_size=4),
        ]
    )
    assert (
        code == 0 and json.loads((tmp_path / "f" / "config.json").read_text())["warmstart_kind"] == CTC_KIND
    )
    ctc, vocab = load_ctc(tmp_path / "f")  # one call reloads the CTC model
    assert ctc.backend == "fairseq2" and len(vocab) > 4
    metrics = [json.loads(line) for line in (tmp_path / "f" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/cer" in m for m in metrics)


@pytest.mark.slow
def test_bench_ssl(tmp_path: Path) -> None:
    cfg = [
        "--ssl.seeds",
        "1",
        "--ssl.n_a",
        "8",
        "--ssl.n_b",
        "8",
        "--ssl.n_labelled",
        "8",
        "--ssl.n_test",
        "4",
        "--ssl.a_steps",
        "2",
        "--ssl.continue_steps",
        "2",
        "--ssl.ctc_steps",
        "2",
        "--ssl.batch_size",
        "4",
        "--ssl.model.model_dim",
        "32",
        "--ssl.model.conv_dim",
        "32",
        "--ssl.model.ffn_dim",
        "64",
    ]
    assert app.main(["bench", "--kind", "ssl", "--out", str(tmp_path / "b"), *cfg]) == 0
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    assert set(res["methods"]) == {"scratch", "A", "A+ssl-A", "A+ssl-B"}
    assert all(len(m["values"]) == 1 and m["values"][0] >= 0 for m in res["methods"].values())
    assert (tmp_path / "b" / "plot.png").is_file() and (
        tmp_path / "b" / "pretrained-A" / "config.json"
    ).is_file()


def test_multilingual_ctc_finetuning(quiet, corpus: dict[str, Path], tmp_path: Path) -> None:
    """ssl-ctc over two languages at once: one joint character vocabulary, CER per language."""
    from warmstart_speech.data import SynthConfig, synth_corpus

    german = synth_corpus(tmp_path / "de", SynthConfig(n_train=6, n_test=2, language="de", seed=5))
    save_ssl(build_ssl(TINY, seed=3), tmp_path / "base")
    code = app.main(
        [
            "ssl-ctc",
            "--data",
            str(corpus["train"]),
            "--languages",
            json.dumps([str(german["train"])]),
            "--init",
            str(tmp_path / "base"),
            "--out",
            str(tmp_path / "m"),
            "--engine.train.max_steps",
            "3",
            *quiet(micro_batch_size=4),
        ]
    )
    assert code == 0
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert set(meta["per_language"]) == {"corpus", "de"}
    assert all(rates["cer"] >= 0 for rates in meta["per_language"].values())
    _, vocab = load_ctc(tmp_path / "m")
    from warmstart_speech.data import read_manifest

    chars = {
        c
        for m in (corpus["train"], german["train"])
        for r in read_manifest(m)
        for c in r["transcript"].lower()
    }
    assert chars <= set(vocab.tokens)  # one vocabulary over both languages
