"""Tiny tokenizers and language models for the `warmstart.init` tests (built locally, nothing downloaded)."""

from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SYLLABLES = ["ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "ve", "da", "zu", "he"]


def sentences(seed: int, n: int = 200, syllables: list[str] | None = None) -> list[str]:
    """Random sentences of made-up words (deterministic given the seed)."""
    rng = random.Random(seed)
    syl = syllables or SYLLABLES
    words = ["".join(rng.choice(syl) for _ in range(rng.randint(1, 3))) for _ in range(60)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) for _ in range(n)]


def bpe_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on ``texts`` (256 byte symbols + merges + <pad>, <eos>)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


@pytest.fixture(scope="session")
def old_tokenizer() -> PreTrainedTokenizerFast:
    return bpe_tokenizer(sentences(0), 300)


@pytest.fixture(scope="session")
def target_texts() -> list[str]:
    """'Target-language' text: other syllables, so the new tokenizer learns merges the old one lacks."""
    return sentences(1, 300, ["qa", "xo", "wi", "ka", "lo", "yy", "jo", "fe"])


@pytest.fixture(scope="session")
def new_tokenizer(target_texts: list[str]) -> PreTrainedTokenizerFast:
    """Trained from scratch on the target text: different ids for shared tokens (an FVT setting)."""
    return bpe_tokenizer(target_texts, 330)


@pytest.fixture()
def extended_tokenizer(old_tokenizer, target_texts):
    """The old tokenizer plus added tokens: old ids unchanged, new ids appended."""
    from copy import deepcopy

    tok = deepcopy(old_tokenizer)
    words = sorted({w for t in target_texts for w in t.split()})[:40]
    tok.add_tokens(words)
    return tok


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread avoids oversubscription on the shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
