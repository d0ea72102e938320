"""Benchmark: expand a 32,000 x 768 vocabulary by 10,000 tokens with each warmstart.init method.

What is timed (wall-clock seconds, median of ``--repeats`` runs, fresh model copy each run):
- ``model``: ``warmstart.init.expand_vocabulary(model, old_tok, new_tok, method)`` on a 1-layer Llama
  (vocab 32,000, hidden 768, **untied** head, so the input embeddings and the head are both expanded, as
  the peer does). Includes the vocabulary matching, the row inits for both matrices and the in-place resize.
- ``matrix``: ``warmstart.init.init_new_rows(W, 10_000, method)`` on the 32,000 x 768 embedding alone.
- ``peer``: transformers' ``model.resize_token_embeddings(42_000, mean_resizing=True)`` on the same model
  (full covariance + ``MultivariateNormal`` with 1e-9 * Sigma for the embeddings and again for the head).

Tokenizers are synthetic (no downloads): a WordPiece vocabulary of 32,000 random strings (letters, their
``##`` continuations, random words and pieces) and the same vocabulary plus 10,000 new random words, so
``fvt`` really re-tokenises every new word with the old tokenizer. ``cw2v`` trains on a synthetic corpus of
random words from the new vocabulary for ``--cw2v-steps`` steps only (batch ``--cw2v-batch``, rank
``--cw2v-rank``), then materialises all 10,000 rows for both matrices; its time grows linearly with steps.

Run: ``.venv/bin/python shared/bench/expand_vocabulary.py --out bench-out/expand_vocabulary.json``
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import random
import statistics
import string
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from warmstart.init import METHODS, CW2VConfig, expand_vocabulary, init_new_rows


def synthetic_vocabs(n_old: int, n_new: int, seed: int) -> tuple[dict[str, int], dict[str, int], list[str]]:
    rng = random.Random(seed)
    letters = string.ascii_lowercase
    vocab: dict[str, int] = {}
    for tok in ["[PAD]", "[UNK]", *letters, *("##" + c for c in letters)]:
        vocab[tok] = len(vocab)
    while len(vocab) < n_old:
        word = "".join(rng.choice(letters) for _ in range(rng.randint(2, 6)))
        vocab.setdefault(word if rng.random() < 0.5 else "##" + word, len(vocab))
    new_vocab = dict(vocab)
    new_words: list[str] = []
    while len(new_vocab) < n_old + n_new:
        word = "".join(rng.choice(letters) for _ in range(rng.randint(7, 11)))
        if word not in new_vocab:
            new_vocab[word] = len(new_vocab)
            new_words.append(word)
    return vocab, new_vocab, new_words


def wordpiece(vocab: dict[str, int]) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=64))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")


def build_model(vocab: int, hidden: int) -> LlamaForCausalLM:
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=256,
        num_hidden_layers=1,
        num_attention_heads=12,
        num_key_value_heads=12,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def timed(fn, repeats: int, setup=None) -> list[float]:
    out = []
    for _ in range(repeats):
        arg = setup() if setup is not None else None
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(arg)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--old-vocab", type=int, default=32_000)
    p.add_argument("--new-tokens", type=int, default=10_000)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cw2v-steps", type=int, default=20)
    p.add_argument("--cw2v-batch", type=int, default=64)
    p.add_argument("--cw2v-rank", type=int, default=256)
    p.add_argument("--methods", nargs="*", default=list(METHODS))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=Path("bench-out/expand_vocabulary.json"))
    args = p.parse_args(argv)
    hf_logging.set_verbosity_error()
    logging.basicConfig(level=logging.WARNING)

    old_vocab, new_vocab, new_words = synthetic_vocabs(args.old_vocab, args.new_tokens, 0)
    old_tok, new_tok = wordpiece(old_vocab), wordpiece(new_vocab)
    rng = random.Random(1)
    old_words = [w for w in old_vocab if w.isalpha()]
    texts = [
        " ".join(rng.choice(new_words if rng.random() < 0.5 else old_words) for _ in range(24))
        for _ in range(2000)
    ]
    base = build_model(args.old_vocab, args.hidden).to(args.device)
    new_size = len(new_vocab)
    weight = base.get_input_embeddings().weight.detach()
    cw2v_cfg = CW2VConfig(
        rank=args.cw2v_rank, batch_size=args.cw2v_batch, max_steps=args.cw2v_steps, epochs=1
    )

    rows: list[dict] = []

    def record(name: str, level: str, times: list[float], note: str = "") -> None:
        rows.append(
            {"method": name, "level": level, "seconds": statistics.median(times), "runs": times, "note": note}
        )

    fresh = lambda: copy.deepcopy(base)  # noqa: E731

    # the peer: transformers' own resize with mean_resizing=True (embeddings and untied head)
    record(
        "transformers resize_token_embeddings(mean_resizing=True)",
        "peer",
        timed(lambda m: m.resize_token_embeddings(new_size, mean_resizing=True), args.repeats, fresh),
    )
    for method in args.methods:
        reps = 1 if method == "cw2v" else args.repeats
        kw = {"texts": texts, "cw2v": cw2v_cfg} if method == "cw2v" else {}
        note = (
            f"{args.cw2v_steps} steps x batch {args.cw2v_batch}, rank {args.cw2v_rank}"
            if method == "cw2v"
            else ""
        )
        record(
            method,
            "model",
            timed(
                lambda m, method=method, kw=kw: expand_vocabulary(m, old_tok, new_tok, method, seed=0, **kw),
                reps,
                fresh,
            ),
            note,
        )
        if method in ("random", "mean", "multivariate", "convex"):
            g = torch.Generator(device=args.device).manual_seed(0)
            record(
                method,
                "matrix",
                timed(
                    lambda _, method=method, g=g: init_new_rows(weight, args.new_tokens, method, generator=g),
                    args.repeats,
                ),
            )

    peer = rows[0]["seconds"]
    print(
        f"expand {args.old_vocab} x {args.hidden} by {args.new_tokens} tokens on {args.device} "
        f"({torch.get_num_threads()} threads), median of {args.repeats}"
    )
    print(f"{'method':58s} {'level':7s} {'seconds':>9s} {'vs peer':>8s}")
    for r in rows:
        print(
            f"{r['method']:58s} {r['level']:7s} {r['seconds']:9.3f} {r['seconds'] / peer:7.2f}x  {r['note']}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "old_vocab": args.old_vocab,
        "new_tokens": args.new_tokens,
        "hidden": args.hidden,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "results": rows,
    }
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
