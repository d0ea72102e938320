import json

import numpy as np
import pytest
import torch

from warmstart.errors import DataError
from warmstart_3d.cli import app
from warmstart_3d.data import ALL_CLASSES, COMPOSITE_CLASSES, PART_NAMES, load_points, shape_instance
from warmstart_3d.gmae import GMAEConfig
from warmstart_3d.partseg import PartLayout, PartSegModel, fetch_layers, interpolate, part_metrics
from warmstart_3d.splat_dataset import make_splat_dataset, read_part_labels, read_splat_dataset


def test_interpolation_is_exact_at_centres_and_a_convex_combination():
    g = torch.Generator().manual_seed(0)
    points = torch.rand(2, 50, 3, generator=g)
    centres = points[:, [3, 17, 29, 41]]  # centres are points of the cloud, as FPS picks them
    feats = torch.randn(2, 4, 5, generator=g)
    out = interpolate(points, centres, feats)
    assert torch.allclose(out[:, [3, 17, 29, 41]], feats, atol=1e-5)
    # elsewhere: inside the per-channel range of the features (non-negative weights summing to 1)
    assert (out >= feats.min(1, keepdim=True).values - 1e-5).all()
    assert (out <= feats.max(1, keepdim=True).values + 1e-5).all()
    const = interpolate(points, centres, torch.full((2, 4, 5), 2.5))
    assert torch.allclose(const, torch.full_like(const, 2.5))
    # weights 1/d² of the 3 nearest centres: d² = 0.25, 0.25, 234.25
    mid = interpolate(
        torch.tensor([[[0.5, 0.0, 0.0]]]),
        torch.tensor([[[0.0, 0, 0], [1.0, 0, 0], [9.0, 9, 9]]]),
        torch.tensor([[[0.0], [4.0], [100.0]]]),
    )
    w = torch.tensor([4.0, 4.0, 1 / 234.25])
    assert float(mid) == pytest.approx(float((w * torch.tensor([0.0, 4.0, 100.0])).sum() / w.sum()), rel=1e-5)
    assert fetch_layers(12) == [3, 7, 11] and fetch_layers(1) == [0] and fetch_layers(3) == [0, 1, 2]


def test_miou_follows_the_shapenetpart_convention():
    layout = PartLayout(["a", "b"], [["a0", "a1"], ["b0", "b1", "b2"]])  # global parts 0-1 and 2-4
    assert layout.offsets == [0, 2] and layout.n_parts == 5
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 3, 3], [2, 3, 4, 4]])
    classes = torch.tensor([0, 1, 1])
    perfect = part_metrics(target, target, classes, layout)
    assert perfect == {"accuracy": 1.0, "instance_miou": 1.0, "class_miou": 1.0}
    pred = torch.tensor([[0, 1, 1, 1], [2, 2, 3, 3], [2, 2, 2, 2]])
    m = part_metrics(pred, target, classes, layout)
    # shape 0: part0 IoU 1/2, part1 2/3 → 7/12; shape 1: parts 2, 3 exact, part 4 absent in both → 1;
    # shape 2: part2 1/4, part3 0, part4 0 → 1/12
    assert m["accuracy"] == pytest.approx(8 / 12)  # 3 + 4 + 1 of 12 points
    assert m["instance_miou"] == pytest.approx((7 / 12 + 1 + 1 / 12) / 3)
    assert m["class_miou"] == pytest.approx((7 / 12 + (1 + 1 / 12) / 2) / 2)
    # prediction is restricted to the object's class
    logits = torch.zeros(2, 1, 5)
    logits[:, :, 4] = 9.0  # a part of class b
    logits[:, :, 1] = 1.0
    assert layout.predict(logits, torch.tensor([0, 1])).flatten().tolist() == [1, 4]


