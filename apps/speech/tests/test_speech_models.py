"""Models: the padded-batch subsampler workaround is padding-invariant; OT behaves as a divergence."""

from __future__ import annotations

import torch

from warmstart_speech.ctc_ot import OTConfig, ot_distance
from warmstart_speech.models import ModelConfig, SpeechEncoder, subsampled_lengths


def test_speech_encoder_masks_padding() -> None:
    """Real frames do not depend on how much padding follows (fairseq2's layout masks attention keys)."""
    torch.manual_seed(0)
    cfg = ModelConfig(model_dim=32, ffn_dim=64, subsampler_dim=32, dropout=0.0)
    enc = SpeechEncoder(cfg, n_phonemes=10).eval()
    short = torch.randn(1, 37, 80)  # (1, T, C)
    other = torch.randn(1, 77, 80)
    pad_a = torch.cat([torch.cat([short, torch.zeros(1, 20, 80)], 1), other[:, :57]])  # (2, 57, C)
    pad_b = torch.cat([torch.cat([short, torch.zeros(1, 40, 80)], 1), other])  # (2, 77, C)
    with torch.no_grad():
        out_a, n_a = enc(pad_a, torch.tensor([37, 57]))
        out_b, n_b = enc(pad_b, torch.tensor([37, 77]))
    n = int(subsampled_lengths(torch.tensor([37]))[0])
    assert n == int(n_a[0]) == int(n_b[0]) == 10
    assert torch.allclose(out_a[0, :n], out_b[0, :n], atol=1e-5)
    assert not torch.allclose(out_a[1, :n], out_b[1, :n], atol=1e-3)  # the longer row really changed


def test_ot_distance_is_a_divergence_and_positions_favour_order() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 12, 8, generator=g)
    lens = torch.tensor([12, 9])
    cfg = OTConfig()
    same = ot_distance(x, lens, x, lens, cfg)
    other = ot_distance(x, lens, torch.randn(2, 12, 8, generator=g) + 2, lens, cfg)
    assert same.abs().max() < 1e-2 and (other > 1).all()
    reversed_x = x.flip(1)  # same set of points, opposite order
    assert ot_distance(x[:1], lens[:1], reversed_x[:1], lens[:1], cfg, positions=False).abs() < 1e-2
    assert ot_distance(x[:1], lens[:1], reversed_x[:1], lens[:1], cfg, positions=True) > 1.0
