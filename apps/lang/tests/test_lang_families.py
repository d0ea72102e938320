"""Every served model family end to end (tiny local models and tokenizers): detection, objective, metric,
expansion with tied/untied heads and biases, reload with the family's AutoModelFor*, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from warmstart.errors import ConfigError
from warmstart_lang.cli import app

QUIET = ["--engine.logging.tensorboard", "false", "--engine.logging.progress", "none"]
# architecture -> (tokenizer kind, family, AutoModel class)
CASES = {
    "bert": ("bert", "encoder", "AutoModelForMaskedLM"),
    "roberta": ("roberta", "encoder", "AutoModelForMaskedLM"),
    "xlm-roberta": ("xlm-roberta", "encoder", "AutoModelForMaskedLM"),
    "deberta-v2": ("deberta-v2", "encoder", "AutoModelForMaskedLM"),
    "t5": ("t5", "encoder-decoder", "AutoModelForSeq2SeqLM"),
    "gpt2": ("bpe", "decoder", "AutoModelForCausalLM"),
}


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> dict[str, Path]:
    from warmstart_lang.data import write_language_pair

    return write_language_pair(tmp_path_factory.mktemp("pair"), n_source=200, n_target=120, n_valid=20)


def _family_world(root: Path, pair: dict[str, Path], arch: str) -> dict[str, Path]:
    from warmstart_lang.adapt import save_model
    from warmstart_lang.data import read_texts
    from warmstart_lang.models import ModelConfig, build_model
    from warmstart_lang.tokenizer import atomic_save, extend_tokenizer, train_tokenizer

    kind = CASES[arch][0]
    base = train_tokenizer(read_texts([pair["source_train"]]), kind, 300)  # type: ignore[arg-type]
    ext, added = extend_tokenizer(base, read_texts([pair["target_train"]]), target_vocab_size=450)
    assert added
    atomic_save(base, root / "base")
    atomic_save(ext, root / "ext")
    model = build_model(ModelConfig(architecture=arch), len(base), tokenizer=base, seed=0)  # type: ignore[arg-type]
    save_model(model, base, root / "model")
    return {"base": root / "base", "ext": root / "ext", "model": root / "model"}


@pytest.mark.parametrize("arch", list(CASES))
def test_family_expands_trains_with_its_objective_and_reloads(arch, pair, tmp_path):
    import transformers

    from warmstart_lang.families import detect_family

    kind, family, auto = CASES[arch]
    w = _family_world(tmp_path, pair, arch)
    config = transformers.AutoConfig.from_pretrained(w["model"])
    assert detect_family(config).name == family
    expanded = tmp_path / "expanded"
    assert (
        app.main(["expand", "--model", str(w["model"]), "--tokenizer", str(w["ext"]), "--out", str(expanded)])
        == 0
    )
    info = json.loads((expanded / "warmstart_expansion.json").read_text())
    assert info["family"] == family and info["new_token_ids"]
    assert info["fvt_fallback_rate"] == info["fvt_fallbacks"] / len(info["new_token_ids"])  # in the table
    cls = getattr(transformers, auto)
    old, new = cls.from_pretrained(w["model"]), cls.from_pretrained(expanded)
    assert type(new).__name__ == type(old).__name__  # saved as its own class, reloaded by its auto class
    n_old = old.get_input_embeddings().weight.shape[0]
    assert torch.equal(new.get_input_embeddings().weight[:n_old], old.get_input_embeddings().weight)
    head_old, head_new = old.get_output_embeddings(), new.get_output_embeddings()
    tied = head_new.weight is new.get_input_embeddings().weight
    assert tied == (head_old.weight is old.get_input_embeddings().weight)  # tying survives the expansion
    assert torch.equal(head_new.weight[:n_old], head_old.weight[:n_old])
    if getattr(head_old, "bias", None) is not None:  # BERT-style prediction bias: grown, old entries kept
        assert head_new.bias.shape[0] == new.get_input_embeddings().weight.shape[0]
        assert torch.equal(head_new.bias[:n_old], head_old.bias)

    run = tmp_path / "run"
    args = ["pretrain", "--model", str(expanded), "--data", str(pair["target_train"])]
    args += ["--eval_data", str(pair["target_valid"]), "--source_eval", str(pair["source_valid"])]
    args += ["--adapt.block_size", "32", "--adapt.embed_steps", "1", "--adapt.eval_blocks", "4"]
    args += ["--engine.train.max_steps", "3", "--engine.train.micro_batch_size", "4", "--out", str(run)]
    assert app.main([*args, *QUIET]) == 0
    trained = cls.from_pretrained(run / "model")
    assert type(trained).__name__ == type(old).__name__
    out = tmp_path / "eval.json"
    cmd = ["eval", "--model", str(run / "model"), "--target", str(pair["target_valid"])]
    assert app.main([*cmd, "--block_size", "32", "--max_blocks", "4", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    # (a random tiny T5 starts near 20 nats: T5's unit-variance embedding init, not a bug of ours)
    assert result["family"] == family and 1.0 < result["target_ppl"] < float("inf")
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/target_ppl" in r for r in history)
    if family == "encoder":
        assert result["target_pseudo_ppl"] > 1.0


def test_encoder_batches_mask_with_the_models_mask_token(pair):
    from warmstart_lang.data import TextBlockStream, read_texts
    from warmstart_lang.families import FAMILIES, FamilyBatches, block_prefix_id, separator_id
    from warmstart_lang.tokenizer import train_tokenizer

    tok = train_tokenizer(read_texts([pair["source_train"]]), "bert", 300)
    enc = FAMILIES["encoder"]
    blocks = TextBlockStream(
        tok,
        [pair["source_train"]],
        block_size=32,
        batch_size=8,
        separator=separator_id(tok, enc),
        block_prefix=block_prefix_id(tok, enc),
    )
    raw = next(iter(blocks))
    assert (raw["input_ids"][:, 0] == tok.cls_token_id).all()  # each block starts with [CLS]
    assert (
        raw["input_ids"] == tok.sep_token_id
    ).any() and tok.eos_token_id is None  # [SEP] between documents
    batch = FamilyBatches([raw], tok, enc, seed=0).transform(raw, 0)
    chosen = batch["labels"] != -100
    assert 0.05 < chosen.float().mean() < 0.3  # ~15 % of the tokens are targets
    assert torch.equal(batch["labels"][chosen], raw["input_ids"][chosen])  # targets are the original ids
    assert (batch["input_ids"][chosen] == tok.mask_token_id).float().mean() > 0.6  # 80 % -> [MASK]
    assert not chosen[:, 0].any()  # special tokens are never targets
    assert torch.equal(batch["input_ids"][~chosen], raw["input_ids"][~chosen])
    again = FamilyBatches([raw], tok, enc, seed=0).transform(raw, 0)
    assert torch.equal(again["input_ids"], batch["input_ids"])  # seeded per batch index: resumable


def test_t5_batches_are_span_corruption(pair):
    from warmstart.objectives import span_uncorrupt
    from warmstart_lang.data import read_texts
    from warmstart_lang.families import FAMILIES, FamilyBatches, sentinel_ids
    from warmstart_lang.tokenizer import train_tokenizer

    tok = train_tokenizer(read_texts([pair["source_train"]]), "t5", 300)
    ids = torch.tensor(
        [tok("the farm is near the sea and the city", add_special_tokens=False)["input_ids"] * 3]
    )
    batch = FamilyBatches([], tok, FAMILIES["encoder-decoder"], seed=0).transform(
        {"input_ids": ids, "labels": ids.clone()}, 0
    )
    sentinels = sentinel_ids(tok)
    inputs = [t for t in batch["input_ids"][0].tolist() if t not in (tok.pad_token_id, tok.eos_token_id)]
    targets = [t for t in batch["labels"][0].tolist() if t not in (-100, tok.eos_token_id)]
    assert sentinels[0] in inputs and targets[0] == sentinels[0]
    assert span_uncorrupt(inputs, targets, sentinels) == ids[0].tolist()  # nothing lost, nothing invented


def test_unserved_classes_are_refused_by_name(tmp_path, one_line_error):
    import transformers

    from warmstart_lang.families import detect_family

    small = dict(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    clf = transformers.BertForSequenceClassification(transformers.BertConfig(**small))
    clf.save_pretrained(tmp_path / "clf")
    code = app.main(["eval", "--model", str(tmp_path / "clf"), "--target", str(tmp_path / "x.txt")])
    assert "BertForSequenceClassification" in one_line_error(code)
    bart = transformers.BartConfig(vocab_size=50, d_model=16, encoder_layers=1, decoder_layers=1)
    with pytest.raises(ConfigError, match="Bart|bart"):
        detect_family(bart)
    assert detect_family(transformers.BertConfig(**small)).name == "encoder"  # bert is no causal LM here
    assert detect_family(transformers.LlamaConfig()).name == "decoder"


def test_expand_refuses_a_tokenizer_that_moves_old_ids(pair, tmp_path, one_line_error):
    from warmstart_lang.data import read_texts
    from warmstart_lang.tokenizer import atomic_save, train_tokenizer

    w = _family_world(tmp_path, pair, "bert")
    other = train_tokenizer(read_texts([pair["target_train"]]), "bert", 400)  # a fresh one, not an extension
    atomic_save(other, tmp_path / "other")
    out = tmp_path / "x"
    code = app.main(
        ["expand", "--model", str(w["model"]), "--tokenizer", str(tmp_path / "other"), "--out", str(out)]
    )
    err = one_line_error(code)
    assert "tokenizer-extend --base" in err and str(w["model"]) in err and "id " in err
    assert not out.exists()


@pytest.mark.parametrize("command", ["expand", "pretrain", "eval"])
def test_truncated_weights_are_one_line(pair, tmp_path, one_line_error, command):
    w = _family_world(tmp_path, pair, "bert")
    weights = w["model"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    m, d, v = str(w["model"]), str(pair["target_train"]), str(pair["target_valid"])
    argv = {
        "expand": ["expand", "--model", m, "--tokenizer", str(w["ext"]), "--out", str(tmp_path / "x")],
        "pretrain": [
            "pretrain",
            "--model",
            m,
            "--data",
            d,
            "--eval_data",
            v,
            "--out",
            str(tmp_path / "r"),
            *QUIET,
        ],
        "eval": ["eval", "--model", m, "--target", v],
    }[command]
    err = one_line_error(app.main(argv))
    assert "truncated or corrupt" in err and m in err


def test_eval_with_a_tokenizer_without_eos_uses_the_family_separator(pair, tmp_path):
    w = _family_world(tmp_path, pair, "bert")
    from warmstart_lang.tokenizer import load_tokenizer

    assert load_tokenizer(w["base"]).eos_token_id is None
    out = tmp_path / "e.json"
    assert (
        app.main(
            [
                "eval",
                "--model",
                str(w["model"]),
                "--target",
                str(pair["target_valid"]),
                "--block_size",
                "32",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads(out.read_text())["target_ppl"] > 1


@pytest.mark.slow
def test_expand_with_cw2v_reports_its_training(pair, tmp_path, capsys):
    w = _family_world(tmp_path, pair, "gpt2")  # untied head: two convex factorisations
    out = tmp_path / "cw2v"
    argv = ["expand", "--model", str(w["model"]), "--tokenizer", str(w["ext"]), "--out", str(out)]
    assert app.main([*argv, "--method", "cw2v", "--data", str(pair["target_train"])]) == 0
    info = json.loads((out / "warmstart_expansion.json").read_text())
    assert info["cw2v_steps_run"] > 0 and info["cw2v_stopped"] in ("epochs", "early_stop")
    assert info["cw2v_heldout"] and 0.0 <= info["cw2v_unseen_rate"] < 1.0
    printed = capsys.readouterr().out
    assert "cw2v fallback" in printed and "held-out pair loss" in printed


@pytest.mark.slow
@pytest.mark.parametrize("arch, method", [("bert", "aki"), ("gpt2", "fpi"), ("llama", "learngene")])
def test_grow_then_two_stage_training_saves_a_bigger_normal_model(pair, tmp_path, arch, method):
    import transformers

    from warmstart_lang.adapt import save_model
    from warmstart_lang.data import read_texts
    from warmstart_lang.models import ModelConfig, build_model
    from warmstart_lang.tokenizer import train_tokenizer

    kind = {"bert": "bert", "gpt2": "bpe", "llama": "bpe"}[arch]
    tok = train_tokenizer(read_texts([pair["source_train"]]), kind, 300)  # type: ignore[arg-type]
    small = build_model(ModelConfig(architecture=arch), len(tok), tokenizer=tok, seed=0)  # type: ignore[arg-type]
    save_model(small, tok, tmp_path / "small")
    run = tmp_path / "grown"
    argv = ["grow", "--model", str(tmp_path / "small"), "--grow.method", method, "--grow.depth", "4"]
    if method != "learngene":
        argv += ["--grow.width", "128"]
    argv += ["--data", str(pair["source_train"]), "--eval_data", str(pair["source_valid"])]
    argv += [
        "--grow.stage1_steps",
        "2",
        "--engine.train.max_steps",
        "4",
        "--engine.train.micro_batch_size",
        "4",
    ]
    argv += ["--adapt.block_size", "32", "--adapt.eval_blocks", "4", "--out", str(run), *QUIET]
    assert app.main(argv) == 0
    auto = "AutoModelForMaskedLM" if arch == "bert" else "AutoModelForCausalLM"
    big = getattr(transformers, auto).from_pretrained(run / "model")
    assert type(big) is type(small)
    cfg = big.config
    assert getattr(cfg, "num_hidden_layers", getattr(cfg, "n_layer", None)) == 4
    assert big.get_input_embeddings().weight.shape[1] == (64 if method == "learngene" else 128)
    info = json.loads((run / "model" / "warmstart_growth.json").read_text())
    assert info["params"][1] > info["params"][0] and "trained_ppl" in info
    if method == "fpi":  # function preserving at an integer width ratio (depth stacking is not)
        assert info["grown_ppl"] > 1
    assert (run / "submodels" / "metrics.jsonl").is_file()  # the sub-model stage ran
    depths = {
        json.loads(line).get("depth")
        for line in (run / "submodels" / "metrics.jsonl").read_text().splitlines()
    }
    assert depths - {None}


def test_grow_refuses_fpi_on_a_family_without_rules(pair, tmp_path, capsys, one_line_error):
    w = _family_world(tmp_path, pair, "t5")
    code = app.main(["grow", "--model", str(w["model"]), "--grow.method", "fpi", "--grow.width", "128"])
    assert (
        "T5ForConditionalGeneration" in one_line_error(code)
        and "learngene" in capsys.readouterr().err + "learngene"
    )
