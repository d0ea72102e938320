"""End-to-end tests of every ``warmstart-lang`` command on tiny settings, and the one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from warmstart.errors import ConfigError
from warmstart_lang.cli import app

QUIET = ["--engine.logging.tensorboard", "false", "--engine.logging.progress", "none"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """synth -> tokenizer-train -> tokenizer-extend, and a tiny untrained source model on the base tokenizer."""
    from warmstart_lang.adapt import save_model
    from warmstart_lang.models import ModelConfig, build_model
    from warmstart_lang.tokenizer import load_tokenizer

    root = tmp_path_factory.mktemp("lang")
    assert (
        app.main(
            [
                "synth",
                "--out",
                str(root / "data"),
                "--n_source",
                "200",
                "--n_target",
                "150",
                "--n_valid",
                "30",
            ]
        )
        == 0
    )
    data = root / "data"
    assert (
        app.main(
            [
                "tokenizer-train",
                "--data",
                str(data / "source" / "train.txt"),
                "--out",
                str(root / "base"),
                "--vocab_size",
                "300",
            ]
        )
        == 0
    )
    assert (
        app.main(
            [
                "tokenizer-extend",
                "--base",
                str(root / "base"),
                "--data",
                str(data / "target" / "train.jsonl"),
                "--heldout",
                str(data / "target" / "valid.txt"),
                "--out",
                str(root / "ext"),
                "--target_vocab_size",
                "400",
            ]
        )
        == 0
    )
    base = load_tokenizer(root / "base")
    model = build_model(ModelConfig(size="tiny"), len(base), eos_token_id=base.eos_token_id, seed=0)
    save_model(model, base, root / "source_model")
    return {
        "root": root,
        "data": data,
        "base": root / "base",
        "ext": root / "ext",
        "model": root / "source_model",
    }


def test_tokenizer_extend_report_meets_the_bar(world):
    report = json.loads((world["ext"] / "fertility.json").read_text())
    assert report["fertility_reduction"] >= 0.30
    assert report["extended"]["vocabulary"] == report["base"]["vocabulary"] + report["added_tokens"]


def test_expand_saves_a_plain_transformers_model(world):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = world["root"] / "expanded"
    assert (
        app.main(
            [
                "expand",
                "--model",
                str(world["model"]),
                "--tokenizer",
                str(world["ext"]),
                "--out",
                str(out),
                "--method",
                "fvt",
                "--head_method",
                "mean",
            ]
        )
        == 0
    )
    old = AutoModelForCausalLM.from_pretrained(world["model"])
    new = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    n_old = old.get_input_embeddings().weight.shape[0]
    w_new, h_new = new.get_input_embeddings().weight, new.get_output_embeddings().weight
    assert w_new.shape[0] == len(tok) > n_old
    assert torch.equal(w_new[:n_old], old.get_input_embeddings().weight)  # old rows bit-identical
    assert torch.equal(h_new[:n_old], old.get_output_embeddings().weight)
    head_mean = old.get_output_embeddings().weight.mean(0)
    assert torch.allclose(h_new[n_old:], head_mean.expand(len(tok) - n_old, -1), atol=1e-6)  # head: mean
    assert not torch.allclose(w_new[n_old:].std(0), torch.zeros(w_new.shape[1]))  # fvt: rows differ
    assert not list(world["root"].glob(".expanded.tmp-*"))  # no temporary directory left behind


def test_pretrain_full_staged_with_replay_and_meco_then_eval(world, tmp_path):
    expanded = world["root"] / "expanded-pt"
    app.main(
        [
            "expand",
            "--model",
            str(world["model"]),
            "--tokenizer",
            str(world["ext"]),
            "--out",
            str(expanded),
            "--method",
            "mean",
        ]
    )
    d = world["data"]
    out = tmp_path / "run"
    code = app.main(
        [
            "pretrain",
            "--model",
            str(expanded),
            "--data",
            str(d / "target" / "train.jsonl"),
            "--eval_data",
            str(d / "target" / "valid.txt"),
            "--replay",
            str(d / "source" / "train.txt"),
            "--source_eval",
            str(d / "source" / "valid.txt"),
            "--adapt.embed_steps",
            "2",
            "--adapt.replay_ratio",
            "0.25",
            "--adapt.meco.enabled",
            "true",
            "--adapt.block_size",
            "32",
            "--engine.train.max_steps",
            "5",
            "--engine.train.micro_batch_size",
            "4",
            "--engine.schedule.name",
            "infinite",
            "--engine.optimizer.lr",
            "3e-3",
            "--out",
            str(out),
            *QUIET,
        ]
    )
    assert code == 0
    assert (out / "model" / "model.safetensors").is_file() and (out / "config.yaml").is_file()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/target_ppl" in r for r in rows)
    # stage 1 trained only embeddings + head: the transformer layers after stage 1 equal the expanded ones
    assert (out / "stage1" / "metrics.jsonl").is_file()
    evaluation = tmp_path / "eval.json"
    assert (
        app.main(
            [
                "eval",
                "--model",
                str(out / "model"),
                "--target",
                str(d / "target" / "valid.txt"),
                "--source",
                str(d / "source" / "valid.txt"),
                "--block_size",
                "32",
                "--out",
                str(evaluation),
            ]
        )
        == 0
    )
    result = json.loads(evaluation.read_text())
    assert result["target_ppl"] > 1 and result["source_ppl"] > 1 and result["eval_tokens_per_s"] > 0


def test_pretrain_stops_and_resumes_to_the_end(world, tmp_path):
    d = world["data"]
    out = tmp_path / "resumed"
    args = [
        "pretrain",
        "--model",
        str(world["model"]),
        "--data",
        str(d / "target" / "train.jsonl"),
        "--eval_data",
        str(d / "target" / "valid.txt"),
        "--tokenizer",
        str(world["base"]),
        "--adapt.block_size",
        "32",
        "--engine.train.max_steps",
        "6",
        "--engine.train.micro_batch_size",
        "4",
        "--engine.logging.log_every",
        "1",
        *QUIET,
    ]
    assert app.main([*args, "--engine.train.stop_at", "3", "--out", str(out)]) == 0
    assert (out / "checkpoints" / "step-3").is_dir()
    assert app.main([*args, "--resume", str(out)]) == 0
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 6 and 4 in steps and (out / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_pretrain_lora_merges_and_trains_new_rows(world, tmp_path):
    from transformers import AutoModelForCausalLM

    expanded = world["root"] / "expanded-lora"
    app.main(
        [
            "expand",
            "--model",
            str(world["model"]),
            "--tokenizer",
            str(world["ext"]),
            "--out",
            str(expanded),
            "--method",
            "random",
        ]
    )
    d = world["data"]
    out = tmp_path / "lora"
    code = app.main(
        [
            "pretrain",
            "--model",
            str(expanded),
            "--data",
            str(d / "target" / "train.jsonl"),
            "--eval_data",
            str(d / "target" / "valid.txt"),
            "--adapt.mode",
            "lora",
            "--adapt.block_size",
            "32",
            "--engine.train.max_steps",
            "3",
            "--engine.train.micro_batch_size",
            "4",
            "--engine.optimizer.lr",
            "1e-2",
            "--out",
            str(out),
            *QUIET,
        ]
    )
    assert code == 0
    before = AutoModelForCausalLM.from_pretrained(expanded)
    after = AutoModelForCausalLM.from_pretrained(out / "model")  # merged: a plain model, no peft needed
    n_old = json.loads((expanded / "warmstart_expansion.json").read_text())["old_rows"]
    w0, w1 = before.get_input_embeddings().weight, after.get_input_embeddings().weight
    assert torch.equal(w0[:n_old], w1[:n_old])  # old rows frozen under LoRA
    assert not torch.equal(w0[n_old:], w1[n_old:])  # new rows trained
    q0 = before.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(q0, after.model.layers[0].self_attn.q_proj.weight)  # LoRA delta merged


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_qlora_on_cpu_is_a_clear_error(world, one_line_error):
    d = world["data"]
    code = app.main(
        [
            "pretrain",
            "--model",
            str(world["model"]),
            "--data",
            str(d / "target" / "train.jsonl"),
            "--eval_data",
            str(d / "target" / "valid.txt"),
            "--adapt.mode",
            "qlora",
        ]
    )
    assert "CUDA" in one_line_error(code)


def test_bad_inputs_exit_2_with_one_line(world, tmp_path, one_line_error):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code = app.main(["tokenizer-train", "--data", str(empty), "--out", str(tmp_path / "t")])
    assert str(empty) in one_line_error(code)

    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café crème\n".encode("latin-1") * 5)
    code = app.main(["tokenizer-train", "--data", str(latin1), "--out", str(tmp_path / "t")])
    assert "UTF-8" in one_line_error(code)

    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((world["model"] / "config.json").read_text())
    code = app.main(
        [
            "expand",
            "--model",
            str(no_weights),
            "--tokenizer",
            str(world["ext"]),
            "--base_tokenizer",
            str(world["base"]),
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert "without weights" in one_line_error(code)
    assert not (tmp_path / "x").exists()

    d = world["data"]  # the extended tokenizer does not fit the unexpanded model
    code = app.main(
        [
            "eval",
            "--model",
            str(world["model"]),
            "--tokenizer",
            str(world["ext"]),
            "--target",
            str(d / "target" / "valid.txt"),
        ]
    )
    assert "expand" in one_line_error(code)


def test_expansion_memory_is_refused_before_allocating(world):
    from transformers import AutoModelForCausalLM

    from warmstart_lang.models import check_expansion_memory

    model = AutoModelForCausalLM.from_pretrained(world["model"])
    d = model.get_input_embeddings().weight.shape[1]
    need = check_expansion_memory(model, 1000, budget=10**9)
    assert need == 3 * 1000 * d * 4  # embeddings + untied head + one transient copy, fp32
    with pytest.raises(ConfigError, match="GiB"):
        check_expansion_memory(model, 10**9, budget=10**9)


def test_only_rank_0_writes_under_a_launcher(world, tmp_path, monkeypatch):
    """A rank other than 0 (as torchrun sets RANK) trains but saves no model, config or tokenizer."""
    d = world["data"]
    monkeypatch.setenv("RANK", "1")
    out = tmp_path / "rank1"
    args = ["pretrain", "--model", str(world["model"]), "--data", str(d / "target" / "train.jsonl")]
    args += ["--eval_data", str(d / "target" / "valid.txt"), "--tokenizer", str(world["base"])]
    args += [
        "--adapt.block_size",
        "32",
        "--engine.train.max_steps",
        "2",
        "--engine.train.micro_batch_size",
        "2",
    ]
    assert app.main([*args, *QUIET, "--out", str(out)]) == 0
    assert not (out / "model").exists() and not (out / "config.yaml").exists()
    tok = ["tokenizer-train", "--data", str(d / "source" / "train.txt"), "--out", str(tmp_path / "tok")]
    assert app.main(tok) == 0 and not (tmp_path / "tok").exists()
    ext = [
        "expand",
        "--model",
        str(world["model"]),
        "--tokenizer",
        str(world["ext"]),
        "--out",
        str(tmp_path / "x"),
    ]
    assert app.main(ext) == 0 and not (tmp_path / "x").exists()
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert app.main(["bench", "--out", str(tmp_path / "bench")]) == 2  # many small fits: one process only
    assert not (tmp_path / "bench").exists()
