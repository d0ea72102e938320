"""Connectionist temporal classification through ``torch.nn.functional.ctc_loss``, with length helpers.

Seed papers: "Connectionist Temporal Classification: Labelling Unsegmented Sequence Data with Recurrent
Neural Networks" (Graves et al., ICML 2006) and "Pre-training for Speech Translation: CTC Meets Optimal
Transport" (Le et al., arXiv 2301.11716), which pretrains the speech encoder with CTC on phonemes. The loss itself is torch's; this
module only adapts batch-first padded tensors and derives lengths from padding masks and from a
convolutional subsampler. Left out: decoding (greedy/beam) beyond a greedy collapse helper.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F


def lengths_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Lengths (B,) from a (B, T) mask with 1/True on real positions."""
    return mask.long().sum(dim=1)


def lengths_from_padding(targets: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Lengths (B,) of right-padded (B, S) targets: the count of non-``pad_id`` entries per row."""
    return (targets != pad_id).long().sum(dim=1)


def conv_output_lengths(
    lengths: torch.Tensor, *, kernel_size: int | Sequence[int], stride: int | Sequence[int], padding: int = 0
) -> torch.Tensor:
    """Frame counts after a stack of 1-D convolutions (one per entry of ``kernel_size``/``stride``).

    ``L_out = floor((L + 2·padding − kernel) / stride) + 1`` per layer, as in ``nn.Conv1d`` (dilation 1).
    """
    kernels = [kernel_size] if isinstance(kernel_size, int) else list(kernel_size)
    strides = [stride] * len(kernels) if isinstance(stride, int) else list(stride)
    out = lengths.clone()
    for k, s in zip(kernels, strides, strict=True):
        out = torch.div(out + 2 * padding - k, s, rounding_mode="floor") + 1
    return out


def ctc_loss(
    log_probs: torch.Tensor,
    targets: torch.Tensor,
    input_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    *,
    blank: int = 0,
    reduction: Literal["mean", "sum", "none"] = "mean",
    zero_infinity: bool = True,
) -> torch.Tensor:
    """CTC on batch-first log-probabilities (B, T, C) and right-padded targets (B, S).

    Same reductions as torch (``"mean"`` divides each sample's loss by its target length, then averages).
    ``zero_infinity`` defaults to True here: an input too short for its target gives 0, not inf.
    """
    return F.ctc_loss(
        log_probs.float().transpose(0, 1),  # (T, B, C)
        targets,
        input_lengths,
        target_lengths,
        blank=blank,
        reduction=reduction,
        zero_infinity=zero_infinity,
    )


def ctc_greedy_decode(
    log_probs: torch.Tensor, input_lengths: torch.Tensor, *, blank: int = 0
) -> list[list[int]]:
    """Best path: argmax per frame, collapse repeats, drop blanks. ``log_probs`` (B, T, C)."""
    best = log_probs.argmax(dim=-1)  # (B, T)
    out: list[list[int]] = []
    for row, n in zip(best.tolist(), input_lengths.tolist(), strict=True):
        seq: list[int] = []
        prev = None
        for tok in row[:n]:
            if tok != prev and tok != blank:
                seq.append(tok)
            prev = tok
        out.append(seq)
    return out
