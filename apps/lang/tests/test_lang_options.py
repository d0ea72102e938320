"""Data by name (a ``datasets`` save_to_disk folder), self-distillation and prompt-based continued
pretraining as ``pretrain`` options, on tiny local models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from warmstart.errors import DataError
from warmstart_lang.cli import app

QUIET = ["--engine.logging.tensorboard", "false", "--engine.logging.progress", "none"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """The language pair, a BERT-style tokenizer and a tiny BERT masked LM, a save_to_disk dataset."""
    import datasets

    from warmstart_lang.adapt import save_model
    from warmstart_lang.data import read_texts, write_language_pair
    from warmstart_lang.models import ModelConfig, build_model
    from warmstart_lang.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("opts")
    pair = write_language_pair(root / "pair", n_source=150, n_target=120, n_valid=20)
    tok = train_tokenizer(read_texts([pair["source_train"]]), "bert", 300)
    model = build_model(ModelConfig(architecture="bert"), len(tok), tokenizer=tok, seed=0)
    save_model(model, tok, root / "bert")
    texts = read_texts([pair["target_train"]])
    ds = datasets.Dataset.from_dict(
        {"content": texts, "label": [i % 2 for i in range(len(texts))], "id": list(range(len(texts)))}
    )
    datasets.DatasetDict({"train": ds, "validation": ds.select(range(20))}).save_to_disk(str(root / "ds"))
    return {"root": root, "bert": root / "bert", "ds": root / "ds", **pair}


def test_save_to_disk_folder_streams_by_column_and_resumes(world):
    from warmstart_lang.data import DatasetSource, iter_documents, read_texts, resolve_files

    sources = resolve_files([world["ds"]], split="validation")
    assert sources == [DatasetSource(str(world["ds"]), "disk", "validation")]
    docs = list(iter_documents(sources, text_key="content"))
    assert len(docs) == 20 and docs[0][1]["label"] == 0
    assert [d[0] for d in docs] == read_texts([world["target_train"]])[:20]
    rest = list(iter_documents(sources, text_key="content", start=docs[4][2]))  # resume at row 5
    assert [d[0] for d in rest] == [d[0] for d in docs[5:]]
    with pytest.raises(DataError, match="no column 'text'.*--data_column"):
        list(iter_documents(sources))
    with pytest.raises(DataError, match="no split 'test'"):
        list(iter_documents(resolve_files([world["ds"]], split="test"), text_key="content"))
    hub = resolve_files(["someone/some-corpus"])  # not a local path: a hub name, streamed
    assert hub == [DatasetSource("someone/some-corpus", "hub", "train")]


def _pretrain(world, tmp_path, *extra: str) -> Path:
    out = tmp_path / "run"
    argv = ["pretrain", "--model", str(world["bert"]), "--data", str(world["ds"]), "--data_column", "content"]
    argv += [
        "--eval_data",
        str(world["target_valid"]),
        "--adapt.block_size",
        "32",
        "--adapt.eval_blocks",
        "4",
    ]
    argv += ["--engine.train.max_steps", "3", "--engine.train.micro_batch_size", "4", "--out", str(out)]
    argv += ["--engine.logging.log_every", "1", *QUIET, *extra]
    assert app.main(argv) == 0
    return out


def test_pretrain_reads_a_dataset_folder(world, tmp_path):
    from transformers import AutoModelForMaskedLM

    out = _pretrain(world, tmp_path)
    assert isinstance(AutoModelForMaskedLM.from_pretrained(out / "model"), torch.nn.Module)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == 3


@pytest.mark.slow
def test_self_distillation_adds_a_teacher_term(world, tmp_path):
    from warmstart_lang.adapt import AdaptTask, DistillConfig, load_teacher
    from warmstart_lang.models import load_model

    out = _pretrain(world, tmp_path, "--adapt.distill.weight", "1.0")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    distill = [r["distill"] for r in rows if "distill" in r]
    assert len(distill) == 3 and distill[0] >= 0.0 and max(distill) > 0.0  # the student moves off the teacher
    # the term is the MSE of last hidden states, zero while student == teacher, and it has a gradient
    model = load_model(world["bert"])
    task = AdaptTask(model, [], family=None)
    task.teacher, task.distill = load_teacher(DistillConfig(weight=1.0), model), DistillConfig(weight=1.0)
    ids = torch.randint(5, 300, (2, 16))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    loss, metrics = task.loss(batch)
    assert metrics["distill"] == pytest.approx(0.0, abs=1e-10)
    with torch.no_grad():
        w = model.get_input_embeddings().weight
        w.add_(0.1 * torch.randn(w.shape, generator=torch.Generator().manual_seed(0)))
    loss, metrics = task.loss(batch)
    assert metrics["distill"] > 1e-4
    loss.backward()
    assert model.get_input_embeddings().weight.grad is not None
    # a teacher of another shape is refused
    other = tmp_path / "other"
    from warmstart_lang.adapt import save_model
    from warmstart_lang.models import ModelConfig, build_model
    from warmstart_lang.tokenizer import load_tokenizer

    save_model(
        build_model(ModelConfig(architecture="bert"), 310, tokenizer=load_tokenizer(world["bert"])),
        load_tokenizer(world["bert"]),
        other,
    )
    with pytest.raises(Exception, match="cannot teach"):
        load_teacher(DistillConfig(weight=1.0, teacher=str(other)), model)


@pytest.mark.slow
def test_prompt_based_continued_pretraining_wraps_documents(world, tmp_path):
    from warmstart_lang.adapt import PromptConfig, prompt_transform
    from warmstart_lang.data import TextBlockStream, resolve_files
    from warmstart_lang.tokenizer import load_tokenizer

    cfg = PromptConfig(template="{text} It was {label}.", verbalizer={"0": "bad", "1": "good"})
    wrap = prompt_transform(cfg)
    assert wrap("nice film", {"label": 1}) == "nice film It was good."
    with pytest.raises(Exception, match="label"):
        wrap("x", {})
    tok = load_tokenizer(world["bert"])
    stream = TextBlockStream(
        tok,
        resolve_files([world["ds"]]),
        block_size=64,
        batch_size=2,
        text_key="content",
        transform=wrap,
        separator=tok.sep_token_id,
    )
    ids, _ = stream._encode("a film", {"label": 0}, False)  # target documents are wrapped ...
    assert ids == tok("a film It was bad.", add_special_tokens=False)["input_ids"]
    ids, _ = stream._encode("a film", {"label": 0}, True)  # ... replayed source documents are not
    assert ids == tok("a film", add_special_tokens=False)["input_ids"]
    out = _pretrain(
        world,
        tmp_path,
        "--adapt.prompt.template",
        "{text} It was {label}.",
        "--adapt.prompt.verbalizer",
        '{"0": "bad", "1": "good"}',
    )
    assert (out / "model" / "model.safetensors").is_file()
