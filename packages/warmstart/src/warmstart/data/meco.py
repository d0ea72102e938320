"""MeCo metadata conditioning: ``URL: <domain>\\n\\n`` before each document early in training, then plain text.

Seed paper: "Metadata Conditioning Accelerates Language Model Pre-training" (Gao et al., arXiv 2501.01956).
For the first ``metadata_fraction`` (default 0.9) of the training tokens each document is prefixed with its
source URL's domain and the loss is masked on the prefix; the rest of training (the "cooldown") sees plain
text, so the model works without metadata yet can be steered by a URL prompt. Implemented as a document
transform for :class:`~warmstart.data.PackedStream` (which counts the tokens seen); the prefix and the text
are tokenised separately so the mask covers exactly the prefix tokens. Our choices (*unverified* details):
the domain is the URL's lower-cased host with a leading ``www.`` removed; progress is counted in tokens
packed by this stream (per rank), EOS included.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlparse

DEFAULT_TEMPLATE = "URL: {domain}\n\n"


def url_domain(url: str) -> str:
    """``https://www.Example.com/a?b`` → ``example.com``; a bare domain is returned as is (lower-cased)."""
    host = urlparse(url if "//" in url else f"//{url}").hostname or url
    host = host.lower()
    return host[4:] if host.startswith("www.") else host


def meco_prefix(url: str, template: str = DEFAULT_TEMPLATE) -> str:
    """The metadata prefix for a document (also the prompt that conditions generation at inference)."""
    return template.format(domain=url_domain(url))


class MeCo:
    """Document transform: (text, url) → (ids, loss_mask) with or without the URL prefix by progress.

    ``encode`` turns a string into token ids without special tokens (e.g.
    ``lambda s: tok(s, add_special_tokens=False)["input_ids"]``). A document is a ``(text, url)`` pair or a
    mapping with ``text`` and ``url`` keys; a missing/empty URL gets no prefix.

    >>> meco = MeCo(encode, total_tokens=steps * batch * block)
    >>> stream = PackedStream(docs, block_size=block, batch_size=batch, eos_id=eos, transform=meco)
    """

    def __init__(
        self,
        encode: Callable[[str], Sequence[int]],
        *,
        total_tokens: int,
        metadata_fraction: float = 0.9,
        template: str = DEFAULT_TEMPLATE,
    ) -> None:
        if not 0 <= metadata_fraction <= 1:
            raise ValueError("metadata_fraction must be in [0, 1]")
        self.encode = encode
        self.total_tokens = total_tokens
        self.metadata_fraction = metadata_fraction
        self.template = template

    def use_metadata(self, tokens_seen: int) -> bool:
        """True while fewer than ``metadata_fraction · total_tokens`` tokens have been seen."""
        return tokens_seen < self.metadata_fraction * self.total_tokens

    def encode_document(
        self, text: str, url: str | None, *, with_metadata: bool
    ) -> tuple[list[int], list[int]]:
        """Token ids and loss mask (0 on every prefix token, 1 on the text)."""
        body = list(self.encode(text))
        if not with_metadata or not url:
            return body, [1] * len(body)
        prefix = list(self.encode(meco_prefix(url, self.template)))
        return prefix + body, [0] * len(prefix) + [1] * len(body)

    def __call__(self, doc: Any, tokens_seen: int) -> tuple[list[int], list[int]]:
        if isinstance(doc, Mapping):
            text, url = doc["text"], doc.get("url")
        else:
            text, url = doc
        return self.encode_document(text, url, with_metadata=self.use_metadata(tokens_seen))