def test_generator_part_labels_follow_the_geometry():
    g = torch.Generator().manual_seed(0)
    for name in ALL_CLASSES:
        pts, _, _, parts = shape_instance(name, 400, g, rotate=False, parts=True)
        assert parts.shape == (400,) and int(parts.max()) < len(PART_NAMES[name])
        if name in COMPOSITE_CLASSES:
            assert set(parts.tolist()) == set(range(len(PART_NAMES[name]))), name
    pts, _, _, parts = shape_instance("lamp", 600, g, rotate=False, parts=True)
    radial, z = pts[:, :2].norm(dim=-1), pts[:, 2]
    base, stem, shade = (parts == 0), (parts == 1), (parts == 2)
    assert radial[stem].max() < radial[shade].min() and z[base].max() < z[stem].min() + 0.05
    assert z[shade].mean() > z[stem].mean() > z[base].mean()
    pts, _, _, parts = shape_instance("table", 600, g, rotate=False, parts=True)
    assert pts[parts == 1, 2].max() < pts[parts == 0, 2].min() + 1e-4  # legs under the top
    pts, _, _, parts = shape_instance("cone", 600, g, rotate=False, parts=True)
    assert pts[parts == 1, 2].std() < 1e-4  # the base is flat


def test_splats_make_writes_part_sidecars_that_match_the_plys(tmp_path):
    make_splat_dataset(
        tmp_path / "ds", per_class=1, classes=["mug", "cylinder"], n_gaussians=40, rotate=False
    )
    splats, labels, classes = read_splat_dataset(tmp_path / "ds")
    parts, names = read_part_labels(tmp_path / "ds", [len(s) for s in splats])
    assert classes == ["mug", "cylinder"] and names == {
        "mug": ["body", "handle"],
        "cylinder": ["side", "cap"],
    }
    assert [len(p) for p in parts] == [40, 40] and all(int(p.max()) <= 1 for p in parts)
    # the handle is on the +x side of the mug (aligned objects)
    assert splats[0].means[parts[0] == 1, 0].min() > splats[0].means[parts[0] == 0, 0].mean()
    np.save(tmp_path / "ds" / "splats" / "mug_0000.parts.npy", np.zeros(7, dtype=np.int64))
    with pytest.raises(DataError, match="7 labels for 40 Gaussians"):
        read_part_labels(tmp_path / "ds", [len(s) for s in splats])
    (tmp_path / "ds" / "parts.json").unlink()
    with pytest.raises(DataError, match="no part labels"):
        read_part_labels(tmp_path / "ds")
    from warmstart_3d.splats import write_ply

    write_ply(
        tmp_path / "ds" / "splats" / "mug_0000.ply", splats[0].subset(torch.tensor([0]))
    )  # one Gaussian
    with pytest.raises(DataError, match="1 Gaussian"):
        read_splat_dataset(tmp_path / "ds")


def test_partseg_model_shapes_and_gradients(gaussian_features):
    torch.manual_seed(0)
    model = PartSegModel.from_config(GMAEConfig(n_groups=4, group_size=4, dim=16, depth=2, heads=2), 2, 5)
    feats = gaussian_features(3, 20)
    logits = model(feats, torch.tensor([0, 1, 1]))
    assert logits.shape == (3, 20, 5)
    logits.sum().backward()
    assert model.backbone.embed.first[0].weight.grad.abs().sum() > 0
    assert model.backbone.decoder.layers[0].linear1.weight.grad is None  # the decoder is not used


def test_gmae_partseg_end_to_end_beats_the_constant_predictor(
    tmp_path, capsys, one_line_error, gaussian_features
):
    ds = tmp_path / "ds"
    make_splat_dataset(ds, per_class=4, classes=list(COMPOSITE_CLASSES), n_gaussians=64, rotate=False)
    argv = [
        "gmae",
        "--data",
        str(ds),
        "--task",
        "partseg",
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
        "2",
        "--finetune_steps",
        "30",
        "--batch_size",
        "8",
        "--partseg_lr",
        "3e-3",
        "--out",
        str(tmp_path / "g"),
    ]
    assert app.main(argv) == 0
    r = json.loads((tmp_path / "g" / "results.json").read_text())
    assert r["n_parts"] == 10 and r["n_test"] == 4
    from warmstart_3d.partseg import PartSegModel  # the trained model reloads with one call

    reloaded = PartSegModel.from_pretrained(tmp_path / "g" / "model")
    assert reloaded.n_parts == 10 and reloaded.hub_extra["part_names"]["mug"] == ["body", "handle"]
    feats, cls = gaussian_features(2, 64), torch.tensor([0, 3])
    assert reloaded.eval()(feats, cls).shape == (2, 64, 10)
    assert r["test_instance_miou"] > r["constant_instance_miou"] + 0.1
    assert r["test_accuracy"] > r["constant_accuracy"]
    capsys.readouterr()
    (ds / "parts.json").unlink()  # a dataset without part labels: one line, exit 2
    assert app.main([*argv[:-1], str(tmp_path / "g2")]) == 2
    one_line_error("no part labels")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["gmae", "--data", "D", "--n_points", "8", "--model.n_groups", "16"], "fewer than --model.n_groups"),
        (["gmae", "--data", "/nonexistent/ds"], "no such dataset folder"),
    ],
)
def test_gmae_bad_input_is_one_line(argv, message, tmp_path, one_line_error):
    argv = [a.replace("D", str(tmp_path)) for a in argv]
    assert app.main(argv) == 2
    one_line_error(message)


