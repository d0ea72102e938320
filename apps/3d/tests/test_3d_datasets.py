"""Real inputs: every mesh / cloud / splat format, the published dataset layouts, malformed files."""

import json

import numpy as np
import pytest
import torch
import trimesh

from warmstart.errors import DataError
from warmstart_3d.clouds import read_cloud
from warmstart_3d.datasets import detect_layout, load_shape_set
from warmstart_3d.splats import Gaussians, read_ply, write_ply


def _box(colour=None) -> trimesh.Trimesh:
    mesh = trimesh.creation.box(extents=(2.0, 1.0, 0.5))
    if colour is not None:
        mesh.visual.vertex_colors = colour
    return mesh


@pytest.mark.parametrize("suffix", [".stl", ".obj", ".ply", ".glb", ".off"])
def test_meshes_of_every_format_are_sampled_on_their_surface(tmp_path, suffix):
    path = tmp_path / f"box{suffix}"
    _box().export(path)
    cloud = read_cloud(path, n_points=400, seed=0)
    assert cloud.kind == "mesh" and cloud.points.shape == (400, 3)  # a mesh PLY is not its 8 vertices
    half = torch.tensor([1.0, 0.5, 0.25])
    on_face = ((cloud.points.abs() - half).abs() < 1e-4).any(-1)
    assert on_face.all() and (cloud.points.abs() <= half + 1e-4).all()
    # normals are the faces': each normal is an axis, pointing out of the face the point lies on
    assert torch.allclose(cloud.normals.abs().max(-1).values, torch.ones(400), atol=1e-4)
    # area-weighted: the two 2x1 faces hold 2/3.5 of the area
    big = (cloud.points[:, 2].abs() - 0.25).abs() < 1e-4
    assert abs(float(big.float().mean()) - 2 / 3.5) < 0.1


def test_mesh_colours_are_sampled_and_off_comments_and_colours_read(tmp_path):
    _box([255, 0, 0, 255]).export(tmp_path / "red.ply")
    cloud = read_cloud(tmp_path / "red.ply", n_points=50)
    assert cloud.colours is not None and torch.allclose(
        cloud.colours, torch.tensor([1.0, 0, 0]).expand(50, 3)
    )
    tet = "0 0 0\n1 0 0\n0 1 0\n0 0 1\n"
    (tmp_path / "comment.off").write_text(
        f"OFF\n# made by hand\n4 4 0\n{tet}3 0 2 1\n3 0 1 3\n3 0 3 2\n3 1 2 3\n"
    )
    (tmp_path / "glued.off").write_text(f"OFF4 4 0\n{tet}3 0 2 1\n3 0 1 3\n3 0 3 2\n3 1 2 3\n")
    coloured = "".join(f"{ln} 255 0 0 255\n" for ln in tet.splitlines())
    faces = "3 0 2 1 10 20 30\n3 0 1 3 10 20 30\n3 0 3 2 1 2 3\n3 1 2 3 1 2 3\n"
    (tmp_path / "coloured.off").write_text(f"COFF\n4 4 0\n{coloured}{faces}")
    for name in ("comment.off", "glued.off", "coloured.off"):
        pts = read_cloud(tmp_path / name, n_points=64).points
        assert pts.shape == (64, 3) and (pts >= -1e-6).all() and (pts.sum(-1) <= 1 + 1e-5).all()


def test_point_clouds_and_splat_plys(tmp_path):
    from plyfile import PlyData, PlyElement

    g = torch.Generator().manual_seed(0)
    xyz = torch.randn(30, 3, generator=g)
    rec = np.empty(30, dtype=[(k, "f4") for k in ("x", "y", "z", "nx", "ny", "nz")] + [("red", "u1")] * 0)
    for i, k in enumerate("xyz"):
        rec[k] = xyz[:, i].numpy()
        rec[f"n{k}"] = np.eye(3, dtype=np.float32)[0][i]
    PlyData([PlyElement.describe(rec, "vertex")]).write(str(tmp_path / "pts.ply"))
    cloud = read_cloud(tmp_path / "pts.ply")
    assert cloud.kind == "points" and torch.allclose(cloud.points, xyz) and cloud.normals is not None
    np.savetxt(tmp_path / "m.txt", torch.cat([xyz, xyz], 1).numpy(), delimiter=",")  # ModelNet resampled rows
    assert torch.allclose(read_cloud(tmp_path / "m.txt").points, xyz, atol=1e-5)
    np.savetxt(tmp_path / "p.xyz", xyz.numpy())
    np.save(tmp_path / "p.npy", xyz.numpy())
    for name in ("p.xyz", "p.npy"):
        assert torch.allclose(read_cloud(tmp_path / name).points, xyz, atol=1e-5)
    splat = Gaussians.from_activated(
        xyz, torch.full((30, 3), 0.05), torch.full((30,), 0.5), torch.rand(30, 3, generator=g), sh_degree=3
    )
    splat.sh[:, 1:] = torch.randn(30, 15, 3, generator=g)
    write_ply(tmp_path / "splat.ply", splat)
    cloud = read_cloud(tmp_path / "splat.ply")
    assert cloud.kind == "splats" and torch.equal(cloud.points, read_ply(tmp_path / "splat.ply").means)


