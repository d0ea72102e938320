"""Datasets by name through torchgeo's own classes, from a local ``--root`` (``download`` passes through).

Seed papers: the datasets' own — EuroSAT (Helber et al., arXiv 1709.00029; torchgeo's EuroSAT / EuroSAT100
/ EuroSATSpatial splits), BigEarthNet (Sumbul et al., arXiv 1902.06148; 19-class multi-label, S2, S1 or
S1+S2), So2Sat LCZ42 (Zhu et al., arXiv 1912.12171), SSL4EO-S12 (Wang et al., arXiv 2211.07044; the
unlabelled corpus, 4 seasons → Prithvi's frames) and SeCo (Mañas et al., arXiv 2103.16607). Each loader
builds torchgeo's class, names every channel it returns (from torchgeo's band lists or the band file names
it reads, so ``--bands`` picks by name in any order), takes classes and the task type from the dataset
and reads images per item (:class:`~warmstart_eo.data.LazyChips`): nothing is held in memory but labels.
Left out: BigEarthNet v2, So2Sat's Sentinel-1 channels (complex / Lee-filtered, not VV/VH intensities),
torchgeo's DataModules (an unseeded, stateless shuffle the engine cannot resume; normalisation in a Lightning
hook with fixed constants — see the README).
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from warmstart.errors import ConfigError, DataError
from warmstart_eo.bands import canonical, parse_bands
from warmstart_eo.data import DataConfig, LazyChips

log = logging.getLogger(__name__)

SPLITS = {"train": 0, "val": 1, "validation": 1, "test": 2}


def _wrap(what: str, exc: Exception) -> DataError:
    first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
    return DataError(f"{what}: {first}")


def _build(cls: Any, root: Path, what: str, **kwargs: Any) -> Any:
    """torchgeo's class, its 'not found' / assertion errors turned into one line."""
    try:
        return cls(root=str(root), **kwargs)
    except Exception as exc:  # noqa: BLE001 - DatasetNotFoundError, AssertionError, OSError …
        name = type(exc).__name__
        hint = "" if "download" not in kwargs else " (or set data_config.download=true with a network)"
        raise DataError(
            f"--root {root}: {cls.__name__}{what} not found or unreadable there ({name}); put the dataset's "
            f"files in torchgeo's layout{hint}"
        ) from exc


