import json
import math

import numpy as np
import pytest
import torch

from warmstart.errors import CheckpointError, ConfigError, DataError
from warmstart_3d.cli import app
from warmstart_3d.clip2point import (
    VIEW_SETS,
    CLIP2Point,
    ClipSpec,
    DepthConfig,
    DualPathAdapter,
    SelectorFewShot,
    TinyCLIPConfig,
    adapter_logits,
    depth_to_image,
    load_clip,
    render_depth,
    render_shaded,
    save_clip,
    view_rotations,
    zero_shot_accuracy,
)


def _tiny_clip(tmp_path, width: int = 32):
    import open_clip

    cfg = TinyCLIPConfig(layers=1, text_layers=1, width=width, text_width=32, embed_dim=32).model_cfg()
    torch.manual_seed(0)
    return save_clip(open_clip.CLIP(**cfg), cfg, tmp_path / f"clip{width}")


def test_view_sets_are_rotations():
    for elev, azim in [((0, 0, 0, 0, 90, -90), (0, 90, 180, 270, 0, 180))]:
        rot = view_rotations(torch.tensor(elev), torch.tensor(azim))
        assert torch.allclose(rot @ rot.transpose(-1, -2), torch.eye(3).expand(6, 3, 3), atol=1e-6)
        assert torch.allclose(torch.linalg.det(rot), torch.ones(6), atol=1e-6)
    # azimuth 90 turns +z (depth axis) into -x... i.e. the object's x axis faces the camera
    r = view_rotations(torch.tensor([0.0]), torch.tensor([90.0]))[0]
    assert torch.allclose(r @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 0, -1]), atol=1e-6)


def test_zbuffer_keeps_the_nearest_point_and_densify_grows_a_square():
    # two points on the same pixel at depths -0.5 and +0.5 (view z), one elsewhere
    pts = torch.tensor([[[0.01, 0.01, 0.5], [0.01, 0.01, -0.5], [-0.6, 0.6, 0.0]]], requires_grad=True)
    zero = torch.zeros(1)
    raw = render_depth(pts, zero, zero, 1.0, 16, densify=1)[0, 0]  # (16, 16)
    assert raw.isfinite().sum() == 2
    assert math.isclose(float(raw[7, 8].detach()), 0.5, abs_tol=1e-6)  # nearest: z = -0.5 → depth 0.5
    raw[raw.isfinite()].sum().backward()
    assert pts.grad[0, 1, 2] == 1 and pts.grad[0, 0, 2] == 0  # only the winning point gets gradient
    dense = render_depth(pts.detach(), zero, zero, 1.0, 16, densify=3)[0, 0]
    assert dense.isfinite().sum() == 18 and math.isclose(float(dense[6:9, 7:10].max()), 0.5, abs_tol=1e-6)
    img = depth_to_image(dense)
    assert img.shape == (3, 16, 16) and float(img[0][dense.isinf()].min()) == 1.0
    obj = img[0][dense.isfinite()]
    assert math.isclose(float(obj.min()), 0.0, abs_tol=1e-6) and math.isclose(
        float(obj.max()), 200 / 255, rel_tol=1e-5
    )


def test_smoothing_stays_inside_the_object_and_shaded_render_is_on_white():
    g = torch.Generator().manual_seed(0)
    pts = torch.nn.functional.normalize(torch.randn(1, 400, 3, generator=g), dim=-1) * 0.8
    a = render_depth(pts, torch.zeros(1), torch.zeros(1), 1.0, 24, densify=3)
    b = render_depth(pts, torch.zeros(1), torch.zeros(1), 1.0, 24, densify=3, smooth=1.0)
    assert torch.equal(a.isfinite(), b.isfinite()) and b[b.isfinite()].std() < a[a.isfinite()].std()
    img = render_shaded(pts, pts / 0.8, torch.full((1, 400, 3), 0.5), 24)
    assert img.shape == (1, 3, 24, 24) and img[0, :, 0, 0].eq(1).all() and img[0, :, 12, 12].lt(0.6).all()


