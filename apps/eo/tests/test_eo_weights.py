"""Weight conversion: tiny checkpoints written in the reference key layouts (timm / torchgeo ViT, Prithvi
v1 and v2, SatMAE++) must give *the same function* once converted — encoder features, and decoder
predictions in our patch order — not merely load without errors.

The reference forwards below are written from the reference code (MAE's ``get_2d_sincos_pos_embed``
with its [x | y] halves, Prithvi's [x, y, t] 3D positions, SatMAE++'s group-major tokens with
[position | group] encodings and (c, p, q) prediction rows), independently of our implementation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from warmstart.errors import CheckpointError
from warmstart_eo.cli import app
from warmstart_eo.data import BANDS, BandStats
from warmstart_eo.models import load_model
from warmstart_eo.weights import SATMAE_BANDS, convert, convert_state_dict

D, DEPTH, HEADS, DD, P = 64, 2, 4, 32, 8


# --- reference positions (the MAE / Prithvi reference formulas, numpy) ------------------------------
def _sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def _mae_2d(dim: int, side: int, cls: bool = True) -> torch.Tensor:
    """MAE's get_2d_sincos_pos_embed: meshgrid(w, h) → emb_h from grid[0] (= column), emb_w from grid[1]."""
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side)), axis=0).reshape(2, -1)
    emb = np.concatenate([_sincos_1d(dim // 2, grid[0]), _sincos_1d(dim // 2, grid[1])], axis=1)
    if cls:
        emb = np.concatenate([np.zeros((1, dim)), emb], axis=0)
    return torch.from_numpy(emb).float()[None]


def _prithvi_3d(dim: int, t: int, h: int, w: int) -> torch.Tensor:
    wd, td = dim // 16 * 6, dim // 16 * 4
    w_emb = np.tile(_sincos_1d(wd, np.arange(w)), (t * h, 1))
    h_emb = np.tile(np.repeat(_sincos_1d(wd, np.arange(h)), w, axis=0), (t, 1))
    t_emb = np.repeat(_sincos_1d(td, np.arange(t)), h * w, axis=0)
    emb = np.concatenate([np.zeros((1, dim)), np.concatenate([w_emb, h_emb, t_emb], axis=1)], axis=0)
    return torch.from_numpy(emb).float()[None]


def _randomize(module: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (1.0 if p.dim() == 1 else 0.0))


def _run(blocks: nn.ModuleList, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    for b in blocks:
        x = b(x)
    return norm(x)


# --- reference models in the checkpoint key layouts -------------------------------------------------
class PrithviRef(nn.Module):
    """Prithvi-EO-1.0's MaskedAutoencoderViT names (cls token, fixed 3D positions, Conv3d tubelets)."""

    def __init__(self, c: int = 6, t: int = 2, side: int = 2) -> None:
        super().__init__()
        self.c, self.t, self.side = c, t, side
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv3d(c, D, (1, P, P), (1, P, P))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.blocks = nn.ModuleList(Block(D, HEADS, qkv_bias=True) for _ in range(DEPTH))
        self.norm = nn.LayerNorm(D)
        self.decoder_embed = nn.Linear(D, DD)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, DD))
        self.decoder_blocks = nn.ModuleList(Block(DD, 4, qkv_bias=True) for _ in range(1))
        self.decoder_norm = nn.LayerNorm(DD)
        self.decoder_pred = nn.Linear(DD, P * P * c)
        _randomize(self, 1)
        self.register_buffer("pos_embed", _prithvi_3d(D, t, side, side))
        self.register_buffer("decoder_pos_embed", _prithvi_3d(DD, t, side, side))

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # x (B, C, T, H, W)
        tokens = self.patch_embed.proj(x).flatten(2).transpose(1, 2) + self.pos_embed[:, 1:]
        return _run(self.blocks, self.norm, tokens)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:  # all tokens, no masking
        x = self.decoder_embed(latent) + self.decoder_pos_embed[:, 1:]
        return self.decoder_pred(_run(self.decoder_blocks, self.decoder_norm, x))


GROUPS = ((0, 1, 2, 6), (3, 4, 5, 7), (8, 9))


class SatMAERef(nn.Module):
    """SatMAE++'s MaskedAutoencoderGroupChannelViT names (10 bands, 3 groups, [pos | channel] embed)."""

    def __init__(self, side: int = 2) -> None:
        super().__init__()
        self.side = side
        self.patch_embed = nn.ModuleList(nn.Module() for _ in GROUPS)
        for pe, g in zip(self.patch_embed, GROUPS, strict=True):
            pe.proj = nn.Conv2d(len(g), D, P, P)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.blocks = nn.ModuleList(Block(D, HEADS, qkv_bias=True) for _ in range(DEPTH))
        self.norm = nn.LayerNorm(D)
        self.decoder_embed = nn.Linear(D, DD)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, DD))
        self.decoder_blocks = nn.ModuleList(Block(DD, 4, qkv_bias=True) for _ in range(1))
        self.decoder_norm = nn.LayerNorm(DD)
        self.decoder_pred = nn.ModuleList(nn.Linear(DD, len(g) * P * P) for g in GROUPS)
        self.proj_up_conv = nn.Conv2d(10, 40, 1)  # the upsampling branch (not converted)
        _randomize(self, 2)
        self.register_buffer("pos_embed", _mae_2d(D - D // 4, side))
        self.register_buffer(
            "channel_embed", torch.from_numpy(_sincos_1d(D // 4, np.arange(3))).float()[None]
        )
        self.register_buffer("decoder_pos_embed", _mae_2d(DD - DD // 4, side))
        dch = _sincos_1d(DD // 4, np.arange(4))
        self.register_buffer("decoder_channel_embed", torch.from_numpy(dch).float()[None])

    def _pos(self, pos: torch.Tensor, ch: torch.Tensor) -> torch.Tensor:
        g, n = len(GROUPS), pos.shape[1] - 1
        pos = pos[:, 1:].unsqueeze(1).expand(-1, g, -1, -1)  # (1, G, L, pD)
        ch = ch[:, :g].unsqueeze(2).expand(-1, -1, n, -1)  # (1, G, L, cD)
        return torch.cat([pos, ch], dim=-1).reshape(1, g * n, -1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # x (B, 10, H, W)
        tokens = [
            pe.proj(x[:, list(g)]).flatten(2).transpose(1, 2)
            for pe, g in zip(self.patch_embed, GROUPS, strict=True)
        ]
        tokens = torch.stack(tokens, 1).flatten(1, 2) + self._pos(self.pos_embed, self.channel_embed)
        return _run(self.blocks, self.norm, tokens)

    def decode_image(self, latent: torch.Tensor) -> torch.Tensor:
        x = self.decoder_embed(latent) + self._pos(self.decoder_pos_embed, self.decoder_channel_embed)
        x = _run(self.decoder_blocks, self.decoder_norm, x)
        b, s = x.shape[0], self.side
        x = x.view(b, len(GROUPS), s * s, DD)
        image = torch.zeros(b, 10, s * P, s * P)
        for i, g in enumerate(GROUPS):  # unpatchify: 'nhwcpq->nchpwq'
            pred = self.decoder_pred[i](x[:, i]).reshape(b, s, s, len(g), P, P)
            image[:, list(g)] = torch.einsum("nhwcpq->nchpwq", pred).reshape(b, len(g), s * P, s * P)
        return image


def _tiny_vit(in_chans: int = 13, side: int = 4) -> VisionTransformer:
    vit = VisionTransformer(
        img_size=side * P,
        patch_size=P,
        in_chans=in_chans,
        embed_dim=D,
        depth=DEPTH,
        num_heads=HEADS,
        num_classes=0,
    )
    _randomize(vit, 3)
    with torch.no_grad():
        vit.pos_embed.copy_(_mae_2d(D, side))  # an MAE-pretrained ViT: fixed [x | y] sin-cos, cls row 0
    return vit


# --- tests ---------------------------------------------------------------------------------------
@torch.no_grad()
def test_timm_vit_converts_to_the_same_function() -> None:
    vit = _tiny_vit()
    conv = convert_state_dict(vit.state_dict(), heads=HEADS)  # heads: not in a state dict
    cfg = conv.model.config
    assert (conv.layout, cfg.family, cfg.img_size, cfg.dims[:3], cfg.pos_order) == (
        "timm",
        "mae",
        32,
        (D, 2, 4),
        "xy",
    )
    assert cfg.bands == list(BANDS) and conv.unused == []
    assert not any(k.startswith("encoder.") for k in conv.missing)  # the whole encoder came over
    x = torch.randn(2, 13, 32, 32)
    ref = _run(vit.blocks, vit.norm, vit.patch_embed(x) + vit.pos_embed[:, 1:])  # MAE features w/o cls
    ours = conv.model.encoder.features(x)[0]
    assert torch.allclose(ours, ref, atol=1e-5)
    conv.model.encoder.tokens.pos_order = "yx"  # our own layout would transpose the positions
    assert not torch.allclose(conv.model.encoder.features(x)[0], ref, atol=1e-3)


@torch.no_grad()
def test_prithvi_v1_and_v2_keys_convert_encoder_and_decoder(tmp_path: Path) -> None:
    ref = PrithviRef()
    v1 = convert_state_dict(ref.state_dict(), "prithvi", img_size=16, heads=HEADS, decoder_heads=4)
    cfg = v1.model.config
    assert (cfg.family, cfg.frames, cfg.tubelet, cfg.bands, cfg.dims) == (
        "prithvi",
        2,
        1,
        cfg.bands,
        (D, 2, 4, DD, 1, 4),
    )
    assert cfg.bands == ["B02", "B03", "B04", "B8A", "B11", "B12"] and v1.missing == [] and v1.unused == []
    x = torch.randn(2, 6, 2, 16, 16)  # (B, C, T, H, W)
    ours_x = x.transpose(1, 2).reshape(2, 12, 16, 16)  # (B, T·C, H, W), time-major
    latent = v1.model.encoder.features(ours_x)[0]
    assert torch.allclose(latent, ref.encode(x), atol=1e-5)
    grid = v1.model.encoder.tokens.grid(16, 16)
    ids = torch.arange(latent.shape[1]).expand(2, -1)
    pred = v1.model.decoder_pred[0](v1.model._decode(latent, ids, grid))
    assert torch.allclose(pred, ref.decode(ref.encode(x)), atol=1e-5)
    # Prithvi-EO-2.0: the same tensors under encoder./decoder. prefixes, wrapped, plus a time encoder
    v2_state = {
        ("decoder." if k.startswith(("decoder", "mask")) else "encoder.") + k: v
        for k, v in ref.state_dict().items()
    }
    v2_state["encoder.temporal_embed_enc.scale"] = torch.ones(1)
    torch.save({"model": v2_state, "epoch": 3}, tmp_path / "Prithvi_EO_V2_tiny.pt")
    v2 = convert(str(tmp_path), img_size=16, heads=HEADS, decoder_heads=4)  # a folder holding one checkpoint
    for (k, a), (_, b) in zip(v1.model.state_dict().items(), v2.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert any("time/location" in n for n in v2.notes) and v2.unused == ["temporal_embed_enc.scale"]


@torch.no_grad()
def test_satmaepp_groups_positions_and_prediction_order() -> None:
    ref = SatMAERef()
    conv = convert_state_dict(ref.state_dict(), heads=HEADS, decoder_heads=4)
    cfg = conv.model.config
    assert (conv.layout, cfg.bands, cfg.pos_order, cfg.scales) == ("satmaepp", SATMAE_BANDS, "xy", 0)
    assert conv.missing == [] and conv.unused == ["proj_up_conv.bias", "proj_up_conv.weight"]
    x = torch.randn(2, 10, 16, 16)
    latent = conv.model.encoder.features(x)[0]
    assert torch.allclose(latent, ref.encode(x), atol=1e-5)
    grid = conv.model.encoder.tokens.grid(16, 16)
    decoded = conv.model._decode(latent, torch.arange(latent.shape[1]).expand(2, -1), grid)
    n = decoded.shape[1] // 3
    preds = [head(decoded[:, i * n : (i + 1) * n]) for i, head in enumerate(conv.model.decoder_pred)]
    assert torch.allclose(conv.model.reconstruct(preds, grid), ref.decode_image(ref.encode(x)), atol=1e-5)
    # all 13 bands: the three reference groups load, the extra group (B01, B09, B10) stays at init
    wide = convert_state_dict(ref.state_dict(), bands=list(BANDS))
    assert {k for k in wide.missing if "tokens" in k} == {
        "encoder.tokens.proj.3.weight",
        "encoder.tokens.proj.3.bias",
    }


def test_torchgeo_enum_code_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchgeo.models import ViTSmall16_Weights

    vit = _tiny_vit()
    monkeypatch.setattr(
        ViTSmall16_Weights, "get_state_dict", lambda self, **kw: vit.state_dict(), raising=False
    )
    conv = convert("ViTSmall16_Weights.SENTINEL2_ALL_MAE")
    assert conv.model.config.bands == list(BANDS)  # torchgeo's B1 … B12 names, mapped
    assert torch.equal(conv.model.encoder.blocks[1].mlp.fc2.weight, vit.blocks[1].mlp.fc2.weight)
    with pytest.raises(CheckpointError, match="not a torchgeo weights enum"):
        convert("ViTSmall16_Weights.NO_SUCH")


def test_hub_code_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub

    path = tmp_path / "Prithvi_EO_V1_100M.pt"
    torch.save(PrithviRef().state_dict(), path)
    calls = []
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda repo: ["config.json", path.name])
    monkeypatch.setattr(
        huggingface_hub, "hf_hub_download", lambda repo, name: calls.append((repo, name)) or str(path)
    )
    conv = convert("ibm-nasa-geospatial/Prithvi-EO-1.0-100M", img_size=16)
    assert calls == [("ibm-nasa-geospatial/Prithvi-EO-1.0-100M", path.name)] and conv.layout == "prithvi"


def test_weights_cli_writes_a_pretrained_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("WARMSTART_RUNS", str(tmp_path / "runs"))
    torch.save(
        {"state_dict": {"model." + k: v for k, v in _tiny_vit().state_dict().items()}}, tmp_path / "vit.pth"
    )
    stats = BandStats(list(BANDS), [1000.0] * 13, [500.0] * 13, [0.0] * 13, [1e4] * 13, 32)
    stats.save(tmp_path / "stats.json")
    out = tmp_path / "converted"
    assert (
        app.main(
            [
                "weights",
                "--source",
                str(tmp_path / "vit.pth"),
                "--out",
                str(out),
                "--stats",
                str(tmp_path / "stats.json"),
            ]
        )
        == 0
    )
    assert {"model.safetensors", "config.json", "stats.json", "conversion.json"} <= {
        p.name for p in out.iterdir()
    }
    assert json.loads((out / "conversion.json").read_text())["layout"] == "timm"
    model = load_model(out)  # the run dir `finetune/probe --pretrained` read
    assert model.config.pos_order == "xy" and "cls_token dropped" in capsys.readouterr().out
    bad = BandStats(["B02"], [0.0], [1.0], [0.0], [1.0], 32)
    bad.save(tmp_path / "bad.json")
    argv = ["weights", "--source", str(tmp_path / "vit.pth"), "--stats", str(tmp_path / "bad.json")]
    assert app.main(argv) == 2 and "1 channels" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["weights", "--source", "/nonexistent/ckpt.pt"], "/nonexistent/ckpt.pt"),
        (["weights", "--source", "owner/no-such-repo"], "owner/no-such-repo"),
        (["weights", "--source", "BAD", "--bands", "[B02,B03]"], "--bands"),
    ],
)
def test_weights_bad_input_one_line_exit_2(
    argv: list[str], needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "list_repo_files", offline)
    monkeypatch.setenv("WARMSTART_RUNS", str(tmp_path / "runs"))
    torch.save(_tiny_vit().state_dict(), tmp_path / "vit.pt")
    argv = [str(tmp_path / "vit.pt") if a == "BAD" else a for a in argv]
    assert app.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err
