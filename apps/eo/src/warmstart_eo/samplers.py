"""torchgeo's ``RandomGeoSampler`` for pretraining on GeoTIFF folders, in a form the engine resumes exactly.

:func:`warmstart_eo.data.load_chips` cuts a folder into a regular grid with torchgeo's ``GridGeoSampler``
(the default, and the only sensible split for labelled chips). For pretraining, MAE-style corpora are
usually read as random crops instead: ``--sampler.kind random`` draws ``--sampler.chips`` boxes with
``torchgeo.samplers.RandomGeoSampler`` from a seeded ``torch.Generator`` — once, up front, after the folder
checks of :func:`~warmstart_eo.data.scan_folder` — and reads them into a map-style
:class:`~warmstart_eo.data.Chips`. The engine's data cursor (a seeded permutation of a map-style dataset,
saved with every checkpoint) then resumes mid-epoch on exactly the chips it would have seen; the sampler
used as a live iterable would not (it has no ``state_dict``, a resumed run would redraw from step 0).
torchgeo 0.10's sampler draws each box's scene from the global RNG (only the offset uses ``generator``), so
the draw runs under a forked global RNG seeded with ``--sampler.seed``. Chips whose nodata fraction exceeds ``data_config.max_nodata`` are dropped, as the grid loader does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from warmstart.errors import ConfigError, DataError
from warmstart_eo.data import NODATA, Chips, DataConfig

log = logging.getLogger(__name__)


@dataclass
class SamplerConfig:
    kind: Literal["grid", "random"] = "grid"
    """grid: torchgeo's GridGeoSampler (every chip once); random: RandomGeoSampler boxes (GeoTIFF folders,
    pretraining only)."""
    chips: int = 1024
    """random: boxes drawn."""
    seed: int = 0
    """random: seed of the sampler's generator (the same boxes on every run and resume)."""


def random_chips(root: Path, config: DataConfig, sampler: SamplerConfig) -> Chips:
    """``sampler.chips`` random boxes of ``config.chip_size`` px from a GeoTIFF folder, unlabelled."""
    from torchgeo.samplers import RandomGeoSampler

    from warmstart_eo.bands import parse_bands
    from warmstart_eo.data import _raster_classes, scan_folder

    if sampler.chips < 1:
        raise ConfigError(f"sampler.chips={sampler.chips} must be ≥ 1")
    report = scan_folder(Path(root), config)
    bands = parse_bands(config.bands) or list(report.bands)
    missing = [b for b in bands if b not in report.bands]
    if missing:
        raise ConfigError(
            f"data_config.bands: {missing} not in {root} (its files hold {','.join(report.bands)})"
        )
    chip = config.chip_size
    if report.min_side < chip:
        raise DataError(f"{root}: scenes of {report.min_side} px are smaller than data.chip_size={chip}")
    images_cls, _ = _raster_classes()
    images_ds = images_cls(paths=[str(p) for p in report.images], crs=report.crs, cache=True)
    sampler_ = RandomGeoSampler(
        images_ds, size=chip, length=sampler.chips, generator=torch.Generator().manual_seed(sampler.seed)
    )
    # torchgeo 0.10 picks each box's scene with torch.multinomial on the global generator (only the offset
    # inside the scene uses ``generator``): draw under a forked, seeded global RNG so the boxes repeat.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(sampler.seed)
        boxes = list(sampler_)
    t_file, c_file = report.frames, len(report.bands)
    keep = [t * c_file + report.bands.index(b) for t in range(t_file - config.frames, t_file) for b in bands]
    images, footprints, dropped = [], [], 0
    for geo in boxes:
        image = images_ds[geo]["image"][keep, :chip, :chip]  # (T·C, h, w)
        nodata = (image == NODATA).all(dim=0)
        if float(nodata.float().mean()) > config.max_nodata:
            dropped += 1
            continue
        if nodata.any():
            fill = image[:, ~nodata].mean(dim=1)
            image = torch.where(nodata, fill[:, None, None], image)
        images.append(image)
        footprints.append((geo[0].start, geo[1].start, geo[0].stop, geo[1].stop))
    if dropped:
        log.warning(
            "random sampler: dropped %d of %d boxes with more than %.0f%% nodata",
            dropped,
            sampler.chips,
            100 * config.max_nodata,
        )
    if not images:
        raise DataError(
            f"{root}: every random box is mostly nodata; lower data.chip_size or raise max_nodata"
        )
    n = len(images)
    return Chips(
        torch.stack(images),
        None,
        torch.full((n,), -1),
        torch.zeros(n, 0),
        config.frames,
        list(bands),
        None,
        len(report.skipped),
        classes=[],
        tasks=(),
        bounds=torch.tensor(footprints, dtype=torch.float64),
        notes={
            "scenes": len(report.images),
            "sampler": f"torchgeo RandomGeoSampler, {n} boxes of {chip} px (seed {sampler.seed})",
            "reprojected files": report.reprojected,
            "file band order": ",".join(report.bands),
        },
    )
