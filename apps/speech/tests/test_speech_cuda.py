"""speech on CUDA: a conformer encoder's CTC + OT pretraining steps in bf16-mixed. Skipped without CUDA."""

from __future__ import annotations

import math

import pytest
import torch

from warmstart.engine import Engine, quick_config
from warmstart_speech.ctc_ot import OTConfig, PretrainModel, PretrainTask
from warmstart_speech.models import ModelConfig, SpeechEncoder, build_mt

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
PHONEMES, WORDS = 30, 50


class Stream:
    def __init__(self, items: list) -> None:
        self.items = items

    def __iter__(self):
        return iter(self.items)


def batch(g: torch.Generator) -> dict[str, torch.Tensor]:
    lens = torch.tensor([120, 96, 80, 64])
    src_lens = torch.tensor([12, 10, 8, 6])
    src = torch.randint(4, PHONEMES, (4, 12), generator=g) * (torch.arange(12) < src_lens[:, None])
    return {
        "fbank": torch.randn(4, 120, 80, generator=g),
        "fbank_lens": lens,
        "src": src,
        "src_lens": src_lens,
    }


def test_conformer_ctc_ot_steps_in_bf16_on_cuda() -> None:
    cfg = ModelConfig(
        model_dim=64,
        speech_layers=2,
        text_layers=1,
        decoder_layers=1,
        heads=4,
        ffn_dim=128,
        subsampler_dim=64,
        encoder="conformer",
    )
    torch.manual_seed(0)
    encoder = SpeechEncoder(cfg, PHONEMES)
    model = PretrainModel(cfg, encoder, "ctc+ot", PHONEMES, OTConfig())
    teacher = build_mt(cfg, PHONEMES, WORDS)
    g = torch.Generator().manual_seed(0)
    data = Stream([batch(g) for _ in range(3)])
    summary = Engine(quick_config(6, 4, 1e-3), None).fit(PretrainTask(model, teacher), data)
    assert summary.steps == 6 and math.isfinite(summary.final_metrics["loss"])
    assert "ot" in summary.final_metrics and math.isfinite(summary.final_metrics["ot"])