def test_clip2point_loss_trains_depth_only_and_scratch_differs(tmp_path):
    loaded = load_clip(ClipSpec(model=str(_tiny_clip(tmp_path))))
    model = CLIP2Point(loaded.model.visual, loaded.mean, loaded.std, DepthConfig(), loaded.image_size)
    for a, b in zip(model.depth_encoder.parameters(), loaded.model.visual.parameters(), strict=True):
        assert torch.equal(a, b)
    scratch = CLIP2Point(
        loaded.model.visual, loaded.mean, loaded.std, DepthConfig(), loaded.image_size, "scratch"
    )
    assert not torch.equal(scratch.depth_encoder.conv1.weight, loaded.model.visual.conv1.weight)
    g = torch.Generator().manual_seed(0)
    pts = torch.nn.functional.normalize(torch.randn(4, 128, 3, generator=g), dim=-1)
    images = torch.rand(4, 3, loaded.image_size, loaded.image_size, generator=g)
    loss, metrics = model.train()(pts, images, g)
    assert torch.isfinite(loss) and metrics["w"] == 1.0
    # L = L_img + L_depth / w² + log(w + 1)
    assert math.isclose(
        float(loss), metrics["loss_image"] + metrics["loss_depth"] + math.log(2), rel_tol=1e-5
    )
    loss.backward()
    assert model.weight.grad is not None and model.depth_encoder.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.image_encoder.parameters())


def test_zero_shot_rule_and_adapter_output():
    text = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    feats = text[[2, 0, 1]][:, None].expand(3, 6, 8) * 5  # every view equals its class's text feature
    assert zero_shot_accuracy(feats, text, torch.tensor([2, 0, 1])) == 1.0
    assert zero_shot_accuracy(feats, text, torch.tensor([0, 1, 2])) == 0.0
    out = DualPathAdapter(2, 10, 8).eval()(torch.randn(5, 10, 8), torch.randn(5, 10, 8))
    assert out.shape == (5, 8) and torch.allclose(out.norm(dim=-1), torch.ones(5), atol=1e-5)


def test_zero_shot_residual_adds_the_view_averaged_cosines():
    g = torch.Generator().manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(3, 8, generator=g), dim=-1)
    paths = [torch.randn(5, 10, 8, generator=g), torch.randn(5, 10, 8, generator=g)]
    model = DualPathAdapter(2, 10, 8).eval()
    zs = torch.einsum("bvd,cd->bc", torch.nn.functional.normalize(paths[0], dim=-1), text) / 10
    with torch.no_grad():
        diff = adapter_logits(model, paths, text, 0.7) - adapter_logits(model, paths, text, 0.0)
    assert torch.allclose(diff, 0.7 * zs, atol=1e-6)


def test_view_selector_starts_at_the_fixed_views_and_learns_through_the_renderer(tmp_path):
    loaded = load_clip(ClipSpec(model=str(_tiny_clip(tmp_path))))
    torch.manual_seed(0)
    model = SelectorFewShot(
        [loaded.model.visual], loaded.mean, loaded.std, DepthConfig(), loaded.image_size, 32
    )
    pts = torch.nn.functional.normalize(
        torch.randn(4, 128, 3, generator=torch.Generator().manual_seed(0)), dim=-1
    )
    elev, azim = model.selector(pts)
    fixed_elev, fixed_azim = (torch.tensor(x, dtype=torch.float32) for x in VIEW_SETS["ten"])
    assert torch.equal(elev, fixed_elev.expand(4, -1)) and torch.equal(azim, fixed_azim.expand(4, -1))
    text = torch.nn.functional.normalize(torch.randn(3, 32), dim=-1)
    logits = adapter_logits(model.adapter, model.train().view_features(pts), text, 1.0)
    torch.nn.functional.cross_entropy(10 * logits, torch.tensor([0, 1, 2, 0])).backward()
    assert (
        model.selector.mlp[2].weight.grad.abs().sum() > 0
    )  # the angles get a gradient through the depth maps
    assert all(p.grad is None for p in model.encoders.parameters())  # encoders stay frozen


