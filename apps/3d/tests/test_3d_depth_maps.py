"""CLIP2Point as in the paper: dense z-buffered depth maps, NT-Xent, checked few-shot splits, honest losses."""

import json
import math

import pytest
import torch

from warmstart.errors import DataError
from warmstart_3d.clip2point import nt_xent
from warmstart_3d.depth_maps import render_depth, view_angles
from warmstart_3d.fewshot import sample_shots, split_indices


def test_224px_maps_of_a_1024_point_sphere_are_dense_and_show_no_back_surface():
    g = torch.Generator().manual_seed(0)
    sphere = torch.nn.functional.normalize(torch.randn(1, 1024, 3, generator=g), dim=-1)
    elev, azim = view_angles("six")
    c = (torch.arange(224) + 0.5) / 112 - 1  # pixel centres in view units
    yy, xx = torch.meshgrid(-c, c, indexing="ij")
    rho2 = xx**2 + yy**2
    silhouette = rho2 < 1
    front, back = 1 - (1 - rho2).clamp_min(0).sqrt(), 1 + (1 - rho2).clamp_min(0).sqrt()
    for radius, dense in (
        (None, True),
        (0.0, False),
    ):  # the default splats vs PointCLIP's one pixel per point
        depth = render_depth(sphere, elev, azim, 1.0, 224, radius=radius)[0]  # (6, 224, 224)
        seen = depth.isfinite() & silhouette
        coverage = float(seen.sum() / (silhouette.sum() * 6))
        d = torch.where(seen, depth, torch.zeros_like(depth))
        behind = seen & ((d - back).abs() < (d - front).abs())  # nearer the back surface than the front
        if dense:
            assert coverage >= 0.9 and int(behind.sum()) == 0, (coverage, int(behind.sum()))
        else:
            assert coverage < 0.1 and float(behind.sum() / seen.sum()) > 0.3  # sparse, back shows through


def test_nt_xent_counts_same_modality_negatives():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    z = torch.nn.functional.normalize(torch.cat([a, b]), dim=-1)
    sim = z @ z.T / 0.1
    expected = 0.0
    for i in range(10):
        j = (i + 5) % 10
        others = [k for k in range(10) if k != i]
        expected += -(sim[i, j] - torch.logsumexp(sim[i, others], 0)) / 10
    assert math.isclose(float(nt_xent(a, b, 0.1)), float(expected), rel_tol=1e-5)
    assert float(nt_xent(a, a.clone(), 0.01)) < float(nt_xent(a, b, 0.01))


def test_few_shot_splits_are_explicit_and_checked():
    labels = torch.tensor([0] * 6 + [1] * 6 + [2] * 3)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(DataError, match="class lamp: 3 clouds, fewer than --shots 2 \\+ --test_per_class 2"):
        split_indices(labels, 2, g, shots=2, names=["cube", "mug", "lamp"])
    pool, test = split_indices(labels, 1, g, shots=2, names=["cube", "mug", "lamp"])
    picked = pool[sample_shots(labels[pool], 2, g)]
    assert torch.bincount(labels[picked]).tolist() == [2, 2, 2]  # every class trains, none silently
    assert torch.bincount(labels[test]).tolist() == [1, 1, 1] and not set(picked.tolist()) & set(
        test.tolist()
    )


def test_shots_beyond_a_class_are_one_line_before_anything_is_written(tmp_path, capsys):
    from warmstart_3d.cli import app

    argv = [
        "clip2point-eval",
        "--clip.model",
        "ViT-B-32",
        "--per_class",
        "3",
        "--shots",
        "4",
        "--out",
        str(tmp_path / "e"),
    ]
    assert app.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "fewer than --shots 4 + --test_per_class 8" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "e").exists()


@pytest.mark.slow  # ~6 s: a tiny source CLIP and image-depth pretraining on the engine
def test_engine_runs_write_a_finite_first_loss(tmp_path, tiny_clip):
    from warmstart_3d.cli import app

    argv = [
        "clip2point-pretrain",
        "--source.steps",
        "2",
        "--source.per_class",
        "2",
        "--source.n_points",
        "64",
        "--source.batch_size",
        "8",
        *tiny_clip,
        "--pretrain.steps",
        "2",
        "--pretrain.per_class",
        "2",
        "--pretrain.n_points",
        "64",
        "--pretrain.batch_size",
        "8",
        "--out",
        str(tmp_path / "p"),
    ]
    assert app.main(argv) == 0
    text = (tmp_path / "p" / "results.json").read_text()
    assert "NaN" not in text
    results = json.loads(text)
    assert all(math.isfinite(results[k]) for k in ("loss_first", "loss_last", "source_loss_first"))
