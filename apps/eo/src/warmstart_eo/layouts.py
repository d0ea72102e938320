"""Tiny copies of public EO datasets in their published on-disk layouts, written by our generator.

So the loaders of :mod:`warmstart_eo.datasets` (torchgeo's own classes) run end to end without a download:
EuroSAT / EuroSAT100 / EuroSATSpatial (ImageFolder of 13-band GeoTIFFs + split lists), BigEarthNet v1
(per-band GeoTIFFs at 10/20/60 m + ``*_labels_metadata.json`` + split CSVs, S2 and S1), So2Sat LCZ42 (HDF5
``sen1`` / ``sen2`` / one-hot ``label``), SSL4EO-S12 (``<split>/<7-digit id>/<date>/<band>.tif``, 4 seasons)
and SeCo (``seasonal_contrast_100k/<6-digit id>/<date>/<band>.tif``, 5 seasons). Pixels follow the
generator's class spectra (:data:`warmstart_eo.data.SIGNATURES`) with a smooth texture and noise, so the
labels are learnable. Seed paper: the datasets' own (see :mod:`warmstart_eo.datasets`). Left out: the real
files' exact sizes (chips are small), real acquisition metadata, the checksums (loaders pass
``checksum=False`` as torchgeo's own tests do).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from warmstart_eo.bands import S2_BANDS
from warmstart_eo.data import CRS, SIGNATURES

EUROSAT_CLASSES = (
    "AnnualCrop",
    "Forest",
    "HerbaceousVegetation",
    "Highway",
    "Industrial",
    "Pasture",
    "PermanentCrop",
    "Residential",
    "River",
    "SeaLake",
)
# which generator signature (forest, cropland, water, urban, bare, flood, burn) each EuroSAT class looks like
_EUROSAT_LOOK = (1, 0, 1, 3, 3, 4, 1, 3, 5, 2)


def _spectrum(kind: int, bands: list[str], rng: np.random.Generator) -> np.ndarray:
    """(C,) reflectance of class ``kind`` for S2 ``bands`` (VV / VH: a class-dependent backscatter)."""
    sig = SIGNATURES[kind % len(SIGNATURES)]
    out = [sig[S2_BANDS.index(b)] if b in S2_BANDS else 0.02 + 0.03 * (kind % 5) for b in bands]
    return np.array(out, dtype=np.float32) * (1 + 0.05 * rng.standard_normal())


def chip(kind: int, bands: list[str], size: int, rng: np.random.Generator) -> np.ndarray:
    """(C, size, size) uint16 reflectance × 10⁴ of one class: its spectrum, a texture, noise."""
    texture = 1 + 0.1 * rng.standard_normal((1, size, size)).astype(np.float32)
    image = _spectrum(kind, bands, rng)[:, None, None] * texture
    image += 0.004 * rng.standard_normal(image.shape).astype(np.float32)
    return np.clip(np.round(image * 10_000), 1, 65_535).astype(np.uint16)


def _write(
    path: Path, data: np.ndarray, descriptions: list[str] | None = None, x0: float = 500_000.0
) -> None:
    import rasterio
    from rasterio.transform import from_origin

    path.parent.mkdir(parents=True, exist_ok=True)
    c, h, w = data.shape
    profile = dict(
        driver="GTiff",
        width=w,
        height=h,
        count=c,
        dtype=str(data.dtype),
        crs=CRS,
        transform=from_origin(x0, 5_000_000.0, 10.0, 10.0),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
            for i, name in enumerate(descriptions or [], start=1):
                dst.set_band_description(i, name)


def write_eurosat(
    root: Path, per_class: int = 4, size: int = 16, variant: str = "eurosat", seed: int = 0
) -> Path:
    """``root/ds/images/remote_sensing/otherDatasets/sentinel_2/tif/<Class>/<Class>_<i>.tif`` + split lists
    (``eurosat-train.txt`` …, ``eurosat-100-*`` for EuroSAT100, ``eurosat-spatial-*`` for the spatial split)."""
    from torchgeo.datasets import EuroSAT

    rng = np.random.default_rng(seed)
    base = Path(root) / EuroSAT.base_dir
    prefix = {"eurosat": "eurosat", "eurosat100": "eurosat-100", "spatial": "eurosat-spatial"}[variant]
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    bands = list(EuroSAT.all_band_names)  # torchgeo's file order (B8A last)
    for k, name in enumerate(EUROSAT_CLASSES):
        for i in range(per_class):
            _write(base / name / f"{name}_{i + 1}.tif", chip(_EUROSAT_LOOK[k], bands, size, rng))
            split = (
                "test" if i == per_class - 1 else "val" if (i == per_class - 2 and per_class > 3) else "train"
            )
            splits[split].append(f"{name}_{i + 1}.jpg")  # the real lists name .jpg files
    for split, names in splits.items():
        (Path(root) / f"{prefix}-{split}.txt").write_text("\n".join(names) + "\n")
    return Path(root)


def write_bigearthnet(root: Path, patches: int = 6, seed: int = 0) -> Path:
    """BigEarthNet v1: ``BigEarthNet-v1.0/<patch>/<patch>_<band>.tif`` (10 m bands 12 px, 20 m 6 px, 60 m
    2 px), ``<patch>_labels_metadata.json``; ``BigEarthNet-S1-v1.0/<patch>/<patch>_VV.tif`` / ``_VH.tif``;
    ``bigearthnet-{train,val,test}.csv`` pairing S2 and S1 patch names."""
    from torchgeo.datasets import BigEarthNet

    rng = np.random.default_rng(seed)
    res = {"B02": 12, "B03": 12, "B04": 12, "B08": 12, "B01": 2, "B09": 2}  # others: 20 m → 6 px
    names43 = BigEarthNet.class_sets[43]
    # a few 43-class names that all map into the 19-class set, each tied to one spectrum
    picks = [
        ("Coniferous forest", 0),
        ("Non-irrigated arable land", 1),
        ("Water bodies", 2),
        ("Continuous urban fabric", 3),
        ("Sea and ocean", 2),
        ("Pastures", 1),
    ]
    assert all(p in names43 for p, _ in picks)
    rows: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    s2_bands = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
    for i in range(patches):
        s2 = f"S2A_MSIL2A_20170613T101031_{i}_45"
        s1 = f"S1A_IW_GRDH_1SDV_20170613T165043_33UUP_{i}_45"
        chosen = [picks[i % len(picks)], picks[(i + 2) % len(picks)]]
        labels = [name for name, _ in chosen]
        kind = chosen[0][1]
        for b in s2_bands:
            size = res.get(b, 6)
            _write(Path(root) / "BigEarthNet-v1.0" / s2 / f"{s2}_{b}.tif", chip(kind, [b], size, rng))
        for b in ("VV", "VH"):
            data = (chip(kind, [b], 12, rng).astype(np.float32) / -500.0).astype(np.float32)  # dB-like
            _write(Path(root) / "BigEarthNet-S1-v1.0" / s1 / f"{s1}_{b}.tif", data)
        meta = {"labels": labels, "acquisition_date": "2017-06-13 10:10:31"}
        (Path(root) / "BigEarthNet-v1.0" / s2 / f"{s2}_labels_metadata.json").write_text(json.dumps(meta))
        (Path(root) / "BigEarthNet-S1-v1.0" / s1 / f"{s1}_labels_metadata.json").write_text(json.dumps(meta))
        rows["test" if i % 3 == 2 else "val" if i % 6 == 1 else "train"].append(f"{s2},{s1}")
    for split, lines in rows.items():
        (Path(root) / f"bigearthnet-{split}.csv").write_text("\n".join(lines) + "\n")
    return Path(root)


def write_so2sat(root: Path, per_split: int = 8, seed: int = 0) -> Path:
    """So2Sat LCZ42 v2: ``training.h5`` / ``validation.h5`` / ``testing.h5`` with ``sen1`` (N, 32, 32, 8),
    ``sen2`` (N, 32, 32, 10) float64 reflectance (0-1 as in the release) and one-hot ``label`` (N, 17)."""
    import h5py

    rng = np.random.default_rng(seed)
    s2 = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
    Path(root).mkdir(parents=True, exist_ok=True)
    for name in ("training.h5", "validation.h5", "testing.h5"):
        classes = np.arange(per_split) % 17
        sen2 = np.stack([chip(int(c) % 7, s2, 32, rng).astype(np.float64) / 10_000 for c in classes])
        with h5py.File(Path(root) / name, "w") as f:
            f["sen1"] = rng.standard_normal((per_split, 32, 32, 8))
            f["sen2"] = sen2.transpose(0, 2, 3, 1)  # (N, H, W, C) as released
            f["label"] = np.eye(17)[classes]
    return Path(root)


def _seasons(
    root: Path,
    locations: int,
    seasons: int,
    bands: list[str],
    file_bands: list[str],
    size: int,
    seed: int,
    name: str,
) -> None:
    rng = np.random.default_rng(seed)
    for loc in range(locations):
        kind = loc % 5
        for s in range(seasons):
            date = f"2021{1 + 3 * s:02d}15T101031"
            folder = Path(root) / name.format(loc=loc) / f"{date}_{date}_T33UUP"
            season = 0.6 + 0.4 * np.sin(np.pi * (s + 0.5) / seasons)  # green-up: a seasonal signal
            data = chip(kind, bands, size, rng).astype(np.float32) * (season if kind in (0, 1) else 1.0)
            for b, fb, plane in zip(bands, file_bands, data, strict=True):
                del b
                _write(folder / f"{fb}.tif", plane[None].astype(np.uint16))


def write_ssl4eo_s12(
    root: Path, locations: int = 3, split: str = "s2c", size: int = 16, seed: int = 0
) -> Path:
    """SSL4EO-S12: ``<split>/<0000000>/<date>_<date>_<tile>/<band>.tif`` (``B1`` … ``B12``), 4 seasons."""
    from torchgeo.datasets import SSL4EOS12

    from warmstart_eo.bands import canonical

    file_bands = list(SSL4EOS12.metadata[split]["bands"])
    bands = [canonical(b) or b for b in file_bands]
    _seasons(root, locations, 4, bands, file_bands, size, seed, split + "/{loc:07d}")
    return Path(root)


def write_seco(root: Path, locations: int = 3, size: int = 16, seed: int = 0) -> Path:
    """SeCo 100k: ``seasonal_contrast_100k/<000000>/<date>_<date>_<tile>/<band>.tif``, 5 seasons."""
    from torchgeo.datasets import SeasonalContrastS2

    from warmstart_eo.bands import canonical

    file_bands = list(SeasonalContrastS2.all_bands)
    bands = [canonical(b) or b for b in file_bands]
    _seasons(root, locations, 5, bands, file_bands, size, seed, "seasonal_contrast_100k/{loc:06d}")
    return Path(root)
