"""Folder inputs a user brings: unlabelled scenes, any chip size, band order, overlapping scenes, a second CRS,
bands by name across encoder and data, ``stats`` targets, and the model format (new and old layouts)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from warmstart.errors import ConfigError, DataError
from warmstart_eo.bands import S2_BANDS
from warmstart_eo.cli import app
from warmstart_eo.data import (
    DataConfig,
    SynthConfig,
    load_chips,
    scene_transform,
    split_chips,
    synth_scene,
    synthesize,
    write_scene,
)
from warmstart_eo.models import Classifier, MaskedAutoencoder, ModelConfig, Segmenter, build_mae, load_model


def test_unlabelled_folder_probe_and_finetune_exit_2(
    eo_root: Path, tmp_path: Path, capsys, tiny, one_line
) -> None:
    root = tmp_path / "unlabelled"
    shutil.copytree(eo_root / "images", root / "images")
    for command in ("probe", "finetune"):
        capsys.readouterr()
        assert app.main([command, "--data", str(root), *(tiny() if command == "finetune" else [])]) == 2
        err = one_line()
        assert "no labels" in err and str(root) in err
    assert not (tmp_path / "runs").exists()  # nothing half-written
    assert app.main(["pretrain", "--data", str(root), "--objective", "soft-contrastive", *tiny()]) == 2
    assert "multi-labels" in one_line()


def test_segmentation_at_a_chip_size_other_than_the_encoders(
    eo_root: Path, tmp_path: Path, capsys, tiny
) -> None:
    # used to crash: 16-px masks against logits resized to the encoder's 32 px
    out = tmp_path / "seg"
    argv = [
        "finetune",
        "--data",
        str(eo_root),
        "--task",
        "segment",
        "--data_config.chip_size",
        "16",
        "--model.family",
        "mae",
        "--out",
        str(out),
        *tiny(),
    ]
    assert app.main(argv) == 0
    assert "miou" in capsys.readouterr().out
    model = load_model(out, kind="eo.segmenter")
    assert isinstance(model, Segmenter) and model.classes == 7


def test_stats_targets(eo_root: Path, tmp_path: Path, capsys, one_line) -> None:
    root = tmp_path / "scenes"
    shutil.copytree(eo_root, root)
    assert app.main(["stats", "--data", str(root)]) == 0  # default: beside the data
    assert len(json.loads((root / "stats.json").read_text())["mean"]) == 13
    capsys.readouterr()
    assert app.main(["stats", "--data", str(root), "--out", str(tmp_path / "missing" / "s.json")]) == 2
    assert "does not exist" in one_line()
    assert not (tmp_path / "missing").exists()


SORTED_ORDER = ["B01", "B10", "B11", "B12", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09"]


def _sorted_order_scene(path: Path, describe: bool = True) -> np.ndarray:
    """A scene stacked in sorted-filename order (B01, B10, B11, B12, B02, …), described as such."""
    image, _ = synth_scene(SynthConfig(size=32, frames=1), 0)
    shuffled = image[:, [S2_BANDS.index(b) for b in SORTED_ORDER]]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_scene(path, shuffled, scene_transform(0, 32))
    with rasterio.open(path, "r+") as dst:
        for i, b in enumerate(SORTED_ORDER, start=1):
            dst.set_band_description(i, b if describe else "")
    return image


def test_band_order_is_read_from_descriptions_and_checked(tmp_path: Path) -> None:
    image = _sorted_order_scene(tmp_path / "sorted" / "images" / "s.tif")
    chips = load_chips(tmp_path / "sorted", DataConfig(chip_size=32))
    assert chips.bands[:5] == ["B01", "B10", "B11", "B12", "B02"]  # the file's order, named
    picked = load_chips(tmp_path / "sorted", DataConfig(chip_size=32, bands=["B02", "B8A"]))
    expected = np.round(image[0][[S2_BANDS.index("B02"), S2_BANDS.index("B8A")]] * 10_000)
    assert np.allclose(picked.images[0].numpy(), expected)  # by name, not by position
    with pytest.raises(ConfigError) as info:  # declared order contradicts the descriptions
        load_chips(tmp_path / "sorted", DataConfig(chip_size=32, file_bands=list(S2_BANDS)))
    assert "B01,B10,B11,B12,B02" in str(info.value) and "B01,B02,B03" in str(info.value)
    _sorted_order_scene(tmp_path / "plain" / "images" / "s.tif", describe=False)
    with pytest.raises(ConfigError, match="B99"):
        load_chips(tmp_path / "plain", DataConfig(chip_size=32, file_bands=["B99"]))
    plain = load_chips(tmp_path / "plain", DataConfig(chip_size=32, file_bands=SORTED_ORDER))  # declared
    assert torch.equal(plain.select_bands(["B02"]).images, picked.select_bands(["B02"]).images)


def test_mixed_band_orders_in_one_folder_name_both(eo_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    shutil.copytree(eo_root, root)
    _sorted_order_scene(root / "images" / "scene_9999.tif")
    with pytest.raises(DataError) as info:
        load_chips(root, DataConfig(chip_size=32, on_bad_file="fail"))
    assert "scene_9999.tif" in str(info.value) and "B01,B10,B11" in str(info.value)


def _overlapping(tmp_path: Path) -> Path:
    """Scene 0, an exact re-acquisition of its footprint, one shifted off the chip grid, and a far scene."""
    root = tmp_path / "overlap"
    synthesize(root, SynthConfig(scenes=1, size=64, frames=1, seed=5))
    for name, shift in (("scene_0001", 0.0), ("scene_0002", 250.0)):
        image, _ = synth_scene(SynthConfig(size=64, frames=1, seed=6), int(shift) // 10)
        from rasterio.transform import from_origin

        write_scene(
            root / "images" / f"{name}.tif", image, from_origin(500_000.0 + shift, 5_000_000.0, 10, 10)
        )
        shutil.copy(root / "labels" / "scene_0000.tif", root / "labels" / f"{name}.tif")
        with rasterio.open(root / "labels" / f"{name}.tif", "r+") as dst:
            dst.transform = from_origin(500_000.0 + shift, 5_000_000.0, 10, 10)
    image, labels = synth_scene(SynthConfig(size=64, frames=1, seed=7), 3)
    from warmstart_eo.data import write_labels

    write_scene(root / "images" / "scene_0003.tif", image, scene_transform(5, 64))
    write_labels(root / "labels" / "scene_0003.tif", labels, scene_transform(5, 64))
    return root


def test_overlapping_scenes_are_deduplicated_and_split_by_geography(tmp_path: Path) -> None:
    root = _overlapping(tmp_path)
    chips = load_chips(root, DataConfig(chip_size=16))
    assert chips.notes["overlapping scene pairs"] == 3  # 0-1 (same footprint), 0-2, 1-2
    assert chips.notes["duplicate chips dropped"] == 16  # scene 1 repeats scene 0's 16 chips exactly
    # scene 2 sits 25 px off the 16-px grid: its chips overlap scene 0's partly, so they are grouped
    assert "geography" in chips.notes["split"]
    naive = load_chips(root, DataConfig(chip_size=16, dedupe=False))
    assert len(naive) == len(chips) + 16
    for seed in range(3):
        train, test = split_chips(chips, split_seed=seed)
        assert len(train) and len(test)
        a, b = train.bounds.numpy(), test.bounds.numpy()
        ix = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
        iy = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
        assert not ((ix > 0) & (iy > 0)).any()  # no test chip overlaps a training chip


def test_a_second_crs_is_reprojected_with_a_warning_or_refused(eo_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "crs"
    shutil.copytree(eo_root, root)
    image, _ = synth_scene(SynthConfig(size=64, frames=3), 9)
    from rasterio.transform import from_origin

    write_scene(
        root / "images" / "scene_9000.tif", image, from_origin(170_000, 5_000_000, 10, 10), crs="EPSG:32634"
    )
    with pytest.warns(UserWarning, match="EPSG:32634 differs from EPSG:32633.*reprojected"):
        chips = load_chips(root, DataConfig(chip_size=32))
    assert chips.notes["reprojected files"] == ["scene_9000.tif"] and len(chips) > 16
    with pytest.raises(DataError, match="scene_9000.tif: CRS EPSG:32634 differs from EPSG:32633"):
        load_chips(root, DataConfig(chip_size=32, on_bad_file="fail"))


def test_a_13_band_satmaepp_finetunes_on_10_bands(eo_root: Path, tmp_path: Path, capsys, tiny) -> None:
    pre = tmp_path / "pre"
    argv = ["pretrain", "--data", str(eo_root), "--model.family", "satmaepp", "--out", str(pre), *tiny()]
    assert app.main(argv) == 0
    assert len(load_model(pre).encoder.tokens.groups) == 4  # 3 SatMAE++ groups + B01/B09/B10
    ten = "[B02,B03,B04,B05,B06,B07,B08,B8A,B11,B12]"
    out = tmp_path / "ft"
    argv = [
        "finetune",
        "--data",
        str(eo_root),
        "--pretrained",
        str(pre),
        "--data_config.bands",
        ten,
        "--out",
        str(out),
        *tiny(),
    ]
    assert app.main(argv) == 0
    text = capsys.readouterr().out
    assert "B01" in text and "B10" in text  # the encoder bands the data lacks are reported
    tuned = load_model(out, kind="eo.classifier")
    assert len(tuned.encoder.tokens.groups) == 3 and tuned.encoder.tokens.ids == [0, 1, 2]
    assert tuned.encoder.config.bands == ten.strip("[]").split(",")


def test_every_eo_model_reloads_with_one_call_and_old_runs_still_load(tmp_path: Path) -> None:
    from dataclasses import asdict

    from safetensors.torch import save_file

    from warmstart_eo.models import Encoder, save_model

    cfg = ModelConfig(family="prithvi", bands=["B02", "B03"], frames=2)
    mae = build_mae(cfg)
    save_model(mae, tmp_path / "mae")
    again = MaskedAutoencoder.from_pretrained(tmp_path / "mae")
    assert all(
        torch.equal(a, b) for a, b in zip(mae.state_dict().values(), again.state_dict().values(), strict=True)
    )
    for model in (Classifier(Encoder(cfg), 5, multilabel=True), Segmenter(Encoder(cfg), 4)):
        folder = save_model(model, tmp_path / type(model).__name__)
        loaded = type(model).from_pretrained(folder)
        assert loaded.classes == model.classes
        assert all(
            torch.equal(a, b)
            for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
        )
    old = tmp_path / "old"  # the layout before warmstart.hub: model.safetensors + model.json
    old.mkdir()
    save_file({k: v.contiguous() for k, v in mae.state_dict().items()}, str(old / "model.safetensors"))
    (old / "model.json").write_text(json.dumps(asdict(cfg)))
    legacy = load_model(old)
    assert legacy.config == cfg and torch.equal(
        legacy.encoder.tokens.proj.weight, mae.encoder.tokens.proj.weight
    )


def test_softcon_continues_an_existing_encoder(eo_root: Path, tmp_path: Path, tiny) -> None:
    pre, cont = tmp_path / "pre", tmp_path / "softcon"
    assert (
        app.main(["pretrain", "--data", str(eo_root), "--model.family", "mae", "--out", str(pre), *tiny()])
        == 0
    )
    argv = [
        "pretrain",
        "--data",
        str(eo_root),
        "--objective",
        "soft-contrastive",
        "--init",
        str(pre),
        "--data_config.bands",
        "[B02,B03,B04,B08]",
        "--out",
        str(cont),
        *tiny(),
    ]
    assert app.main(argv) == 0
    start, after = load_model(pre), load_model(cont)
    assert after.config.bands == ["B02", "B03", "B04", "B08"]
    idx = [S2_BANDS.index(b) for b in after.config.bands]
    w0 = start.encoder.tokens.proj.weight[:, idx]
    assert not torch.equal(w0, after.encoder.tokens.proj.weight)  # trained on from the source's weights ...
    assert (after.encoder.tokens.proj.weight - w0).abs().max() < 0.05  # ... not re-initialised
    assert json.loads((cont / "config.json").read_text())["init"] == str(pre)


def test_the_benchs_last_frame_view_equals_reading_one_frame(eo_root: Path) -> None:
    from warmstart_eo.bench import last_frame

    three, one = (
        load_chips(eo_root, DataConfig(chip_size=32, frames=3)),
        load_chips(eo_root, DataConfig(chip_size=32)),
    )
    view = last_frame(three)
    assert view.frames == 1 and torch.equal(view.images, one.images) and torch.equal(view.labels, one.labels)
