"""CTC: our wrapper equals the sum over all alignments (brute force) and torch's time-major call."""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

from warmstart.objectives import (
    conv_output_lengths,
    ctc_greedy_decode,
    ctc_loss,
    lengths_from_mask,
    lengths_from_padding,
)


def _collapse(path: tuple[int, ...], blank: int = 0) -> list[int]:
    out, prev = [], None
    for t in path:
        if t != prev and t != blank:
            out.append(t)
        prev = t
    return out


def test_ctc_equals_brute_force_alignment_sum() -> None:
    g = torch.Generator().manual_seed(0)
    log_probs = F.log_softmax(torch.randn(2, 5, 3, generator=g), -1)  # (B, T, C), blank 0
    targets = torch.tensor([[1, 2], [2, 0]])  # second sample has target [2], padded with 0
    target_lengths = lengths_from_padding(targets, pad_id=0)
    input_lengths = lengths_from_mask(torch.tensor([[1] * 5, [1] * 4 + [0]]))
    losses = ctc_loss(log_probs, targets, input_lengths, target_lengths, reduction="none")
    for b in range(2):
        t_len, tgt = int(input_lengths[b]), targets[b, : target_lengths[b]].tolist()
        total = 0.0
        for path in itertools.product(range(3), repeat=t_len):
            if _collapse(path) == tgt:
                total += math.exp(sum(float(log_probs[b, t, c]) for t, c in enumerate(path)))
        assert math.isclose(float(losses[b]), -math.log(total), rel_tol=1e-5)


def test_conv_output_lengths_match_conv1d() -> None:
    convs = torch.nn.Sequential(torch.nn.Conv1d(1, 1, 5, stride=2, padding=2), torch.nn.Conv1d(1, 1, 5, 2, 2))
    for n in (7, 16, 33):
        out = convs(torch.zeros(1, 1, n)).shape[-1]
        assert int(conv_output_lengths(torch.tensor([n]), kernel_size=[5, 5], stride=2, padding=2)) == out


def test_greedy_decode_collapses() -> None:
    lp = torch.full((1, 6, 3), -10.0)
    for t, c in enumerate([1, 1, 0, 1, 2, 2]):
        lp[0, t, c] = 0.0
    assert ctc_greedy_decode(lp, torch.tensor([6])) == [[1, 1, 2]]
