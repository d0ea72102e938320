"""HLS per-band folders — Prithvi's own input (arXiv 2310.18660) — read through torchgeo as band stacks.

NASA's Harmonized Landsat Sentinel-2 (HLS v2.0) ships one Cloud-Optimised GeoTIFF per band and granule::

    HLS.S30.T10SEG.2020245T184919.v2.0.B02.tif   … B03, B04, B8A, B11, B12, …, Fmask
    HLS.L30.T10SEG.2020253T183915.v2.0.B02.tif   … B05 (narrow NIR), B06, B07 (SWIR), …, Fmask

:func:`load_hls` finds the granules of a folder (searched recursively), reads each granule's bands in the
declared order through a torchgeo ``RasterDataset`` with ``separate_files`` (one file per band, the band
token of the file name swapped per band), masks what ``Fmask`` flags (cloud, adjacent to cloud, cloud
shadow by default: bits 1, 2, 3) as nodata, stacks the last ``frames`` granules of each tile in time order
(Prithvi's time axis) and hands the stacks to :func:`warmstart_eo.data.load_chips`, so the checks, the grid
sampler, nodata handling, overlap de-duplication and the CRS rules are the folder loader's. Bands are named
as the Sentinel-2 bands they match (:data:`warmstart_eo.bands.HLS_BANDS`): an L30 ``B05`` is ``B8A``.
Left out: HLS's own scale / offset metadata (v2.0 reflectance is DN × 10⁻⁴ like S2, which is what is
assumed), label rasters (an HLS folder is read as an unlabelled pretraining corpus).
"""

from __future__ import annotations

import logging
import re
import tempfile
import warnings
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from warmstart.errors import ConfigError, DataError
from warmstart_eo.bands import HLS_BANDS

log = logging.getLogger(__name__)

HLS_REGEX = re.compile(
    r"^HLS\.(?P<product>[LS]30)\.(?P<tile>T\w{5})\.(?P<date>\d{7}T\d{6})\.v(?P<version>\d+\.\d+)"
    r"\.(?P<band>B\d\d|B8A|Fmask)\.tif$"
)
"""An HLS v2.0 per-band file name."""

S30_BANDS = {
    b: b for b in ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
}
"""HLS S30 file band → Sentinel-2 band (the same names)."""
L30_BANDS = {
    "B01": "B01",
    "B02": "B02",
    "B03": "B03",
    "B04": "B04",
    "B05": "B8A",
    "B06": "B11",
    "B07": "B12",
    "B09": "B10",
}
"""HLS L30 (OLI) file band → the Sentinel-2 band it is harmonised to (L30 B10/B11, thermal, have none)."""
PRODUCT_BANDS = {"S30": S30_BANDS, "L30": L30_BANDS}
FMASK_BITS = (1, 2, 3)
"""Fmask bits masked by default: cloud, adjacent to cloud / shadow, cloud shadow (0 is cirrus, 4 snow/ice,
5 water, 6-7 aerosol level)."""


@dataclass
class Granule:
    product: str
    tile: str
    time: datetime
    files: dict[str, Path]
    """HLS band name (and ``Fmask``) → file."""

    @property
    def name(self) -> str:
        return f"HLS.{self.product}.{self.tile}.{self.time:%Y%jT%H%M%S}"


def find_granules(root: Path) -> list[Granule]:
    """Every HLS granule under ``root`` (per-band files grouped by product, tile and acquisition time)."""
    groups: dict[tuple[str, str, str, str], dict[str, Path]] = defaultdict(dict)
    for path in sorted(Path(root).rglob("HLS.*.tif")):
        m = HLS_REGEX.match(path.name)
        if m:
            groups[(m["product"], m["tile"], m["date"], str(path.parent))][m["band"]] = path
    return [
        Granule(product, tile, datetime.strptime(date, "%Y%jT%H%M%S"), files)
        for (product, tile, date, _), files in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][2]))
    ]