def test_load_clip_errors(tmp_path):
    small = _tiny_clip(tmp_path, 32)
    wide = _tiny_clip(tmp_path, 48)
    (small / "open_clip_model.safetensors").write_bytes((wide / "open_clip_model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="does not match"):
        load_clip(ClipSpec(model=str(small)))
    with pytest.raises(ConfigError, match="unknown open_clip architecture"):
        load_clip(ClipSpec(model="ViT-Nope-99", pretrained="x.pt"))
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_clip(ClipSpec(model="ViT-B-32", pretrained=str(tmp_path / "missing.pt")))


def test_cli_source_pretrain_eval_end_to_end(tmp_path, capsys, tiny_clip):
    src = tmp_path / "src"
    assert (
        app.main(
            [
                "clip2point-source",
                "--source.steps",
                "2",
                "--source.per_class",
                "2",
                "--source.n_points",
                "64",
                "--source.batch_size",
                "8",
                *tiny_clip,
                "--out",
                str(src),
            ]
        )
        == 0
    )
    res = json.loads((src / "results.json").read_text())
    assert 0 <= res["rgb_zero_shot_accuracy"] <= 1 and (src / "clip" / "open_clip_config.json").is_file()
    pre = tmp_path / "pre"
    assert (
        app.main(
            [
                "clip2point-pretrain",
                "--clip.model",
                str(src / "clip"),
                "--pretrain.steps",
                "2",
                "--pretrain.per_class",
                "2",
                "--pretrain.n_points",
                "64",
                "--pretrain.batch_size",
                "8",
                "--engine",
                "false",
                "--out",
                str(pre),
            ]
        )
        == 0
    )
    from warmstart.hub import read_config

    assert read_config(pre / "depth_encoder", "3d.clip2point-depth")["config"]["clip"]["model"] == str(
        src / "clip"
    )
    learned = [
        "--shots",
        "1",
        "--test_per_class",
        "1",
        "--fewshot.learn_views",
        "true",
        "--fewshot.zero_shot_weight",
        "1",
    ]
    for extra in ([], ["--shots", "1", "--test_per_class", "1"], learned):
        out = tmp_path / f"eval{len(extra)}"
        assert (
            app.main(
                [
                    "clip2point-eval",
                    "--checkpoint",
                    str(pre),
                    "--per_class",
                    "3",
                    "--n_points",
                    "64",
                    "--fewshot.steps",
                    "2",
                    *extra,
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        r = json.loads((out / "results.json").read_text())
        assert r["method"] == "CLIP2Point" and 0 <= r["accuracy"] <= 1 and r["n_clouds"] == 24
        if extra is learned:
            assert 0 <= r["accuracy_fixed_views"] <= 1 and r["learned_view_shift_deg"] >= 0
    # PointCLIP-style: the CLIP image tower directly
    assert (
        app.main(
            [
                "clip2point-eval",
                "--clip.model",
                str(src / "clip"),
                "--per_class",
                "2",
                "--n_points",
                "64",
                "--out",
                str(tmp_path / "pc"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "pc" / "results.json").read_text())["method"] == "PointCLIP-style"
    capsys.readouterr()
    # bad input: unknown prompt class, NaN cloud, checkpoint of another architecture → one line, exit 2
    assert app.main(["clip2point-eval", "--checkpoint", str(pre), "--classes", "[sphere,teapot]"]) == 2
    err = capsys.readouterr().err.strip()
    assert "teapot" in err and len(err.splitlines()) == 1
    folder = tmp_path / "clouds" / "cube"
    folder.mkdir(parents=True)
    bad = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    bad[3, 1] = np.nan
    np.save(folder / "a.npy", bad)
    assert app.main(["clip2point-eval", "--checkpoint", str(pre), "--data", str(tmp_path / "clouds")]) == 2
    err = capsys.readouterr().err.strip()
    assert "NaN" in err and len(err.splitlines()) == 1
    np.save(folder / "a.npy", bad[:1] * 0 + 1)
    assert app.main(["clip2point-eval", "--checkpoint", str(pre), "--data", str(tmp_path / "clouds")]) == 2
    assert "need at least" in capsys.readouterr().err
    wide = _tiny_clip(tmp_path, 48)
    meta = json.loads((pre / "depth_encoder" / "config.json").read_text())
    meta["config"]["clip"]["model"] = str(wide)
    (pre / "depth_encoder" / "config.json").write_text(json.dumps(meta))
    assert (
        app.main(["clip2point-eval", "--checkpoint", str(pre), "--per_class", "1", "--n_points", "64"]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert "does not match" in err and len(err.splitlines()) == 1


def test_cli_pretrain_with_a_tiny_source_in_one_command(tmp_path, tiny_clip):
    out = tmp_path / "pre"
    assert (
        app.main(
            [
                "clip2point-pretrain",
                "--clip.model",
                "tiny",
                "--source.steps",
                "2",
                "--source.per_class",
                "1",
                "--source.n_points",
                "64",
                *tiny_clip,
                "--pretrain.steps",
                "2",
                "--pretrain.per_class",
                "1",
                "--pretrain.n_points",
                "64",
                "--pretrain.init",
                "scratch",
                "--engine",
                "false",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    from safetensors.torch import load_file, save_file

    from warmstart_3d.clip2point import load_clip, load_depth_encoder, read_depth_checkpoint

    clip, depth, rest = read_depth_checkpoint(out)
    assert rest["init"] == "scratch" and clip.model == str((out / "clip").resolve())
    loaded = load_clip(clip)
    encoder = load_depth_encoder(out, loaded)  # the trained model reloads with one call
    # an older run folder (depth_encoder.safetensors + clip2point.json) still loads
    old = tmp_path / "old"
    old.mkdir()
    save_file(
        load_file(str(out / "depth_encoder" / "model.safetensors")), str(old / "depth_encoder.safetensors")
    )
    (old / "clip2point.json").write_text(
        json.dumps(
            {
                "clip": {"model": clip.model, "pretrained": None},
                "depth": {"point_radius": None},
                "init": "scratch",
            }
        )
    )
    assert read_depth_checkpoint(old)[2]["init"] == "scratch"
    legacy = load_depth_encoder(old, loaded)
    x = torch.rand(2, 3, loaded.image_size, loaded.image_size)
    assert torch.equal(legacy(x), encoder(x))
    assert "source_rgb_zero_shot_accuracy" in json.loads((out / "results.json").read_text())


def test_eval_set_rejects_unknown_classes():
    from warmstart_3d.clip2point import load_eval_set

    with pytest.raises((ConfigError, DataError), match="teapot"):
        load_eval_set(None, ["cube", "teapot"], 1, 16, 0)


def test_bench_points_clip2point_part(tmp_path):
    assert (
        app.main(
            [
                "bench",
                "--kind",
                "points",
                "--points.part",
                "clip2point",
                "--points.seeds",
                "[0]",
                "--points.clip2point.source_steps",
                "2",
                "--points.clip2point.source_per_class",
                "2",
                "--points.clip2point.pretrain_steps",
                "2",
                "--points.clip2point.pretrain_per_class",
                "2",
                "--points.clip2point.batch_size",
                "8",
                "--points.clip2point.n_points",
                "64",
                "--points.clip2point.shots",
                "[1]",
                "--points.clip2point.pool_per_class",
                "1",
                "--points.clip2point.test_per_class",
                "1",
                "--points.clip2point.adapter_steps",
                "2",
                "--out",
                str(tmp_path / "b"),
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    assert set(results["methods"]) == {"PointCLIP-style", "CLIP2Point", "CLIP2Point (scratch depth encoder)"}
    assert all(0 <= m["mean"] <= 1 for m in results["methods"].values())
    assert (tmp_path / "b" / "report.md").is_file() and (tmp_path / "b" / "plot.png").is_file()
