"""End-to-end CLI: every command on tiny settings, the chained recipe, and one-line errors with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from warmstart_speech.cli import app

TINY = [
    "--engine.train.max_steps", "6", "--engine.train.micro_batch_size", "4", "--engine.logging.tensorboard", "false",
    "--engine.logging.progress", "none", "--engine.checkpoint.save_final", "false",
]  # fmt: skip


def _one_error_line(capsys: pytest.CaptureFixture, code: int) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len([line for line in err if "error" in line]) == 1
    return err[-1]


def test_recipe_chain(corpus: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = str(corpus["train"])
    model = ["--model.model_dim", "32", "--model.ffn_dim", "64", "--model.subsampler_dim", "32"]
    assert app.main(["mt-train", "--data", data, "--out", str(tmp_path / "mt"), *model, *TINY]) == 0
    meta = json.loads((tmp_path / "mt" / "model.json").read_text())
    assert meta["kind"] == "mt" and meta["config"]["model_dim"] == 32
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
                *TINY,
            ]
        )
        == 0
    )
    pre = json.loads((tmp_path / "pre" / "model.json").read_text())
    assert pre["objective"] == "ctc+ot" and pre["modality_gap"] > 0
    assert pre["config"]["encoder"] == "conformer" and pre["config"]["model_dim"] == 32  # MT's size, our type
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
                *TINY,
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
    assert "bleu" in out and "chrf" in out


@pytest.mark.parametrize("objective", ["ctc", "ce"])
def test_pretrain_without_teacher(corpus: dict[str, Path], tmp_path: Path, objective: str) -> None:
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
            *TINY,
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


def test_bad_input_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    line = _one_error_line(capsys, app.main(["mt-train", "--data", str(tmp_path / "none.tsv"), *TINY]))
    assert "none.tsv" in line and "manifest not found" in line
    line = _one_error_line(
        capsys, app.main(["pretrain", "--data", str(tmp_path / "x.tsv"), "--objective", "ctc+ot"])
    )
    assert "--mt" in line
    line = _one_error_line(capsys, app.main(["translate", "--model", str(tmp_path), "--audio", "[]"]))
    assert "model.json" in line
    bad = tmp_path / "bad.tsv"
    bad.write_text("path\ttext\nfoo.wav\thello\n")
    line = _one_error_line(capsys, app.main(["mt-train", "--data", str(bad), *TINY]))
    assert "lacks column" in line


def test_demo(tmp_path: Path) -> None:
    from warmstart_speech.bench import run_demo

    result = run_demo(tmp_path, n_train=24, n_test=8, steps=8)
    assert result["modality_gap_after"] < result["modality_gap_before"]  # OT pulls speech toward text
    assert 0 <= result["bleu"] <= 100 and (tmp_path / "demo.json").is_file()


def test_bench_st_and_throughput(tmp_path: Path, corpus: dict[str, Path]) -> None:
    cfg = [
        "--st.seeds", "2", "--st.mt_steps", "6", "--st.pretrain_steps", "4", "--st.st_steps", "5",
        "--st.batch_size", "4", "--st.data", str(corpus["train"]),
        "--st.model.model_dim", "32", "--st.model.ffn_dim", "64", "--st.model.subsampler_dim", "32",
    ]  # fmt: skip
    assert app.main(["bench", "--kind", "st", "--out", str(tmp_path / "b"), *cfg]) == 0
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    assert set(res["methods"]) == {"scratch", "ce", "ctc", "ctc+ot"}
    assert all(len(m["values"]) == 2 for m in res["methods"].values())
    assert (tmp_path / "b" / "plot.png").stat().st_size > 1000 and (tmp_path / "b" / "report.md").is_file()
    assert res["curves"]["ctc+ot"]["steps"] == [5]
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
