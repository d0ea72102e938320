"""Generator, streaming reader, packed stream (resume, replay, MeCo) and tokenizer extension of the lang app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from warmstart.errors import DataError
from warmstart_lang.data import (
    MeCoConfig,
    TextBlockStream,
    iter_documents,
    make_lexicon,
    read_texts,
    resolve_files,
    write_language_pair,
)
from warmstart_lang.tokenizer import extend_tokenizer, fertility, train_tokenizer


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> dict[str, Path]:
    return write_language_pair(tmp_path_factory.mktemp("pair"), n_source=300, n_target=200, n_valid=40)


@pytest.fixture(scope="module")
def tokenizers(pair):
    base = train_tokenizer(read_texts([pair["source_train"]]), "bpe", 300)
    extended, added = extend_tokenizer(base, read_texts([pair["target_train"]]), target_vocab_size=400)
    return base, extended, added


def test_lexicon_is_systematic():
    lex = make_lexicon(3)
    greek = set("αβγδεζικλμνοπρστυφ")
    for i, noun in enumerate(lex.nouns):
        target = lex.target[noun]
        assert target.endswith("α" if i % 2 == 0 else "a")
        assert (set(target) <= greek) == (i % 2 == 0)  # every second noun in Greek script
    for verb in lex.verbs:  # sound shifts: no p/t/k/s/o left, class suffix -en
        assert lex.target[verb].endswith("en") and not set(lex.target[verb][:-2]) & set("ptkso")
    assert make_lexicon(3) == lex and make_lexicon(4) != lex


def test_pair_files_are_real_text(pair):
    for path in pair.values():
        raw = path.read_bytes()
        raw.decode("utf-8")
        assert raw.count(b"\n") >= 40
    record = json.loads(pair["target_train"].read_text(encoding="utf-8").splitlines()[0])
    assert record["url"].endswith(".example.org") and len(record["text"].split()) > 10
    # target text is a word-by-word translation: same sentence lengths distribution, same '.' count per doc
    src, tgt = read_texts([pair["source_valid"]]), read_texts([pair["target_valid"]])
    assert len(src) == len(tgt) == 40


def test_reader_streams_with_exact_offsets(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("one two\n\nthree\nfour five six\n", encoding="utf-8")
    docs = list(iter_documents([f]))
    assert [d[0] for d in docs] == ["one two", "three", "four five six"]
    # continuing from a returned position gives exactly the rest
    rest = list(iter_documents([f], start=docs[0][2]))
    assert [d[0] for d in rest] == ["three", "four five six"]


@pytest.mark.parametrize(
    "content, message",
    [(b"", "empty"), (b"abc\x00\x01def", "binary"), (b"caf\xe9 au lait\n" * 3, "not UTF-8")],
)
def test_bad_files_are_refused_with_their_name(tmp_path, content, message):
    f = tmp_path / "bad.txt"
    f.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        resolve_files([f])
    assert str(f) in str(info.value) and "\n" not in str(info.value)


def test_extension_keeps_old_ids_and_cuts_fertility(pair, tokenizers):
    base, extended, added = tokenizers
    old = base.get_vocab()
    new = extended.get_vocab()
    assert all(new[t] == i for t, i in old.items())  # every old token keeps its id
    assert sorted(new[t] for t in added) == list(range(len(old), len(new)))
    assert len(added) > 0
    # old segmentations kept: the new merges rank after every old one, so on source text the extended
    # tokenizer first reaches the old segmentation and can only join whole old pieces on top of it (a
    # source word starting with the target word "ni" becomes 'Ġni' 'bi' instead of 'Ġn' 'i' 'bi'); a
    # word the base encodes as one token keeps that token and id.
    src = read_texts([pair["source_valid"]])
    joined = 0
    for text in src[:20]:
        old_enc = base(text, return_offsets_mapping=True)
        new_enc = extended(text, return_offsets_mapping=True)
        old_cuts = {start for start, _ in old_enc["offset_mapping"]}
        new_cuts = {start for start, _ in new_enc["offset_mapping"]}
        assert new_cuts <= old_cuts  # a coarsening: no new boundary inside an old piece
        joined += len(old_cuts - new_cuts)
        for word in text.split():
            if len(base.tokenize(" " + word)) == 1:
                assert extended(" " + word)["input_ids"] == base(" " + word)["input_ids"]
    assert joined < 0.5 * sum(len(base(t)["input_ids"]) for t in src[:20])
    held = read_texts([pair["target_valid"]])
    before, after = fertility(base, held), fertility(extended, held)
    assert after.fertility <= 0.7 * before.fertility  # the bar: >= 30 % fewer tokens per word
    assert after.coverage > before.coverage
    for text in held[:5]:  # lossless
        assert extended.decode(extended(text)["input_ids"]) == text


def test_stream_packs_resumes_and_replays(pair, tokenizers):
    _, tok, _ = tokenizers

    def make(replay: float = 0.0, meco: bool = False) -> TextBlockStream:
        return TextBlockStream(
            tok,
            [pair["target_train"]],
            block_size=32,
            batch_size=4,
            replay_files=[pair["source_train"]],
            replay_ratio=replay,
            meco=MeCoConfig(enabled=meco),
            total_tokens=10_000,
            seed=1,
        )

    stream = make(replay=0.25)
    it = iter(stream)
    for _ in range(3):
        batch = next(it)
    assert batch["input_ids"].shape == (4, 32)
    state = json.loads(json.dumps(stream.state_dict()))  # plain data, survives a checkpoint
    expected = [next(it) for _ in range(3)]
    again = make(replay=0.25)
    again.load_state_dict(state)
    it2 = iter(again)
    for want in expected:
        got = next(it2)
        assert torch.equal(got["input_ids"], want["input_ids"])
    share = stream.replayed / stream.docs
    assert 0.05 < share < 0.5  # ~ the replay ratio

    other_seed = TextBlockStream(
        tok, [pair["target_train"]], block_size=32, batch_size=4, shuffle_buffer=16, seed=2
    )
    assert not torch.equal(next(iter(other_seed))["input_ids"], next(iter(make()))["input_ids"])

    meco_stream = make(meco=True)
    first = next(iter(meco_stream))
    masked = (first["labels"] == -100).sum()
    assert masked > 0  # the URL prefix is not a target
    prefix = tok("URL: ", add_special_tokens=False)["input_ids"]
    row = first["input_ids"][0].tolist()
    assert row[: len(prefix)] == prefix


def _han_text(n_docs: int, seed: int) -> list[str]:
    """Han-script documents without spaces: 2-3 character words from a fixed lexicon, '，' and '。'."""
    import random

    rng = random.Random(seed)
    chars = [chr(0x4E00 + 37 * i) for i in range(60)]
    words = ["".join(random.Random(k).sample(chars, 2 + k % 2)) for k in range(40)]
    return [
        "。".join("".join(rng.choice(words) for _ in range(rng.randint(3, 6))) for _ in range(4)) + "。"
        for _ in range(n_docs)
    ]


@pytest.mark.slow
def test_cjk_under_bert_splitting_is_detected_and_can_be_turned_off(pair, tmp_path, capsys):
    from warmstart_lang.cli import app
    from warmstart_lang.tokenizer import atomic_save, load_tokenizer, splits_cjk

    base = train_tokenizer(read_texts([pair["source_train"]]), "bert", 300)
    assert splits_cjk(base)
    atomic_save(base, tmp_path / "base")
    (tmp_path / "han.txt").write_text("\n".join(_han_text(300, 0)) + "\n", encoding="utf-8")
    (tmp_path / "held.txt").write_text("\n".join(_han_text(40, 1)) + "\n", encoding="utf-8")
    common = ["tokenizer-extend", "--base", str(tmp_path / "base"), "--data", str(tmp_path / "han.txt")]
    common += ["--heldout", str(tmp_path / "held.txt"), "--target_vocab_size", "500"]
    assert app.main([*common, "--out", str(tmp_path / "split")]) == 0
    warning = capsys.readouterr().out
    assert "CJK" in warning and "--split_cjk false" in warning
    split = json.loads((tmp_path / "split" / "fertility.json").read_text())
    assert split["cjk"]["share"] > 0.8
    assert split["fertility_reduction"] < 0.1  # per-character words: fertility cannot drop
    assert split["cjk"]["fertility_reduction_without_split"] > 0.4  # the measured effect of the option
    assert app.main([*common, "--out", str(tmp_path / "merged"), "--split_cjk", "false"]) == 0
    merged = json.loads((tmp_path / "merged" / "fertility.json").read_text())
    assert merged["fertility_reduction"] > 0.4
    ext = load_tokenizer(tmp_path / "merged")
    assert not splits_cjk(ext)
    assert all(ext.get_vocab()[t] == i for t, i in base.get_vocab().items())  # old ids kept
    latin = read_texts([pair["source_valid"]])[:5]
    assert [ext.decode(ext(t)["input_ids"], skip_special_tokens=True) for t in latin] == [
        base.decode(base(t)["input_ids"], skip_special_tokens=True) for t in latin
    ]
