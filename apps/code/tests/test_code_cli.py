"""End-to-end CLI runs on tiny settings, and one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest

from warmstart_code.cli import app


def _one_line_error(capsys, argv: list[str]) -> str:
    assert app.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{broken\n")
    assert "no valid task" in _one_line_error(capsys, ["tasks", "--source", str(bad)])
    assert "no such task file" in _one_line_error(capsys, ["tasks", "--source", str(tmp_path / "none.jsonl")])
    good = tmp_path / "good.jsonl"
    assert app.main(["tasks", "--generate", "4", "--out", str(good)]) == 0
    no_tok = tmp_path / "no_tokenizer"
    no_tok.mkdir()
    (no_tok / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    err = _one_line_error(
        capsys, ["sample", "--tasks", str(good), "--model", str(no_tok), "--out", str(tmp_path / "s")]
    )
    assert "tokenizer" in err
    assert "--model" in _one_line_error(capsys, ["sft", "--tasks", str(good), "--out", str(tmp_path / "f")])


def test_tasks_generate_and_eval_canonical(tmp_path, capsys):
    path = tmp_path / "tasks.jsonl"
    assert app.main(["tasks", "--generate", "6", "--seed", "1", "--out", str(path)]) == 0
    with path.open("a") as f:
        f.write(
            '{"task_id": "loop", "prompt": "def f():\\n    return 1\\n", "entry_point": "f", "test": "def check(c):\\n    while True: pass\\n"}\n'
        )
        f.write('{"task_id": "oops", "prompt": 3}\n')
    out = tmp_path / "eval"
    assert (
        app.main(
            [
                "eval",
                "--tasks",
                str(path),
                "--out",
                str(out),
                "--sandbox.timeout_s",
                "1",
                "--sandbox.cpu_s",
                "1",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tasks"] == 7 and summary["bad_task_lines"] == 1  # the malformed line skipped, not fatal
    assert summary["pass@1"] == pytest.approx(
        6 / 7
    )  # every canonical solution passes; the hanging task times out
    assert summary["statuses"] == {"passed": 6, "timeout": 1}


@pytest.mark.slow
def test_pretrain_sample_sft_bcoder_rerank(tiny_continual, tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    assert app.main(["tasks", "--generate", "8", "--out", str(tasks)]) == 0
    assert app.main(["pretrain", "--n_tasks", "200", "--steps", "20", "--out", str(tmp_path / "pre")]) == 0
    model = str(tmp_path / "pre" / "model")
    assert (
        app.main(
            [
                "sample",
                "--tasks",
                str(tasks),
                "--model",
                model,
                "--sampling.k",
                "2",
                "--sampling.max_new_tokens",
                "16",
                "--out",
                str(tmp_path / "s"),
            ]
        )
        == 0
    )
    samples = tmp_path / "s" / "samples.jsonl"
    assert len(samples.read_text().splitlines()) == 16
    assert (
        app.main(
            [
                "exec",
                "--tasks",
                str(tasks),
                "--samples",
                str(samples),
                "--k",
                "[1, 2]",
                "--out",
                str(tmp_path / "e"),
            ]
        )
        == 0
    )
    assert (
        app.main(
            [
                "sft",
                "--tasks",
                str(tasks),
                "--model",
                model,
                "--train.steps",
                "3",
                "--train.batch_size",
                "4",
                "--out",
                str(tmp_path / "f"),
            ]
        )
        == 0
    )
    assert (
        app.main(
            [
                "bcoder",
                "--action",
                "train",
                "--tasks",
                str(tasks),
                "--model",
                model,
                "--train.steps",
                "4",
                "--train.batch_size",
                "4",
                "--samples_per_task",
                "1",
                "--out",
                str(tmp_path / "b"),
            ]
        )
        == 0
    )
    # every model the command trains reloads with one call: the LM through transformers, the value head
    # through warmstart.hub
    from torch import nn
    from transformers import AutoModelForCausalLM

    from warmstart.hub import load_model

    assert AutoModelForCausalLM.from_pretrained(tmp_path / "b" / "model") is not None
    head, meta = load_model(
        tmp_path / "b" / "model" / "value_head", lambda c: nn.Linear(c["hidden"], 1), kind="code.bcoder_value"
    )
    assert meta["config"]["bcoder"]["beta"] == 0.1 and head.out_features == 1
    assert (
        app.main(
            [
                "bcoder",
                "--action",
                "rerank",
                "--tasks",
                str(tasks),
                "--model",
                str(tmp_path / "b" / "model"),
                "--samples",
                str(samples),
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 0
    )
    reranked = [json.loads(x) for x in (tmp_path / "r" / "reranked.jsonl").read_text().splitlines()]
    assert len(reranked) == 8 and all("value" in r for r in reranked)
    # continual from the saved model (no pretraining): a local model directory is the start of every seed
    assert (
        app.main(
            [
                "continual",
                "--model",
                model,
                "--options.seeds",
                "[0]",
                "--options.families",
                "[string, list]",
                *tiny_continual,
                "--out",
                str(tmp_path / "cl"),
            ]
        )
        == 0
    )
    mats = json.loads((tmp_path / "cl" / "matrices.json").read_text())
    assert len(mats["strategies"]["ewc"]["pass@1"]["mean"]) == 2


@pytest.mark.slow
def test_prompt_tune_and_benches(tmp_path):
    assert (
        app.main(
            ["prompt-tune", "--steps", "3", "--n_train", "12", "--n_test", "12", "--out", str(tmp_path / "p")]
        )
        == 0
    )
    acc = json.loads((tmp_path / "p" / "accuracy.json").read_text())
    assert set(acc) == {
        "zero-shot",
        "prompt tuning",
        "linear probe",
        "full fine-tuning",
        "scratch (random init + FT)",
    }
    assert all(0.0 <= v <= 1.0 for v in acc.values())
    out = tmp_path / "bs"
    assert (
        app.main(
            [
                "bench",
                "--kind",
                "sandbox",
                "--options.seeds",
                "[0]",
                "--options.sandbox_programs",
                "10",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert all((out / f).is_file() for f in ("report.md", "plot.png"))
    assert all(m["mean"] > 0 for m in results["methods"].values())
