"""The generator writes real GeoTIFFs; torchgeo reads them back; bad files are caught with clear messages."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from warmstart.errors import DataError
from warmstart_eo.data import (
    BANDS,
    CLASSES,
    BandStats,
    DataConfig,
    Preprocess,
    PreprocessConfig,
    SynthConfig,
    compute_stats,
    load_chips,
    scene_transform,
    synth_scene,
    write_scene,
)


def _interior(mask: np.ndarray) -> np.ndarray:
    """Pixels whose 5×5 neighbourhood has the same class (pure, not mixed)."""
    out = mask.copy()
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            out &= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def test_geotiff_has_crs_bands_and_labels(eo_root: Path) -> None:
    red, nir = BANDS.index("B04"), BANDS.index("B08")
    spectra: dict[str, list[np.ndarray]] = {"water": [], "forest": []}
    for i in range(4):
        with rasterio.open(eo_root / "images" / f"scene_{i:04d}.tif") as src:
            assert src.crs is not None and src.crs.to_epsg() == 32633
            assert src.count == 3 * len(BANDS) and src.res == (10.0, 10.0)
            assert src.descriptions[0] == "t0:B01" and src.nodata == 0
            last = src.read().astype(np.float64).reshape(3, 13, 64, 64)[-1]
        with rasterio.open(eo_root / "labels" / f"scene_{i:04d}.tif") as lab:
            labels = lab.read(1)
            assert lab.transform == src.transform and lab.crs == src.crs
        for name in spectra:
            pure = _interior(labels == CLASSES.index(name))
            spectra[name].append(last[:, pure])
    water, forest = (np.concatenate(spectra[k], axis=1) for k in ("water", "forest"))
    assert water.shape[1] > 0 and forest.shape[1] > 0
    # physics of the signatures: water absorbs NIR, vegetation reflects it (red edge)
    assert water[nir].mean() < water[red].mean()
    assert forest[nir].mean() > 3 * forest[red].mean()


def test_events_only_in_last_frame() -> None:
    image, labels = synth_scene(SynthConfig(size=64, frames=3, event_prob=1.0), index=0)  # index 0: flood
    flood = labels == CLASSES.index("flood")
    assert flood.any()
    nir = BANDS.index("B08")
    assert image[0, nir][flood].mean() > 2 * image[-1, nir][flood].mean()  # land before, water after


def test_load_chips_through_torchgeo(eo_root: Path) -> None:
    chips = load_chips(eo_root, DataConfig(chip_size=32, frames=3))
    assert chips.images.shape == (16, 39, 32, 32)  # 4 scenes × 2×2 chips, 3 frames × 13 bands
    with rasterio.open(eo_root / "images" / "scene_0000.tif") as src:
        window = src.read(window=((0, 32), (0, 32))).astype(np.float32)  # top-left chip
    assert any(torch.allclose(chips.images[i], torch.from_numpy(window)) for i in range(len(chips)))
    assert (chips.labels >= 0).all() and chips.multilabels.sum(1).min() >= 1
    one = load_chips(eo_root, DataConfig(chip_size=32, frames=1, bands=["B04", "B08"]))
    assert one.images.shape[1] == 2
    assert torch.equal(one.images, chips.images[:, [26 + 3, 26 + 7]])  # last frame's B04, B08


def test_stats_and_preprocess(eo_root: Path) -> None:
    chips = load_chips(eo_root, DataConfig(chip_size=32))
    stats = compute_stats(chips)
    x = chips.images.double()
    assert np.allclose(stats.mean, x.mean(dim=(0, 2, 3)).numpy())
    normalized = torch.stack(
        [Preprocess(stats, PreprocessConfig(resize=False), 32)(im) for im in chips.images]
    )
    assert normalized.mean(dim=(0, 2, 3)).abs().max() < 1e-3
    assert (normalized.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-2
    resized = Preprocess(stats, PreprocessConfig(), 64)(chips.images[0])
    assert resized.shape == (13, 64, 64)
    assert (
        Preprocess(None, PreprocessConfig(normalize="scale", resize=False), 32)(chips.images[0]).max() <= 1.0
    )


def test_stats_round_trip(tmp_path: Path) -> None:
    s = BandStats(["B01"], [1.0], [2.0], [0.0], [3.0], 32)
    assert BandStats.load(s.save(tmp_path / "stats.json")) == s
    with pytest.raises(DataError, match="stats"):
        BandStats.load(tmp_path / "missing")


def _copy(eo_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(eo_root, root)
    return root


def test_corrupt_and_bad_files_are_skipped_or_fail(eo_root: Path, tmp_path: Path) -> None:
    root = _copy(eo_root, tmp_path)
    (root / "images" / "scene_9000.tif").write_bytes(b"not a tiff")
    image, _ = synth_scene(SynthConfig(size=64, frames=3), 9)
    write_scene(root / "images" / "scene_9001.tif", image, scene_transform(9, 64), crs=None)  # no CRS
    write_scene(root / "images" / "scene_9002.tif", image[:, :5].repeat(1, axis=0), scene_transform(10, 64))
    with pytest.warns(UserWarning):
        chips = load_chips(root, DataConfig(chip_size=32))
    assert chips.skipped_files == 3 and len(chips) == 16
    with pytest.raises(DataError, match="scene_9000.tif"):
        load_chips(root, DataConfig(chip_size=32, on_bad_file="fail"))


def test_misaligned_labels_are_skipped_or_fail(eo_root: Path, tmp_path: Path) -> None:
    root = _copy(eo_root, tmp_path)
    with rasterio.open(root / "labels" / "scene_0001.tif") as src:
        data, profile = src.read(), src.profile
    profile["transform"] = scene_transform(7, 64)  # shifted grid
    with rasterio.open(root / "labels" / "scene_0001.tif", "w", **profile) as dst:
        dst.write(data)
    with pytest.warns(UserWarning, match="labels/scene_0001.tif does not align"):
        chips = load_chips(root, DataConfig(chip_size=32))
    assert chips.skipped_files == 1 and len(chips) == 12  # 3 of 4 scenes × 4 chips
    with pytest.raises(DataError, match="scene_0001.tif.*does not align"):
        load_chips(root, DataConfig(chip_size=32, on_bad_file="fail"))


def _corrupt_compressed(path: Path) -> None:
    """Rewrite ``path`` deflate-compressed and tiled, then overwrite its middle third: the header still
    opens, but blocks fail to decode (the case that used to fail inside torchgeo's read)."""
    with rasterio.open(path) as src:
        data, profile = src.read(), src.profile
    profile.update(compress="deflate", tiled=True, blockxsize=16, blockysize=16)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    raw = path.read_bytes()
    n = len(raw)
    path.write_bytes(raw[: n // 3] + b"\xff" * (n // 3) + raw[2 * n // 3 :])
    with rasterio.open(path) as src:
        assert src.count == profile["count"]  # still opens


def test_resolution_mismatch_and_corrupt_blocks_are_skipped_or_fail(eo_root: Path, tmp_path: Path) -> None:
    from affine import Affine

    root = _copy(eo_root, tmp_path)
    image, _ = synth_scene(SynthConfig(size=64, frames=3), 9)
    write_scene(root / "images" / "scene_9003.tif", image, scene_transform(9, 64) @ Affine.scale(2))  # 20 m
    _corrupt_compressed(root / "images" / "scene_0002.tif")
    _corrupt_compressed(root / "labels" / "scene_0003.tif")
    with pytest.warns(UserWarning) as caught:
        chips = load_chips(root, DataConfig(chip_size=32))
    messages = " | ".join(str(w.message) for w in caught)
    assert "scene_9003.tif: resolution (20.0, 20.0) differs from (10.0, 10.0)" in messages
    assert "scene_0002.tif: not a readable GeoTIFF" in messages
    assert "labels/scene_0003.tif is not a readable GeoTIFF" in messages
    assert chips.skipped_files == 3 and len(chips) == 8  # scenes 0 and 1 remain
    for name in ("scene_0002.tif", "scene_0003.tif", "scene_9003.tif"):
        only = tmp_path / name
        shutil.copytree(eo_root, only)
        for sub in ("images", "labels"):
            if (root / sub / name).exists():
                shutil.copy(root / sub / name, only / sub / name)
        with pytest.raises(DataError, match=name):
            load_chips(only, DataConfig(chip_size=32, on_bad_file="fail"))


def test_nodata_chips_dropped_and_filled(tmp_path: Path) -> None:
    from warmstart_eo.data import synthesize

    root = tmp_path / "nodata"
    synthesize(root, SynthConfig(scenes=1, size=64, frames=1, nodata_prob=1.0))  # left 10 px are nodata
    chips = load_chips(root, DataConfig(chip_size=32, max_nodata=0.5))
    assert len(chips) == 4 and (chips.images > 0).all()  # filled with band means
    assert (chips.masks == -1).any()  # nodata pixels carry no label
    assert len(load_chips(root, DataConfig(chip_size=32, max_nodata=0.1))) == 2
