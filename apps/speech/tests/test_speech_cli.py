"""End-to-end CLI: every command on tiny settings, the chained recipe, and one-line errors with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from warmstart.hub import read_config
from warmstart_speech.cli import app

TINY = {"max_steps": 6, "micro_batch_size": 4}  # engine.train fields of the CLI runs here


def _one_error_line(capsys: pytest.CaptureFixture, code: int) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len([line for line in err if "error" in line]) == 1
    return err[-1]


def test_recipe_chain(quiet, corpus: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = str(corpus["train"])
    model = ["--model.model_dim", "32", "--model.ffn_dim", "64", "--model.subsampler_dim", "32"]
    assert app.main(["mt-train", "--data", data, "--out", str(tmp_path / "mt"), *model, *quiet(**TINY)]) == 0
    meta = read_config(tmp_path / "mt", kind="speech.mt")
    assert meta["config"]["model"]["model_dim"] == 32 and meta["vocabs"]["tgt"]["unit"] == "spm"
    mt = str(tmp_path / "mt")
    assert (
        app.main(
            [
                "pretrain",
                "--data",
                data,
                "--objective",
                "ctc+ot",
                "--mt",
                mt,
                "--model.encoder",
                "conformer",
                "--model.conv_kernel",
                "5",
                "--out",
                str(tmp_path / "pre"),
                *quiet(**TINY),
            ]
        )
        == 0
    )
    pre = read_config(tmp_path / "pre", kind="speech.encoder")
    assert pre["objective"] == "ctc+ot" and pre["modality_gap"] > 0
    cfg = pre["config"]["model"]
    assert cfg["encoder"] == "conformer" and cfg["model_dim"] == 32  # MT's size, our type
    pre_w = load_file(str(tmp_path / "pre" / "model.safetensors"))
    assert any("conv.depthwise_conv" in k for k in pre_w)
    assert (
        app.main(
            [
                "st-train",
                "--data",
                data,
                "--encoder",
                str(tmp_path / "pre"),
                "--mt",
                mt,
                "--out",
                str(tmp_path / "st"),
                "--beam",
                "1",
                *quiet(**TINY),
            ]
        )
        == 0
    )
    # the ST decoder starts from the MT decoder: before training they are equal, so a 6-step run stays close

    st, mtw = (
        load_file(str(tmp_path / "st" / "model.safetensors")),
        load_file(str(tmp_path / "mt" / "model.safetensors")),
    )
    key = next(k for k in mtw if k.startswith("decoder.layers.0.ffn"))
    assert torch.allclose(st[key], mtw[key], atol=0.05) and not torch.equal(st[key], mtw[key])
    capsys.readouterr()
    audio = [r.split("\t")[1] for r in (corpus["test"]).read_text().splitlines()[1:3]]
    audio = [str(corpus["test"].parent / a) for a in audio]
    assert (
        app.main(["translate", "--model", str(tmp_path / "st"), "--beam", "2", "--audio", json.dumps(audio)])
        == 0
    )
    assert "translate (beam 2)" in capsys.readouterr().out
    assert (
        app.main(["eval", "--model", str(tmp_path / "st"), "--data", str(corpus["test"]), "--beam", "1"]) == 0
    )
    out = capsys.readouterr().out
    assert "bleu" in out and "chrf" in out and "scored 8 of 8 rows (100 %)" in out.strip().splitlines()[-1]
    _eval_open_vocabulary(tmp_path, corpus, capsys)
    _truncated_weights(tmp_path, audio, capsys)


def _eval_open_vocabulary(tmp_path: Path, corpus: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    """eval needs audio + translation only; words never seen in training are scored, not dropped; every
    skipped row is named, and a run scoring < 90 % of its rows says so in its last line."""
    from warmstart_speech.data import read_manifest

    rows = read_manifest(corpus["test"])
    held = tmp_path / "held.tsv"
    lines = ["audio\ttranslation"]
    lines += [
        f"{r['audio']}\tdie riesige giraffe ißt {i} grüne äpfel" for i, r in enumerate(rows[:3])
    ]  # unseen
    lines += [f"{tmp_path / 'gone.wav'}\tder hund", f"{rows[3]['audio']}\t"]  # missing audio, no translation
    held.write_text("\n".join(lines) + "\n")
    report = tmp_path / "eval.json"
    code = app.main(
        ["eval", "--model", str(tmp_path / "st"), "--data", str(held), "--beam", "5", "--out", str(report)]
    )
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert out[-1].startswith("WARNING") and "scored 3 of 5 rows (60 %" in out[-1]
    assert "gone.wav" in out[-2] and "no translation" in out[-2]
    result = json.loads(report.read_text())
    assert result["scored"] == 3 and result["rows"] == 5 and result["skipped"]["skipped"] == 2
    assert any("gone.wav" in name for names in result["skipped"]["rows"].values() for name in names)


def _truncated_weights(tmp_path: Path, audio: list[str], capsys: pytest.CaptureFixture) -> None:
    """A truncated model.safetensors is one line naming the file, exit 2, no traceback."""
    import shutil

    broken = tmp_path / "st-broken"
    shutil.copytree(tmp_path / "st", broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    code = app.main(["translate", "--model", str(broken), "--audio", json.dumps(audio)])
    line = _one_error_line(capsys, code)
    assert "model.safetensors" in line and "Traceback" not in line


def test_old_layout_still_loads(tmp_path: Path) -> None:
    """A run folder of the older layout (model.json + model.safetensors, word vocabulary) loads; every
    model kind the app trains reloads with one load_stage call from the hub format."""
    from safetensors.torch import save_file

    from warmstart_speech.data import Vocab
    from warmstart_speech.models import ModelConfig, build_stage, load_stage, save_model

    cfg = ModelConfig(model_dim=32, ffn_dim=64, subsampler_dim=32)
    vocabs = {"src": Vocab.build(["abc"]), "tgt": Vocab.build(["der hund"], "word")}
    for kind in ("mt", "speech-encoder", "st"):
        torch.manual_seed(0)
        model = build_stage(kind, cfg, len(vocabs["src"]), len(vocabs["tgt"]))
        old = tmp_path / f"old-{kind}"
        old.mkdir()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(old / "model.safetensors"))
        meta = {"kind": kind, "config": cfg.__dict__, "vocabs": {k: v.to_json() for k, v in vocabs.items()}}
        (old / "model.json").write_text(json.dumps(meta))
        new = save_model(tmp_path / f"new-{kind}", kind, model, cfg, vocabs, {"note": 1})
        for folder in (old, new):
            got_cfg, got_vocabs, got, _ = load_stage(folder, kind)
            assert (
                got_cfg == cfg
                and got_vocabs["tgt"].decode(got_vocabs["tgt"].encode("der hund")) == "der hund"
            )
            for key, value in model.state_dict().items():
                assert torch.equal(got.state_dict()[key], value), (folder, key)
    assert (tmp_path / "new-st" / "README.md").read_text().count("arXiv 2301.11716") >= 1


@pytest.mark.parametrize("objective", ["ctc", "ce"])
def test_pretrain_without_teacher(quiet, corpus: dict[str, Path], tmp_path: Path, objective: str) -> None:
    small = ["--model.model_dim", "32", "--model.ffn_dim", "64", "--model.subsampler_dim", "32"]
    code = app.main(
        [
            "pretrain",
            "--data",
            str(corpus["train"]),
            "--objective",
            objective,
            "--out",
            str(tmp_path / "p"),
            *small,
            *quiet(**TINY),
        ]
    )
    assert code == 0 and (tmp_path / "p" / "model.safetensors").is_file()


def test_data_commands(tmp_path: Path, corpus: dict[str, Path]) -> None:
    assert (
        app.main(["data-synth", "--out", str(tmp_path / "c"), "--synth.n_train", "3", "--synth.n_test", "1"])
        == 0
    )
    assert len((tmp_path / "c" / "train.tsv").read_text().splitlines()) == 4
    folder = tmp_path / "folder"
    folder.mkdir()
    import shutil

    src = Path(corpus["train"]).parent / "audio"
    for i, wav in enumerate(sorted(src.glob("*.wav"))[:2]):
        shutil.copy(wav, folder / wav.name)
        if i == 0:
            (folder / wav.name).with_suffix(".txt").write_text("the cat sees a red car")
    assert app.main(["data-prepare", "--audio", str(folder), "--out", str(tmp_path / "m.tsv")]) == 0
    rows = (tmp_path / "m.tsv").read_text().splitlines()
    assert len(rows) == 2 and "the cat sees a red car" in rows[1]


def test_bad_input_one_line(quiet, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    line = _one_error_line(
        capsys,
        app.main(["mt-train", "--data", str(tmp_path / "none.tsv"), *quiet(**TINY)]),
    )
    assert "none.tsv" in line and "manifest not found" in line
    line = _one_error_line(
        capsys, app.main(["pretrain", "--data", str(tmp_path / "x.tsv"), "--objective", "ctc+ot"])
    )
    assert "--mt" in line
    line = _one_error_line(capsys, app.main(["translate", "--model", str(tmp_path), "--audio", "[]"]))
    assert "config.json" in line
    bad = tmp_path / "bad.tsv"
    bad.write_text("path\ttext\nfoo.wav\thello\n")
    line = _one_error_line(capsys, app.main(["mt-train", "--data", str(bad), *quiet(**TINY)]))
    assert "lacks column" in line


def test_demo(tmp_path: Path) -> None:
    from warmstart_speech.bench import run_demo

    result = run_demo(tmp_path, n_train=24, n_test=8, steps=8)
    assert result["modality_gap_after"] < result["modality_gap_before"]  # OT pulls speech toward text
    assert 0 <= result["bleu"] <= 100 and (tmp_path / "demo.json").is_file()


def test_bench_st_and_throughput(
    tmp_path: Path, corpus: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WARMSTART_CACHE", str(tmp_path / "cache"))
    cfg = [
        "--st.seeds",
        "2",
        "--st.mt_steps",
        "6",
        "--st.pretrain_steps",
        "4",
        "--st.st_steps",
        "5",
        "--st.batch_size",
        "4",
        "--st.data",
        str(corpus["train"]),
        "--st.beam",
        "1",
        "--st.model.model_dim",
        "32",
        "--st.model.ffn_dim",
        "64",
        "--st.model.subsampler_dim",
        "32",
    ]
    assert app.main(["bench", "--kind", "st", "--out", str(tmp_path / "b"), *cfg]) == 0
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    assert set(res["methods"]) == {"scratch", "ce", "ctc", "ctc+ot"}
    assert all(len(m["values"]) == 2 for m in res["methods"].values())
    assert (tmp_path / "b" / "plot.png").stat().st_size > 1000 and (tmp_path / "b" / "report.md").is_file()
    assert res["curves"]["ctc+ot"]["steps"] == [5]
    assert (
        res["config"]["ordering"]["seeds"] == 2
        and "CTC+OT > CTC > CE" in (tmp_path / "b" / "report.md").read_text()
    )
    sources = {
        k: sorted(p.name for p in (tmp_path / "cache" / k).iterdir() if not p.name.startswith("."))
        for k in ("speech.mt-source", "speech.encoder-source")
    }
    assert len(sources["speech.mt-source"]) == 2 and len(sources["speech.encoder-source"]) == 6  # per seed
    assert (
        app.main(
            ["bench", "--kind", "st", "--out", str(tmp_path / "b2"), "--st.arms", '["scratch", "ctc"]', *cfg]
        )
        == 0
    )
    again = {
        k: sorted(p.name for p in (tmp_path / "cache" / k).iterdir() if not p.name.startswith("."))
        for k in sources
    }
    assert again == sources  # the second run reused every cached source
    res2 = json.loads((tmp_path / "b2" / "results.json").read_text())
    assert res2["methods"]["ctc"]["values"] == res["methods"]["ctc"]["values"]  # same sources, same ST runs
    assert (
        app.main(
            [
                "bench",
                "--kind",
                "throughput",
                "--out",
                str(tmp_path / "t"),
                "--throughput.data",
                str(corpus["test"]),
                "--throughput.repeats",
                "1",
            ]
        )
        == 0
    )
    tp = json.loads((tmp_path / "t" / "throughput.json").read_text())
    assert tp["files"] == 8 and tp["ratio_fairseq2_over_numpy"] > 0


def test_numpy_fbank_matches_fairseq2(corpus: dict[str, Path]) -> None:
    """The throughput peer computes the same features (so the speed comparison is fair)."""
    import soundfile as sf

    from warmstart_speech.bench import numpy_fbank
    from warmstart_speech.data import FeatureConfig, SkipReport, featurise_rows, read_manifest

    row = next(r for r in read_manifest(corpus["train"]) if r["sample_rate"] == "16000")
    ours = next(featurise_rows([row], FeatureConfig(), SkipReport()))["fbank"]
    wave, _ = sf.read(row["audio"], dtype="float32")
    peer = torch.from_numpy(numpy_fbank(wave))
    n = min(len(ours), len(peer))
    corr = torch.corrcoef(torch.stack([ours[:n].flatten(), peer[:n].flatten()]))[0, 1]
    assert abs(len(ours) - len(peer)) <= 2 and corr > 0.9
