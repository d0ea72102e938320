import pytest
import torch

torch.set_num_threads(1)  # the CI box is shared: one thread avoids oversubscription stalls


@pytest.fixture(autouse=True)
def _runs_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("WARMSTART_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("WARMSTART_CACHE", str(tmp_path / "cache"))  # cached bench sources stay in the test


@pytest.fixture
def tiny_clip() -> list[str]:
    """The CLI flags of the smallest source CLIP (one layer, width 32) the CLIP2Point commands build."""
    return [
        "--source.tiny.layers",
        "1",
        "--source.tiny.text_layers",
        "1",
        "--source.tiny.width",
        "32",
        "--source.tiny.text_width",
        "32",
        "--source.tiny.embed_dim",
        "32",
    ]


@pytest.fixture
def gaussian_features():
    """``make(b, n, seed=0)``: (b, n, 14) random Gaussian-MAE features (xyz, opacity, scale, colour uniform in
    [0, 1); unit quaternions), the same for the same seed."""

    def make(b: int, n: int, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        f = torch.rand(b, n, 14, generator=g)
        f[..., 7:11] = torch.nn.functional.normalize(torch.randn(b, n, 4, generator=g), dim=-1)
        return f

    return make


@pytest.fixture
def one_line_error(capsys):
    """``check(*needles)``: what the command wrote to stderr is one line holding every needle; returns it."""

    def check(*needles: str) -> str:
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        for needle in needles:
            assert needle in err, err
        return err

    return check