def is_hls_folder(root: Path) -> bool:
    """A folder holding HLS per-band files and no ``images/`` stack folder."""
    root = Path(root)
    return (
        root.is_dir() and not (root / "images").is_dir() and next(iter(find_granules(root)), None) is not None
    )


def _dataset_class(product: str) -> Any:
    """A torchgeo ``RasterDataset`` over one product's per-band files (``separate_files``)."""
    from torchgeo.datasets import RasterDataset

    class HLSBands(RasterDataset):  # type: ignore[misc]
        filename_glob = f"HLS.{product}.*.Fmask.tif"
        filename_regex = HLS_REGEX.pattern
        date_format = "%Y%jT%H%M%S"
        is_image = True
        separate_files = True
        all_bands = (*PRODUCT_BANDS[product], "Fmask")

    return HLSBands


def read_granule(
    granule: Granule, bands: list[str], fmask_bits: tuple[int, ...]
) -> tuple[np.ndarray, Any, Any]:
    """(C, H, W) uint16 stack of ``bands`` (Sentinel-2 names, this order) with Fmask-flagged pixels set to
    0 (nodata), the affine transform and the CRS — read by torchgeo."""
    import rasterio

    table = PRODUCT_BANDS[granule.product]
    to_file = {s2: hls for hls, s2 in table.items()}
    missing = [b for b in bands if b not in to_file or to_file[b] not in granule.files]
    if missing or "Fmask" not in granule.files:
        have = sorted(table[b] for b in granule.files if b in table)
        what = missing or ["Fmask"]
        raise DataError(
            f"{granule.name}: no file for {what} (its files hold {','.join(have)}"
            f"{'' if 'Fmask' in granule.files else ', no Fmask'}); pick data_config.bands from those"
        )
    file_bands = [to_file[b] for b in bands]
    with rasterio.open(granule.files["Fmask"]) as src:
        transform, crs, (h, w) = src.transform, src.crs, src.shape
    ds = _dataset_class(granule.product)(
        paths=[str(granule.files["Fmask"])], bands=[*file_bands, "Fmask"], cache=False
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sample = ds[ds.bounds]  # the whole granule, every band file stacked in the declared order
    stack = sample["image"].numpy()
    stack = stack.reshape(-1, *stack.shape[-2:])[:, :h, :w]
    fmask = stack[-1].astype(np.uint8)
    bad = np.zeros(fmask.shape, dtype=bool)
    for bit in fmask_bits:
        bad |= (fmask >> bit) & 1 == 1
    image = stack[:-1].astype(np.uint16)
    image[:, bad] = 0
    return image, transform, crs


def stack_folder(
    root: Path, out: Path, bands: list[str], frames: int, fmask_bits: tuple[int, ...]
) -> list[Path]:
    """Write one T·C-band stack per tile (its last ``frames`` granules, time-ordered) under ``out/images``,
    band descriptions ``t<k>:<band>``: the layout :func:`warmstart_eo.data.load_chips` reads."""
    import rasterio

    granules = find_granules(root)
    if not granules:
        raise DataError(f"{root}: no HLS per-band files (HLS.S30|L30.<tile>.<date>.v2.0.<band>.tif)")
    by_tile: dict[str, list[Granule]] = defaultdict(list)
    for g in granules:
        by_tile[g.tile].append(g)
    (out / "images").mkdir(parents=True, exist_ok=True)
    written = []
    for tile, items in sorted(by_tile.items()):
        items = sorted(items, key=lambda g: g.time)[-frames:]
        if len(items) < frames:
            log.warning("HLS tile %s: %d granules < data_config.frames=%d, skipped", tile, len(items), frames)
            continue
        cubes = [read_granule(g, bands, fmask_bits) for g in items]
        shapes = {c[0].shape for c in cubes}
        if len(shapes) > 1:
            raise DataError(
                f"HLS tile {tile}: granules of different sizes {sorted(shapes)}; one grid per tile"
            )
        data = np.concatenate([c[0] for c in cubes])
        _, transform, crs = cubes[-1]
        path = out / "images" / f"{items[-1].name}.tif"
        profile = dict(
            driver="GTiff",
            width=data.shape[2],
            height=data.shape[1],
            count=len(data),
            dtype="uint16",
            transform=transform,
            crs=crs,
            nodata=0,
        )
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
            for i, name in enumerate((f"t{t}:{b}" for t in range(frames) for b in bands), start=1):
                dst.set_band_description(i, name)
        written.append(path)
    if not written:
        raise DataError(f"{root}: no HLS tile has {frames} granules; lower data_config.frames")
    return written


def load_hls(root: Path, config: Any) -> Any:
    """An HLS per-band folder as chips: declared bands (default Prithvi's 6), Fmask applied, time-stacked."""
    from warmstart_eo.bands import parse_bands
    from warmstart_eo.data import load_chips

    bands = parse_bands(config.bands) or list(HLS_BANDS)
    if config.file_bands:
        raise ConfigError("data_config.file_bands: HLS files are named per band; use data_config.bands")
    bits = tuple(config.fmask_bits)
    if any(not 0 <= b <= 7 for b in bits):
        raise ConfigError(f"data_config.fmask_bits={list(bits)}: Fmask bits are 0-7")
    with tempfile.TemporaryDirectory(prefix="hls-stacks-") as tmp:
        stack_folder(Path(root), Path(tmp), bands, config.frames, bits)
        chips = load_chips(Path(tmp), config)
    chips.notes["dataset"] = f"HLS per-band folder ({len(find_granules(root))} granules)"
    chips.notes["fmask bits masked"] = ",".join(map(str, bits))
    return chips


def write_hls(
    root: Path, tiles: int = 2, dates: int = 3, size: int = 48, product: str = "S30", seed: int = 0
) -> Path:
    """A tiny HLS folder in the real layout: per-band COG-like GeoTIFFs (every band of the product) + an
    Fmask with a cloud blob (bit 1) and its shadow (bit 3), pixels from the generator's class spectra."""
    import rasterio
    from rasterio.transform import from_origin

    from warmstart_eo.bands import S2_BANDS
    from warmstart_eo.data import SynthConfig, synth_scene

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    table = PRODUCT_BANDS[product]
    rng = np.random.default_rng(seed)
    for k in range(tiles):
        tile = f"T{10 + k:02d}SEG"
        cube, _ = synth_scene(SynthConfig(size=size, frames=dates, seed=seed), k)  # (T, 13, H, W)
        transform = from_origin(500_000.0 + k * (size * 30.0 + 3_000.0), 4_200_000.0, 30.0, 30.0)
        for t in range(dates):
            day = 200 + 8 * t + k
            stem = f"HLS.{product}.{tile}.2020{day:03d}T184919.v2.0"
            profile = dict(
                driver="GTiff",
                width=size,
                height=size,
                count=1,
                dtype="int16",
                transform=transform,
                crs="EPSG:32610",
                nodata=-9999,
            )
            for hls_band, s2 in table.items():
                data = np.round(cube[t, S2_BANDS.index(s2)] * 10_000).astype(np.int16)
                with rasterio.open(root / f"{stem}.{hls_band}.tif", "w", **profile) as dst:
                    dst.write(data[None])
            fmask = np.zeros((size, size), dtype=np.uint8)
            y, x = rng.integers(0, size - size // 4, 2)
            fmask[y : y + size // 6, x : x + size // 6] |= 1 << 1  # cloud
            fmask[y + size // 6 : y + size // 4, x : x + size // 6] |= 1 << 3  # its shadow
            fmask[:, : size // 8] |= 1 << 5  # water bit: not masked by default
            with rasterio.open(
                root / f"{stem}.Fmask.tif", "w", **{**profile, "dtype": "uint8", "nodata": 255}
            ) as dst:
                dst.write(fmask[None])
    return root
