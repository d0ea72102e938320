"""MeCo: the loss mask covers exactly the URL prefix tokens, and the prefix stops after the metadata fraction."""

from __future__ import annotations

import re

from warmstart.data import MeCo, PackedStream, meco_prefix, url_domain


def encode(s: str) -> list[int]:
    return [ord(c) for c in s]  # char-level: decode is exact


def test_url_domain() -> None:
    assert url_domain("https://www.Example.com/path?q=1") == "example.com"
    assert url_domain("en.wikipedia.org") == "en.wikipedia.org"
    assert meco_prefix("http://news.bbc.co.uk/x") == "URL: news.bbc.co.uk\n\n"


def test_mask_covers_exactly_prefix_tokens() -> None:
    meco = MeCo(encode, total_tokens=1000)
    ids, mask = meco(("hello world", "https://www.site.org/a"), tokens_seen=0)
    prefix = encode("URL: site.org\n\n")
    assert ids == prefix + encode("hello world")
    assert mask == [0] * len(prefix) + [1] * len("hello world")
    ids, mask = meco({"text": "plain", "url": "https://site.org"}, tokens_seen=900)  # cooldown
    assert ids == encode("plain") and all(mask)


def test_stream_masks_prefixes_then_cools_down() -> None:
    docs = [(f"document number {i} says hi.", f"https://www.host{i % 3}.com/p{i}") for i in range(12)]
    total = 2000
    meco = MeCo(encode, total_tokens=total, metadata_fraction=0.9)
    stream = PackedStream(docs, block_size=32, batch_size=4, eos_id=0, seed=0, shuffle=False, transform=meco)
    ids, labels = [], []
    for batch, _ in zip(stream, range(total // (32 * 4) + 2), strict=False):
        ids += batch["input_ids"].flatten().tolist()
        labels += batch["labels"].flatten().tolist()
    text = "".join(chr(t) if t else "\x00" for t in ids)
    masked = [i for i, lab in enumerate(labels) if lab == -100]
    prefix_positions = [
        i for m in re.finditer(r"URL: host\d\.com\n\n", text) for i in range(m.start(), m.end())
    ]
    assert masked == prefix_positions  # exactly the prefix tokens, nothing else
    # every document that starts before 90 % of the tokens has the prefix; none after
    starts = [0] + [i + 1 for i, t in enumerate(ids[:-1]) if t == 0]
    for s in starts:
        has_prefix = text.startswith("URL: ", s)
        assert has_prefix == (s < 0.9 * total), s