@pytest.mark.parametrize(
    "name, content, message",
    [
        (
            "header.ply",
            b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
            b"property float z\nend_header\n",
            "not a readable PLY",
        ),
        (
            "empty.ply",
            b"ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\n"
            b"property float z\nend_header\n",
            "no vertices",
        ),
        ("text.ply", b"hello world\n", "not a readable PLY"),
        ("garbage.ply", bytes(range(256)) * 2, "not a readable PLY"),
        ("garbage.off", bytes(range(256)) * 2, "not a readable mesh"),
        ("garbage.stl", bytes(range(256)) * 2, "no triangles"),
        ("garbage.obj", b"\x00\xff" * 100, "no triangles"),
        ("tri.off", b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n", "3 vertices"),
        ("flat.off", b"OFF\n4 2 0\n0 0 0\n1 0 0\n2 0 0\n3 0 0\n3 0 1 2\n3 1 2 3\n", "zero area"),
        ("same.xyz", b"1 1 1\n1 1 1\n1 1 1\n", "same position"),
        ("bad.npy", b"not numpy", "not a readable npy"),
        ("shape.pcd", b"x", "not a readable PCD"),
        (
            "short.pcd",
            b"# .PCD v0.7\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 5\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 5\nDATA ascii\n"
            b"1 2 3\n",
            "header says 5 points, the body holds 1",
        ),
        (
            "intensity.pcd",
            b"# .PCD v0.7\nVERSION 0.7\nFIELDS a b c\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 5\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 5\nDATA ascii\n"
            + b"1 2 3\n" * 5,
            "without x y z",
        ),
        ("shape.las", b"LASFxx", "not a readable LAS"),
        ("garbage.las", bytes(range(256)) * 2, "not a readable LAS"),
        ("shape.vtk", b"x", "unknown shape format"),
    ],
)
def test_malformed_files_are_one_line_naming_the_file(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        read_cloud(tmp_path / name)
    assert name in str(info.value) and len(str(info.value).splitlines()) == 1


@pytest.mark.parametrize("encoding", ["ascii", "binary", "binary_compressed"])
def test_pcd_clouds_with_normals_and_packed_colour(tmp_path, encoding):
    import numpy as np
    from pypcd4 import Encoding, PointCloud

    rng = np.random.default_rng(0)
    xyz = rng.random((30, 3), dtype=np.float32)
    normals = np.tile(np.array([[0.0, 0.0, 2.0]], np.float32), (30, 1))
    rgb8 = rng.integers(0, 256, (30, 3)).astype(np.uint8)
    fields = ("x", "y", "z", "normal_x", "normal_y", "normal_z", "rgb")
    packed = PointCloud.encode_rgb(rgb8)  # float32 bits; ascii files carry them as an integer (TYPE U)
    ascii_int = encoding == "ascii"
    rgb = packed.view(np.uint32) if ascii_int else packed
    data = [*xyz.T, *normals.T, rgb]  # one array per field
    types = (np.float32,) * 6 + ((np.uint32,) if ascii_int else (np.float32,))
    pc = PointCloud.from_points(data, fields, types)
    pc.save(tmp_path / "c.pcd", encoding=Encoding(encoding))
    cloud = read_cloud(tmp_path / "c.pcd")
    assert torch.allclose(cloud.points, torch.from_numpy(xyz))
    assert torch.allclose(cloud.normals, torch.tensor([0.0, 0.0, 1.0]).expand(30, 3))  # unit
    assert torch.allclose(cloud.colours, torch.from_numpy(rgb8 / 255.0).float())
    only_xyz = tmp_path / "xyz.pcd"
    PointCloud.from_xyz_points(xyz).save(only_xyz)
    assert read_cloud(only_xyz).normals is None and read_cloud(only_xyz).colours is None


def test_las_clouds_with_scaled_coordinates_and_colour(tmp_path):
    import laspy
    import numpy as np

    rng = np.random.default_rng(1)
    xyz = rng.random((25, 3)) * 100 + 5000  # survey coordinates: large offsets, mm resolution
    header = laspy.LasHeader(point_format=2, version="1.2")
    header.offsets, header.scales = [5000.0, 5000.0, 5000.0], [0.001, 0.001, 0.001]
    las = laspy.LasData(header)
    las.x, las.y, las.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    red = np.arange(25, dtype=np.uint16) * 2000  # 16-bit colour
    las.red, las.green, las.blue = red, red, np.zeros(25, np.uint16)
    las.write(tmp_path / "s.las")
    cloud = read_cloud(tmp_path / "s.las")
    assert torch.allclose(cloud.points.double(), torch.from_numpy(xyz), atol=2e-3)
    assert torch.allclose(cloud.colours[:, 0], torch.from_numpy(red / 65535.0).float())
    assert torch.equal(cloud.colours[:, 2], torch.zeros(25))
    (tmp_path / "cls" / "a").mkdir(parents=True)
    las.write(tmp_path / "cls" / "a" / "one.las")
    (tmp_path / "cls" / "a" / "broken.las").write_bytes(b"LASF")
    shapes = load_shape_set(tmp_path / "cls", n_points=16, on_bad_file="skip")
    assert (
        len(shapes.labels) == 1 and len(shapes.skipped) == 1
    )  # a folder dataset reads .las and skips bad ones


def _modelnet(root, classes=("chair", "lamp"), per=2):
    for c in classes:
        for split in ("train", "test"):
            (root / c / split).mkdir(parents=True)
            for i in range(per):
                mesh = trimesh.creation.box() if c == "chair" else trimesh.creation.icosphere(1)
                mesh.export(root / c / split / f"{c}_{i + 1:04d}.off")
    return root


def test_modelnet40_layout_by_split_and_the_skip_policy(tmp_path):
    root = _modelnet(tmp_path / "ModelNet40")
    assert detect_layout(root) == "modelnet40"
    train = load_shape_set(root, n_points=64, split="train")
    assert train.classes == ["chair", "lamp"] and train.points.shape == (4, 64, 3)
    assert train.labels.tolist() == [0, 0, 1, 1] and all("/train/" in f for f in train.files)
    assert float(train.points.norm(dim=-1).max()) == pytest.approx(1.0, abs=1e-5)  # unit sphere
    (root / "lamp" / "test" / "lamp_0009.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n")
    with pytest.raises(DataError, match="lamp_0009.off.*on_bad_file skip"):
        load_shape_set(root, n_points=64, split="test")
    test = load_shape_set(root, n_points=64, split="test", on_bad_file="skip")
    assert len(test.labels) == 4 and len(test.skipped) == 1 and "lamp_0009" in test.skipped[0][0]
    with pytest.raises(DataError, match="need at least 100"):  # fewer points than the model's groups
        load_shape_set(root, n_points=64, split="test", name="folder", min_points=100)


def test_modelnet40_resampled_release(tmp_path):
    root = tmp_path / "modelnet40_normal_resampled"
    (root / "bowl").mkdir(parents=True)
    (root / "modelnet40_shape_names.txt").write_text("airplane\nbowl\n")
    (root / "modelnet40_train.txt").write_text("bowl_0001\n")
    (root / "modelnet40_test.txt").write_text("bowl_0002\n")
    for i in (1, 2):
        np.savetxt(root / "bowl" / f"bowl_{i:04d}.txt", np.random.rand(50, 6), delimiter=",")
    shapes = load_shape_set(root, n_points=32, split="test")
    assert shapes.classes == ["airplane", "bowl"] and shapes.labels.tolist() == [1]


def test_scanobjectnn_h5(tmp_path):
    import h5py

    root = tmp_path / "h5_files" / "main_split"
    root.mkdir(parents=True)
    for prefix, labels in (("training", [0, 4, 4]), ("test", [4])):
        with h5py.File(root / f"{prefix}_objectdataset_augmentedrot_scale75.h5", "w") as fh:
            fh["data"] = np.random.rand(len(labels), 100, 3).astype(np.float32)
            fh["label"] = np.array(labels, dtype=np.int64)
    shapes = load_shape_set(root.parent, n_points=64, split="train", variant="_augmentedrot_scale75")
    assert shapes.layout == "scanobjectnn" and shapes.classes == ["bag", "chair"]
    assert shapes.labels.tolist() == [0, 1, 1] and shapes.points.shape == (3, 64, 3)
    with pytest.raises(DataError, match="training_objectdataset.h5"):
        load_shape_set(root.parent, split="train")


def test_shapenetpart_points_and_part_labels(tmp_path):
    root = tmp_path / "shapenetcore_partanno_segmentation_benchmark_v0_normal"
    (root / "train_test_split").mkdir(parents=True)
    (root / "synsetoffset2category.txt").write_text("Airplane\t02691156\nMug\t03797390\n")
    entries = {"train": [], "test": [], "val": []}
    for synset, parts, split in (
        ("02691156", [0, 1, 3], "train"),
        ("03797390", [36, 37], "train"),
        ("03797390", [36, 37], "test"),
    ):
        (root / synset).mkdir(exist_ok=True)
        shape = f"s{len(entries[split])}{split}"
        rows = np.random.rand(60, 7)
        rows[:, 6] = np.array(parts)[np.arange(60) % len(parts)]
        np.savetxt(root / synset / f"{shape}.txt", rows)
        entries[split].append(f"shape_data/{synset}/{shape}")
    for split, names in entries.items():
        (root / "train_test_split" / f"shuffled_{split}_file_list.json").write_text(json.dumps(names))
    shapes = load_shape_set(root, n_points=40, split="train")
    assert shapes.layout == "shapenetpart" and shapes.classes == ["Airplane", "Mug"]
    assert shapes.parts is not None and shapes.parts.shape == (2, 40)
    assert sorted(shapes.parts[0].unique().tolist()) == [0, 1, 2]  # global 0, 1, 3 → the class's own 0..2
    assert len(shapes.part_names["Airplane"]) == 3 and len(shapes.part_names["Mug"]) == 2


def test_shapesplat_folders_of_3dgs_plys(tmp_path):
    g = torch.Generator().manual_seed(0)
    for folder in ("02691156-aaa", "02691156-bbb", "03797390-ccc"):
        means = torch.randn(40, 3, generator=g)
        splat = Gaussians.from_activated(
            means, torch.full((40, 3), 0.02), torch.full((40,), 0.5), torch.rand(40, 3, generator=g)
        )
        write_ply(tmp_path / "gs" / folder / "point_cloud.ply", splat)
    (tmp_path / "gs" / "synsetoffset2category.txt").write_text("Airplane\t02691156\nMug\t03797390\n")
    shapes = load_shape_set(tmp_path / "gs", n_points=32)
    assert shapes.layout == "shapesplat" and shapes.classes == ["Airplane", "Mug"]
    assert len(shapes.splats) == 3 and shapes.labels.tolist() == [0, 0, 1]
    (tmp_path / "gs" / "03797390-ddd").mkdir()
    (tmp_path / "gs" / "03797390-ddd" / "point_cloud.ply").write_text("ply\nbroken")
    with pytest.raises(DataError, match="03797390-ddd"):
        load_shape_set(tmp_path / "gs", n_points=32)
    assert len(load_shape_set(tmp_path / "gs", n_points=32, on_bad_file="skip").skipped) == 1


def test_clip2point_eval_reads_a_modelnet_root_and_bad_files_exit_2(tmp_path, one_line_error):
    from warmstart_3d.cli import app

    root = _modelnet(tmp_path / "mn", per=1)
    (root / "chair" / "test" / "chair_0005.off").write_bytes(bytes(range(256)))
    argv = [
        "gmae",
        "--data",
        str(root),
        "--model.attributes",
        "[xyz]",
        "--n_points",
        "64",
        "--model.n_groups",
        "8",
        "--model.group_size",
        "8",
        "--model.dim",
        "16",
        "--model.depth",
        "1",
        "--pretrain_steps",
        "1",
        "--finetune_steps",
        "1",
        "--batch_size",
        "2",
    ]
    assert app.main([*argv, "--out", str(tmp_path / "a")]) == 2
    one_line_error("chair_0005.off")
    assert not (tmp_path / "a").exists()
    assert app.main([*argv, "--on_bad_file", "skip", "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "results.json").read_text())["skipped_files"] == 1
