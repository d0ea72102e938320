"""The one model format: round trip, tied weights, kind checks, truncated/altered weights, the mixin."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import pytest
import torch
from torch import nn

from warmstart.errors import CheckpointError
from warmstart.hub import HubMixin, ModelCard, load_model, read_config, save_model


@dataclass
class TinyConfig:
    width: int = 8
    tie: bool = True


class Tiny(nn.Module, HubMixin):
    warmstart_kind = "test.tiny"

    def __init__(self, cfg: TinyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.inp = nn.Linear(cfg.width, cfg.width)
        self.out = nn.Linear(cfg.width, cfg.width, bias=False)
        if cfg.tie:
            self.out.weight = self.inp.weight

    def hub_config(self) -> dict:
        return asdict(self.cfg)

    @classmethod
    def from_hub_config(cls, config: dict) -> Tiny:
        return cls(TinyConfig(**config))


def _build(config: dict) -> Tiny:
    return Tiny(TinyConfig(**config))


def test_round_trip_keeps_weights_and_ties(tmp_path):
    torch.manual_seed(0)
    model = Tiny(TinyConfig(width=6))
    card = ModelCard(title="a tiny test model", paper="none", command="pytest", metrics={"loss": 0.5})
    save_model(
        model, tmp_path / "m", kind="test.tiny", config=model.hub_config(), card=card, extra={"env": "x"}
    )
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    loaded, meta = load_model(tmp_path / "m", _build, kind="test.tiny")
    assert meta["env"] == "x" and meta["config"] == {"width": 6, "tie": True}
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert loaded.out.weight.data_ptr() == loaded.inp.weight.data_ptr()
    text = (tmp_path / "m" / "README.md").read_text()
    assert "library_name: warmstart" in text and "pytest" in text and "| loss | 0.5 |" in text


def test_mixin_from_pretrained_and_save_pretrained(tmp_path):
    model = Tiny(TinyConfig(width=4, tie=False))
    model.save_pretrained(tmp_path / "m")
    again = Tiny.from_pretrained(tmp_path / "m")
    assert isinstance(again, Tiny) and again.cfg == TinyConfig(width=4, tie=False)
    assert torch.equal(again.out.weight, model.out.weight)
    assert read_config(tmp_path / "m")["warmstart_kind"] == "test.tiny"


def test_wrong_kind_is_refused(tmp_path):
    save_model(Tiny(TinyConfig()), tmp_path / "m", kind="test.other", config=asdict(TinyConfig()))
    with pytest.raises(CheckpointError, match="holds a test.other model where a test.tiny"):
        Tiny.from_pretrained(tmp_path / "m")


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_weights_are_one_line(tmp_path, damage):
    save_model(Tiny(TinyConfig()), tmp_path / "m", kind="test.tiny", config=asdict(TinyConfig()))
    weights = tmp_path / "m" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "truncate":
        weights.write_bytes(bytes(data[: len(data) // 2]))
    else:
        data[-5] ^= 0xFF
        weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors") as err:
        load_model(tmp_path / "m", _build, kind="test.tiny")
    assert "\n" not in str(err.value)


def test_missing_folder_and_config(tmp_path):
    with pytest.raises(CheckpointError, match="no such folder"):
        load_model(tmp_path / "nope", _build)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="has no config.json"):
        load_model(tmp_path / "empty", _build)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(CheckpointError, match="no warmstart_kind"):
        load_model(tmp_path / "bad", _build)