class SplitReader:
    """Picklable: global index → the item of one of several torchgeo datasets (one per split)."""

    def __init__(self, parts: list[Any], offsets: list[int], read: Callable[[Any, int], Any]) -> None:
        self.parts, self.offsets, self.read = parts, offsets, read

    def __call__(self, i: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        k = max(j for j, off in enumerate(self.offsets) if off <= i)
        try:
            return self.read(self.parts[k], i - self.offsets[k]), None
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - a corrupt file mid-run: one line naming the item
            raise _wrap(f"{type(self.parts[k]).__name__} item {i - self.offsets[k]}", exc) from exc


def _image(ds: Any, i: int) -> torch.Tensor:
    return ds[i]["image"].float()


def _pick(names: list[str], config: DataConfig, dataset: str) -> list[str]:
    wanted = parse_bands(config.bands) or names
    missing = [b for b in wanted if b not in names]
    if missing:
        raise ConfigError(f"data_config.bands: {dataset} has no {missing} (it has {','.join(names)})")
    return wanted


def _limit(n: int, config: DataConfig) -> int:
    return n if config.max_items is None else min(n, config.max_items)


# ---------------------------------------------------------------------------------------------------
# EuroSAT: 13 bands, 64 px, 10 classes (ImageFolder under ds/images/…/tif, split files eurosat-*.txt)
# ---------------------------------------------------------------------------------------------------
def _check_files(paths: list[str], config: DataConfig, name: str) -> list[int]:
    """Indices of readable files (every block decoded with ``verify_reads``); bad ones skipped or fatal."""
    import rasterio

    good = []
    for i, path in enumerate(paths):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with rasterio.open(path) as src:
                    if config.verify_reads:
                        src.read()
            good.append(i)
        except rasterio.errors.RasterioError as exc:
            why = f"{path}: not a readable GeoTIFF inside {name} ({str(exc).splitlines()[0][:80]})"
            if config.on_bad_file == "fail":
                raise DataError(why + "; restore the file (or set data_config.on_bad_file=skip)") from exc
            warnings.warn(why + "; skipped", stacklevel=3)
            log.warning("%s; skipped", why)
    return good


def load_eurosat(variant: str, root: Path, config: DataConfig) -> LazyChips:
    from torchgeo import datasets

    cls = {"eurosat": datasets.EuroSAT, "eurosat100": datasets.EuroSAT100}.get(
        variant, datasets.EuroSATSpatial
    )
    names = list(cls.all_band_names)
    bands = _pick(names, config, cls.__name__)
    parts, offsets, index, labels, split, skipped, total = [], [], [], [], [], 0, 0
    for split_name in ("train", "val", "test"):
        if split_name == "val" and not (Path(root) / cls.split_filenames["val"]).is_file():
            continue  # the validation list is optional here (its items would join train anyway)
        ds = _build(
            cls,
            root,
            f" ({split_name} split)",
            split=split_name,
            bands=tuple(bands),
            download=config.download,
            checksum=False,
        )
        paths = [p for p, _ in ds.samples][: _limit(len(ds.samples), config)]
        good = _check_files(paths, config, cls.__name__)
        skipped += len(paths) - len(good)
        parts.append(ds)
        offsets.append(total)
        index += [total + i for i in good]
        labels += [ds.targets[i] for i in good]
        split += [SPLITS[split_name]] * len(good)
        total += len(ds.samples)
        classes = list(ds.classes)
    if not index:
        raise DataError(f"--root {root}: no readable image in {cls.__name__}")
    lab = torch.tensor(labels)
    return LazyChips(
        SplitReader(parts, offsets, _image),
        torch.tensor(index),
        lab,
        torch.nn.functional.one_hot(lab, len(classes)).float(),
        1,
        bands,
        classes=classes,
        tasks=("classify",),
        split=torch.tensor(split),
        skipped_files=skipped,
        notes={"dataset": cls.__name__, "split": "the dataset's own (train+val / test)"},
    )


# ---------------------------------------------------------------------------------------------------
# BigEarthNet v1: 120 px, 19 classes, multi-label (bigearthnet-*.csv; BigEarthNet-v1.0/<patch>/<patch>_B01.tif)
# ---------------------------------------------------------------------------------------------------
def _bigearthnet_bands(ds: Any) -> list[str]:
    """Channel names from the band files torchgeo reads for item 0 (their order is torchgeo's sort)."""
    names = [canonical(Path(p).stem) for p in ds._load_paths(0)]
    if any(n is None for n in names):
        raise DataError(
            f"BigEarthNet band files {ds._load_paths(0)[:3]} … do not end in a band name (_B01 …)"
        )
    return names  # type: ignore[return-value]


def load_bigearthnet(variant: str, root: Path, config: DataConfig) -> LazyChips:
    from torchgeo.datasets import BigEarthNet

    sensor = variant or "s2"
    if sensor not in ("s1", "s2", "all"):
        raise ConfigError(
            f"--data bigearthnet:{variant}: choose bigearthnet:s2, bigearthnet:s1 or bigearthnet:all"
        )
    parts, offsets, index, targets, split, total, names = [], [], [], [], [], 0, None
    for split_name in ("train", "val", "test"):
        ds = _build(
            BigEarthNet,
            root,
            f" ({split_name} split, {sensor})",
            split=split_name,
            bands=sensor,
            num_classes=19,
            download=config.download,
            checksum=False,
        )
        n = _limit(len(ds), config)
        if n and names is None:
            names = _bigearthnet_bands(ds)
        try:
            targets += [ds._load_target(i).float() for i in range(n)]
        except Exception as exc:  # noqa: BLE001 - a missing / broken labels json
            raise _wrap(f"--root {root}: BigEarthNet labels ({split_name})", exc) from exc
        parts.append(ds)
        offsets.append(total)
        index += [total + i for i in range(n)]
        split += [SPLITS[split_name]] * n
        total += len(ds)
    if not index or names is None:
        raise DataError(f"--root {root}: the BigEarthNet split files list no patches")
    bands = _pick(names, config, "BigEarthNet")
    channels = [names.index(b) for b in bands]
    multi = torch.stack(targets)  # (N, 19)
    return LazyChips(
        SplitReader(parts, offsets, _image),
        torch.tensor(index),
        torch.full((len(index),), -1),
        multi,
        1,
        bands,
        channels=channels,
        classes=list(BigEarthNet.class_sets[19]),
        tasks=("multilabel",),
        split=torch.tensor(split),
        notes={"dataset": f"BigEarthNet ({sensor})", "split": "the dataset's own"},
    )


# ---------------------------------------------------------------------------------------------------
# So2Sat LCZ42: 32 px, 17 classes (training.h5 / validation.h5 / testing.h5 with sen1, sen2, label)
# ---------------------------------------------------------------------------------------------------
def load_so2sat(variant: str, root: Path, config: DataConfig) -> LazyChips:
    import h5py
    from torchgeo.datasets import So2Sat

    version = variant or "2"
    if version not in So2Sat.versions:
        raise ConfigError(f"--data so2sat:{variant}: versions are {', '.join(So2Sat.versions)}")
    names = [b.removeprefix("S2_") for b in So2Sat.all_s2_band_names]
    bands = _pick(names, config, "So2Sat (Sentinel-2 channels)")
    parts, offsets, index, labels, split, total = [], [], [], [], [], 0
    for split_name in So2Sat.filenames_by_version[version]:
        ds = _build(
            So2Sat,
            root,
            f" (version {version}, {split_name})",
            version=version,
            split=split_name,
            bands=tuple(f"S2_{b}" for b in bands),
            checksum=False,
        )
        n = _limit(len(ds), config)
        with h5py.File(ds.fn, "r") as f:
            labels.append(torch.from_numpy(f["label"][:n]).argmax(1))
        parts.append(ds)
        offsets.append(total)
        index += [total + i for i in range(n)]
        split += [SPLITS[split_name]] * n
        total += len(ds)
    lab = torch.cat(labels)
    classes = list(So2Sat.classes)
    return LazyChips(
        SplitReader(parts, offsets, _image),
        torch.tensor(index),
        lab,
        torch.nn.functional.one_hot(lab, len(classes)).float(),
        1,
        bands,
        classes=classes,
        tasks=("classify",),
        split=torch.tensor(split),
        notes={"dataset": f"So2Sat v{version}", "split": "the dataset's own"},
    )


# ---------------------------------------------------------------------------------------------------
# unlabelled multi-season corpora: SSL4EO-S12 (root/<split>/<0000000>/<date>/<band>.tif), SeCo
# ---------------------------------------------------------------------------------------------------
def _numbered(folder: Path, width: int) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(
        int(p.name) for p in folder.iterdir() if p.is_dir() and re.fullmatch(rf"\d{{{width}}}", p.name)
    )


class SeasonReader:
    """Picklable: location → its ``frames`` latest seasons, time-ordered, as one (T·C, H, W) stack."""

    def __init__(self, ds: Any, frames: int, kind: str) -> None:
        self.ds, self.frames, self.kind = ds, frames, kind

    def __call__(self, i: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        try:
            if self.kind == "ssl4eo":
                sample = self.ds[i]  # torchgeo draws the seasons; they are put back in time order here
                c = len(self.ds.bands)
                order = torch.argsort(sample["t"])
                image = sample["image"].view(len(order), c, *sample["image"].shape[-2:])[order]
                return image.flatten(0, 1).float(), None
            loc = os.path.join(self.ds.root, self.ds.metadata[self.ds.version]["directory"], f"{i:06}")
            subdirs = sorted(
                (d for d in os.listdir(loc) if os.path.isdir(os.path.join(loc, d))),
                key=lambda d: m.group(0) if (m := re.search(r"\d{8}", d)) else d,
            )[-self.frames :]
            return torch.cat([self.ds._load_patch(loc, d) for d in subdirs]).float(), None
        except Exception as exc:  # noqa: BLE001 - one line naming the location
            raise _wrap(f"{type(self.ds).__name__} location {i}", exc) from exc


@dataclass(frozen=True)
class Seasonal:
    """How one multi-season corpus differs from the other: torchgeo class, variant keyword, seasons, folders."""

    cls: str
    """torchgeo class name."""
    title: str
    """Name in messages."""
    variant: str
    """The class's keyword that the ``name:variant`` suffix sets (``split`` / ``version``)."""
    default: str
    seasons: int
    """Seasons per location."""
    folder: str
    """Location folders under ``--root``: ``{variant}`` or the metadata's ``directory``."""
    width: int
    """Digits of a location folder's name."""
    all_bands: bool = False
    """Pass the class's ``all_bands`` (SeCo defaults to RGB)."""


SEASONAL: dict[str, Seasonal] = {
    "ssl4eo-s12": Seasonal("SSL4EOS12", "SSL4EO-S12", "split", "s2c", 4, "{variant}", 7),
    "seco": Seasonal("SeasonalContrastS2", "SeCo", "version", "100k", 5, "directory", 6, all_bands=True),
}
"""The unlabelled seasonal corpora :func:`load_seasonal` reads."""


def load_seasonal(name: str, variant: str, root: Path, config: DataConfig) -> LazyChips:
    """SSL4EO-S12 or SeCo (:data:`SEASONAL`): each location's ``frames`` seasons, time-ordered, unlabelled."""
    import torchgeo.datasets

    spec = SEASONAL[name]
    cls = getattr(torchgeo.datasets, spec.cls)
    variant = variant or spec.default
    if variant not in cls.metadata:
        choices = " or ".join(f"{name}:{v}" for v in cls.metadata)
        raise ConfigError(f"--data {name}:{variant}: choose {choices}")
    if not 1 <= config.frames <= spec.seasons:
        raise ConfigError(
            f"data_config.frames={config.frames}: {spec.title} has {spec.seasons} seasons per location"
        )
    extra = {"bands": cls.all_bands} if spec.all_bands else {}
    ds = _build(
        cls,
        root,
        f" ({variant})",
        **{spec.variant: variant},
        seasons=config.frames,
        download=config.download,
        checksum=False,
        **extra,
    )
    names = [canonical(b) for b in ds.bands]
    what = f"{spec.title} {variant}"
    bands = _pick(names, config, what)  # type: ignore[arg-type]
    folder = cls.metadata[variant]["directory"] if spec.folder == "directory" else variant
    locations = _numbered(Path(root) / folder, spec.width)
    kind = "ssl4eo" if name == "ssl4eo-s12" else "seco"
    return _unlabelled(SeasonReader(ds, config.frames, kind), locations, names, bands, config, what)  # type: ignore[arg-type]


def _unlabelled(
    reader: SeasonReader,
    locations: list[int],
    names: list[str],
    bands: list[str],
    config: DataConfig,
    what: str,
) -> LazyChips:
    locations = locations[: _limit(len(locations), config)]
    if not locations:
        raise DataError(f"{what}: no location folders under --root")
    c = len(names)
    channels = [t * c + names.index(b) for t in range(config.frames) for b in bands]
    n = len(locations)
    return LazyChips(
        reader,
        torch.tensor(locations),
        torch.full((n,), -1),
        torch.zeros(n, 0),
        config.frames,
        bands,
        channels=channels,
        classes=[],
        tasks=(),
        notes={"dataset": what, "labels": "none (pretraining corpus)"},
    )


DATASETS: dict[str, Callable[[str, Path, DataConfig], LazyChips]] = {
    "eurosat": lambda v, r, c: load_eurosat("eurosat", r, c),
    "eurosat100": lambda v, r, c: load_eurosat("eurosat100", r, c),
    "eurosat-spatial": lambda v, r, c: load_eurosat("spatial", r, c),
    "bigearthnet": load_bigearthnet,
    "so2sat": load_so2sat,
    "ssl4eo-s12": lambda v, r, c: load_seasonal("ssl4eo-s12", v, r, c),
    "seco": lambda v, r, c: load_seasonal("seco", v, r, c),
}
"""Names ``--data`` accepts; ``name:variant`` picks a variant (bigearthnet:s1, so2sat:3_random, ssl4eo-s12:s2a)."""


def load_named(name: str, root: Path | None, config: DataConfig) -> LazyChips:
    base, _, variant = name.partition(":")
    if root is None:
        raise ConfigError(
            f"--data {name} needs --root, the folder holding the dataset's files (torchgeo's layout)"
        )
    if not Path(root).is_dir() and not config.download:
        raise DataError(
            f"--root {root}: no such folder; put the {base} files there or set data_config.download=true"
        )
    return DATASETS[base](variant, Path(root), config)
