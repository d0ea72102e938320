"""HLS per-band folders (Prithvi's input): one GeoTIFF per band + Fmask, read as a stack in the declared
order, clouds masked, granules stacked in time order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from warmstart_eo.cli import app
from warmstart_eo.data import DataConfig, load_dataset
from warmstart_eo.hls import find_granules, read_granule, stack_folder, write_hls


@pytest.fixture(scope="module")
def hls_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_hls(tmp_path_factory.mktemp("hls") / "S30", tiles=2, dates=3, size=48)


def _band(granule, name: str) -> np.ndarray:
    with rasterio.open(granule.files[name]) as src:
        return src.read(1)


def test_granules_read_in_the_declared_order_with_fmask(hls_root: Path, tmp_path: Path) -> None:
    granules = find_granules(hls_root)
    assert len(granules) == 6 and {g.tile for g in granules} == {"T10SEG", "T11SEG"}
    assert "HLS.S30.T10SEG.2020200T184919.v2.0.B8A.tif" in {p.name for p in granules[0].files.values()}
    g = granules[0]
    image, _, crs = read_granule(g, ["B12", "B04", "B8A"], (1, 2, 3))
    fmask = _band(g, "Fmask")
    cloud = ((fmask >> 1) & 1) | ((fmask >> 3) & 1) > 0
    assert str(crs) == "EPSG:32610" and image.shape == (3, 48, 48) and 0 < cloud.mean() < 0.2
    for k, band in enumerate(["B12", "B04", "B8A"]):
        assert np.array_equal(image[k][~cloud], _band(g, band)[~cloud])  # the declared order, not the files'
    assert (image[:, cloud] == 0).all()  # clouds and shadows → nodata
    water = ((fmask >> 5) & 1 == 1) & ~cloud
    assert water.any() and (image[:, water] > 0).all()  # bit 5 (water) is not masked by default

    # L30: the Landsat file bands are named as the S2 bands they are harmonised to (B05 → B8A)
    l30 = write_hls(tmp_path / "L30", tiles=1, dates=1, size=32, product="L30")
    (lg,) = find_granules(l30)
    image, _, _ = read_granule(lg, ["B8A", "B11"], ())
    assert np.array_equal(image[0], _band(lg, "B05")) and np.array_equal(image[1], _band(lg, "B06"))

    # time order: a tile's stack is its last frames granules, oldest first
    stacks = stack_folder(hls_root, tmp_path / "stacks", ["B04"], 2, (1, 2, 3))
    with rasterio.open(stacks[0]) as src:
        assert src.descriptions == ("t0:B04", "t1:B04")
        t0 = src.read(1)
    tile = [x for x in granules if x.tile == "T10SEG"]
    ok = t0 > 0
    assert np.array_equal(t0[ok], _band(tile[1], "B04")[ok])


def test_hls_folder_loads_as_prithvi_frames_and_bad_input_is_one_line(
    hls_root: Path, tmp_path: Path, one_line
) -> None:
    chips = load_dataset(hls_root, DataConfig(frames=3, chip_size=16))
    assert chips.bands == ["B02", "B03", "B04", "B8A", "B11", "B12"] and chips.frames == 3
    assert chips.images.shape[1:] == (18, 16, 16) and not chips.has_labels
    assert chips.notes["fmask bits masked"] == "1,2,3"
    assert app.main(["probe", "--data", str(hls_root)]) == 2 and "no labels" in one_line()
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in find_granules(hls_root)[0].files.values():
        if not p.name.endswith(".B11.tif"):
            (broken / p.name).write_bytes(p.read_bytes())
    argv = ["stats", "--data", str(broken), "--out", str(tmp_path / "s.json")]
    assert app.main([*argv, "--data_config.frames", "1"]) == 2
    err = one_line()
    assert "HLS.S30.T10SEG.2020200T184919" in err and "B11" in err
    assert not (tmp_path / "s.json").exists()


@pytest.mark.slow
def test_random_geo_sampler_chips_are_seeded_and_read_the_scene(eo_root: Path, tmp_path: Path, tiny) -> None:
    from rasterio.windows import from_bounds

    from warmstart_eo.samplers import SamplerConfig, random_chips

    cfg = DataConfig(chip_size=16, frames=1)
    a = random_chips(eo_root, cfg, SamplerConfig(kind="random", chips=6, seed=1))
    b = random_chips(eo_root, cfg, SamplerConfig(kind="random", chips=6, seed=1))
    c = random_chips(eo_root, cfg, SamplerConfig(kind="random", chips=6, seed=2))
    assert torch.equal(a.images, b.images) and not torch.equal(a.bounds, c.bounds)  # same boxes on a resume
    assert a.images.shape == (6, 13, 16, 16) and not a.has_labels
    found = 0
    for path in sorted((eo_root / "images").glob("*.tif")):
        with rasterio.open(path) as src:
            left, bottom, right, top = src.bounds
            for box, image in zip(a.bounds.tolist(), a.images, strict=True):
                if box[0] >= left and box[2] <= right and box[1] >= bottom and box[3] <= top:
                    window = from_bounds(*box, transform=src.transform).round_offsets()
                    last = src.read(list(range(2 * 13 + 1, 3 * 13 + 1)), window=window)[:, :16, :16]
                    assert np.array_equal(last, image.numpy())  # the last frame, in file band order
                    found += 1
    assert found == 6
    argv = ["pretrain", "--data", str(eo_root), "--sampler.kind", "random", "--sampler.chips", "8"]
    assert app.main([*argv, "--model.family", "mae", "--out", str(tmp_path / "pre"), *tiny()]) == 0
    assert app.main([*argv[:2], "eurosat", *argv[3:], *tiny()]) == 2