def test_empty_and_nan_clouds_are_refused(tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 3), dtype=np.float32))
    with pytest.raises(DataError, match="empty point cloud"):
        load_points(tmp_path / "empty.npy")
    (tmp_path / "nan.xyz").write_text("0 0 0\nnan 1 1\n1 1 1\n")
    with pytest.raises(DataError, match="NaN"):
        load_points(tmp_path / "nan.xyz")


@pytest.mark.slow  # ~5 s (matplotlib + three arms); the mae part's bench test is slow too
def test_bench_points_partseg_part_writes_the_report(tmp_path):
    argv = [
        "bench",
        "--kind",
        "points",
        "--points.part",
        "partseg",
        "--points.seeds",
        "[0]",
        "--points.partseg.train_per_class",
        "1",
        "--points.partseg.test_per_class",
        "1",
        "--points.partseg.unlabelled_per_class",
        "0",
        "--points.partseg.n_points",
        "32",
        "--points.partseg.pretrain_steps",
        "1",
        "--points.partseg.finetune_steps",
        "2",
        "--points.partseg.batch_size",
        "4",
        "--points.partseg.model.n_groups",
        "4",
        "--points.partseg.model.group_size",
        "8",
        "--points.partseg.model.dim",
        "16",
        "--points.partseg.model.depth",
        "1",
        "--points.partseg.model.heads",
        "2",
        "--out",
        str(tmp_path / "b"),
    ]
    assert app.main(argv) == 0
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    assert set(results["methods"]) == {"scratch", "scratch (xyz only)", "Point-MAE", "Gaussian-MAE"}
    assert all(0 <= m["mean"] <= 1 for m in results["methods"].values())
    assert 0 < results["config"]["constant_predictor"]["0"]["instance_miou"] < 1
    assert "class mIoU" in (tmp_path / "b" / "report.md").read_text()


def test_gmae_reads_plain_point_cloud_folders_as_point_mae(tmp_path, capsys, one_line_error):
    g = torch.Generator().manual_seed(0)
    for name in ("cube", "torus"):
        (tmp_path / "clouds" / name).mkdir(parents=True)
        for i in range(3):
            pts = shape_instance(name, 40, g)[0].numpy()
            if i == 0:
                np.savetxt(tmp_path / "clouds" / name / f"{i}.xyz", pts)
            else:
                np.save(tmp_path / "clouds" / name / f"{i}.npy", pts)
    base = [
        "gmae",
        "--data",
        str(tmp_path / "clouds"),
        "--n_points",
        "32",
        "--model.n_groups",
        "4",
        "--model.group_size",
        "8",
        "--model.dim",
        "16",
        "--model.depth",
        "1",
        "--model.heads",
        "2",
        "--pretrain_steps",
        "2",
        "--finetune_steps",
        "2",
        "--batch_size",
        "4",
    ]
    assert app.main([*base, "--model.attributes", "[xyz]", "--out", str(tmp_path / "g")]) == 0
    r = json.loads((tmp_path / "g" / "results.json").read_text())
    assert r["n_train"] + r["n_test"] == 6 and 0 <= r["test_accuracy"] <= 1
    capsys.readouterr()
    assert app.main([*base, "--out", str(tmp_path / "g2")]) == 2  # all attributes asked of plain clouds
    one_line_error("only xyz")
