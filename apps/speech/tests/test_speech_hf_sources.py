"""Pretrained transformers sources: a tiny local Marian MT model (teacher + ST decoder) and a tiny wav2vec2
speech encoder go through CTC+OT pretraining, ST fine-tuning, beam-5 eval and reload, from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from warmstart_speech.cli import app


@pytest.fixture(scope="module")
def hf_sources(corpus: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A Marian-architecture MT model + a BPE tokenizer over the corpus's text, and a wav2vec2 encoder."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import (
        MarianConfig,
        MarianMTModel,
        PreTrainedTokenizerFast,
        Wav2Vec2Config,
        Wav2Vec2Model,
    )

    from warmstart_speech.data import read_manifest

    rows = read_manifest(corpus["train"])
    texts = [r["transcript"] for r in rows] + [r["translation"] for r in rows]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        texts, trainers.BpeTrainer(vocab_size=150, special_tokens=["<pad>", "<unk>", "</s>"])
    )
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="</s>"
    )
    torch.manual_seed(0)
    mt = MarianMTModel(
        MarianConfig(
            vocab_size=len(tokenizer),
            d_model=32,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            pad_token_id=0,
            eos_token_id=2,
            decoder_start_token_id=0,
            max_position_embeddings=256,
        )
    )
    root = tmp_path_factory.mktemp("hf")
    mt.save_pretrained(root / "marian")
    tokenizer.save_pretrained(root / "marian")
    speech = Wav2Vec2Model(
        Wav2Vec2Config(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            conv_dim=(32,) * 7,
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4,
            mask_time_prob=0.0,
        )
    )
    speech.save_pretrained(root / "w2v")
    return {"mt": root / "marian", "encoder": root / "w2v"}


def test_transformers_sources_end_to_end(
    quiet, hf_sources: dict[str, Path], corpus: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from transformers import AutoModel

    from warmstart_speech.hf_sources import load_st

    data = str(corpus["train"])
    pre = [
        "pretrain",
        "--data",
        data,
        "--objective",
        "ctc+ot",
        "--mt",
        str(hf_sources["mt"]),
        "--encoder",
        str(hf_sources["encoder"]),
        "--out",
        str(tmp_path / "pre"),
        "--engine.train.max_steps",
        "4",
    ]
    assert app.main([*pre, *quiet(micro_batch_size=4)]) == 0
    out = capsys.readouterr().out
    assert "ctc" in out and "ot" in out
    before = AutoModel.from_pretrained(hf_sources["encoder"]).state_dict()
    after = AutoModel.from_pretrained(tmp_path / "pre" / "speech").state_dict()  # plain transformers loads it
    key = next(k for k in before if k.startswith("encoder.layers.0") and k.endswith("weight"))
    assert not torch.equal(before[key], after[key])  # the encoder trained
    st = [
        "st-train",
        "--data",
        data,
        "--mt",
        str(hf_sources["mt"]),
        "--encoder",
        str(tmp_path / "pre"),
        "--out",
        str(tmp_path / "st"),
        "--engine.train.max_steps",
        "4",
        "--beam",
        "2",
    ]
    assert app.main([*st, *quiet(micro_batch_size=4)]) == 0
    model, tokenizer = load_st(tmp_path / "st")  # one call reloads the ST model
    pre_heads = AutoModel.from_pretrained(tmp_path / "pre" / "speech").state_dict()
    assert set(pre_heads) == set(model.encoder.speech.state_dict())
    capsys.readouterr()
    assert (
        app.main(["eval", "--model", str(tmp_path / "st"), "--data", str(corpus["test"]), "--beam", "5"]) == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert "scored 8 of 8 rows (100 %)" in lines[-1] and any("bleu" in line for line in lines)
    meta = json.loads((tmp_path / "st" / "source.json").read_text())
    assert meta["kind"] == "speech.hf-st" and meta["mt"] == str(hf_sources["mt"])
