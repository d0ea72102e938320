import json

import pytest

from warmstart_3d.cli import app


@pytest.fixture(scope="module")
def noisy_scene(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "scene"
    assert (
        app.main(
            [
                "scene-make",
                "--out",
                str(out),
                "--n_train",
                "3",
                "--n_test",
                "1",
                "--size",
                "16",
                "--gaussians_per_object",
                "120",
                "--rot_noise_deg",
                "2",
                "--trans_noise",
                "0.05",
            ]
        )
        == 0
    )
    return out


def test_instantsplat_and_splat_fit_end_to_end(noisy_scene, tmp_path):
    assert (
        app.main(
            [
                "instantsplat",
                "--data",
                str(noisy_scene),
                "--isplat.init",
                "depth",
                "--isplat.fit.steps",
                "6",
                "--isplat.n_points",
                "150",
                "--isplat.align_steps",
                "2",
                "--out",
                str(tmp_path / "is"),
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "is" / "results.json").read_text())
    assert {"psnr", "ssim", "ate", "ate_initial", "seconds"} <= set(results) and results["ate_initial"] > 0
    assert (tmp_path / "is" / "splats.ply").is_file() and (tmp_path / "is" / "config.yaml").is_file()
    assert (
        app.main(
            [
                "splat-fit",
                "--data",
                str(noisy_scene),
                "--fit.steps",
                "4",
                "--n_points",
                "100",
                "--out",
                str(tmp_path / "fit"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "fit" / "results.json").read_text())["steps"] == 4


def test_splats_make_writes_plys_and_an_index(tmp_path):
    assert (
        app.main(
            [
                "splats-make",
                "--out",
                str(tmp_path / "ds"),
                "--per_class",
                "1",
                "--classes",
                "[cube, torus]",
                "--n_gaussians",
                "32",
            ]
        )
        == 0
    )
    lines = (tmp_path / "ds" / "index.jsonl").read_text().splitlines()
    assert [json.loads(x)["class"] for x in lines] == ["cube", "torus"]


@pytest.mark.slow  # ~10 s: a tiny depth prior is trained (and cached), then three arms
def test_bench_splat_writes_the_report(tmp_path):
    argv = [
        "bench",
        "--kind",
        "splat",
        "--splat.seeds",
        "[0]",
        "--splat.steps",
        "3",
        "--splat.size",
        "32",
        "--splat.fit_size",
        "32",
        "--splat.detect_min_side",
        "32",
        "--splat.n_points",
        "100",
        "--splat.objects_gaussians",
        "80",
        "--splat.align_steps",
        "1",
        "--splat.depth_source.scenes",
        "1",
        "--splat.depth_source.views",
        "2",
        "--splat.depth_source.size",
        "32",
        "--splat.depth_source.steps",
        "2",
        "--splat.depth_source.batch_size",
        "2",
        "--out",
        str(tmp_path / "b"),
    ]
    assert app.main(argv) == 0
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    assert set(results["methods"]) == {
        "prior (images only)",
        "random (images only)",
        "oracle (true depth + poses)",
    }
    assert all(m["n"] == 1 for m in results["methods"].values())
    assert (tmp_path / "b" / "plot.png").stat().st_size > 0 and (tmp_path / "b" / "report.md").is_file()
    assert (tmp_path / "b" / "views.png").stat().st_size > 0
    assert "![views](views.png)" in (tmp_path / "b" / "report.md").read_text()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["instantsplat", "--data", "/nonexistent/scene"], "no such scene folder"),
        (["splats-make", "--out", "X", "--classes", "[dodecahedron]"], "unknown dodecahedron"),
        (["scene-make", "--out", "X", "--size", "2"], "--size must be"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path):
    argv = [a.replace("X", str(tmp_path / "x")) for a in argv]
    assert app.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_gmae_pretrains_and_finetunes_on_a_splat_dataset(tmp_path):
    assert (
        app.main(
            [
                "splats-make",
                "--out",
                str(tmp_path / "ds"),
                "--per_class",
                "3",
                "--classes",
                "[cube, sphere]",
                "--n_gaussians",
                "64",
            ]
        )
        == 0
    )
    assert (
        app.main(
            [
                "gmae",
                "--data",
                str(tmp_path / "ds"),
                "--n_points",
                "64",
                "--model.n_groups",
                "8",
                "--model.group_size",
                "8",
                "--model.dim",
                "32",
                "--model.depth",
                "1",
                "--pretrain_steps",
                "3",
                "--finetune_steps",
                "3",
                "--batch_size",
                "4",
                "--out",
                str(tmp_path / "g"),
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "g" / "results.json").read_text())
    assert 0.0 <= results["test_accuracy"] <= 1.0 and results["n_test"] == 1
    # the trained model reloads with one call (the core's format), and an old run folder still loads
    import torch
    from safetensors.torch import save_file

    from warmstart_3d.gmae import GaussianMAE, load_gmae

    model = GaussianMAE.from_pretrained(tmp_path / "g" / "model")
    assert (
        model.n_classes == 2 and model.config.dim == 32 and model.hub_extra["classes"] == ["cube", "sphere"]
    )
    old = tmp_path / "old-run"
    old.mkdir()
    (old / "config.yaml").write_text((tmp_path / "g" / "config.yaml").read_text())
    save_file(model.state_dict(), str(old / "model.safetensors"))
    legacy = load_gmae(old)
    x = torch.randn(2, 64, 14)
    assert torch.equal(legacy(x), model.eval()(x)) and torch.equal(
        load_gmae(tmp_path / "g" / "model")(x), legacy(x)
    )
    # fewer points than groups: one line, exit 2
    assert (
        app.main(["gmae", "--data", str(tmp_path / "ds"), "--n_points", "4", "--out", str(tmp_path / "g2")])
        == 2
    )


@pytest.mark.slow
def test_bench_points_writes_the_report(tmp_path):
    argv = [
        "bench",
        "--kind",
        "points",
        "--points.part",
        "mae",
        "--points.seeds",
        "[0]",
        "--points.train_per_class",
        "1",
        "--points.test_per_class",
        "1",
        "--points.unlabelled_per_class",
        "1",
        "--points.n_points",
        "64",
        "--points.pretrain_steps",
        "2",
        "--points.finetune_steps",
        "2",
        "--points.batch_size",
        "8",
        "--points.labels_per_class",
        "[1]",
        "--points.model.embed_width",
        "16",
        "--out",
        str(tmp_path / "p"),
    ]
    assert app.main(argv) == 0
    results = json.loads((tmp_path / "p" / "results.json").read_text())
    assert set(results["methods"]) == {"scratch", "scratch (xyz only)", "Point-MAE", "Gaussian-MAE"}
    assert all(0 <= m["mean"] <= 1 for m in results["methods"].values())
    assert isinstance(results["config"]["at_chance"], list)  # the health line is always in results.json
    # the sources are cached artifacts: a second bench reuses them (same config hash, no new folder)
    from warmstart.cache import cache_root

    built = sorted(p.name for p in (cache_root() / "3d.gmae-source").iterdir() if p.is_dir())
    assert len(built) == 2  # Point-MAE and Gaussian-MAE
    assert app.main([*argv[:-1], str(tmp_path / "p2")]) == 0
    assert sorted(p.name for p in (cache_root() / "3d.gmae-source").iterdir() if p.is_dir()) == built


@pytest.mark.slow
def test_demo_runs_the_tour_step(tmp_path):
    result, seconds = app.run_demo(tmp_path / "demo")
    assert result.metric == "novel-view PSNR (dB)" and result.value > 10
    assert (tmp_path / "demo" / "splats.ply").is_file()
