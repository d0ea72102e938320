"""eo on CUDA: SatMAE++ and Prithvi MAE steps through the engine in bf16-mixed. Skipped without CUDA."""

from __future__ import annotations

import math

import pytest
import torch

from warmstart.engine import Engine, quick_config
from warmstart_eo.models import ModelConfig, build_mae
from warmstart_eo.train import PretrainTask

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]


class Stream:
    def __init__(self, items: list) -> None:
        self.items = items

    def __iter__(self):
        return iter(self.items)


@pytest.mark.parametrize("family", ["satmaepp", "prithvi"])
def test_mae_steps_in_bf16_on_cuda(family: str) -> None:
    frames = 3 if family == "prithvi" else 1
    config = ModelConfig(
        family=family,
        size="tiny",
        img_size=32,
        patch_size=8,
        bands=BANDS,
        frames=frames,
        scales=1 if family == "satmaepp" else 0,
    )
    model = build_mae(config)
    seen: list[torch.dtype] = []
    model.register_forward_hook(lambda m, i, out: seen.append(out["loss"].dtype))
    g = torch.Generator().manual_seed(0)
    x = [{"image": torch.randn(4, config.channels, config.input_size, config.input_size, generator=g)}]
    summary = Engine(quick_config(4, 4, 1e-3), None).fit(PretrainTask(model, "mae"), Stream(x * 4))
    assert summary.steps == 4 and math.isfinite(summary.final_metrics["loss"])
    assert next(model.parameters()).dtype == torch.float32 and seen
