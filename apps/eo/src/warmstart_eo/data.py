"""Earth-observation data: a procedural Sentinel-2-like generator that writes real GeoTIFFs, a validated
loader through torchgeo's ``RasterDataset`` + ``GridGeoSampler``, per-band statistics, and the
evaluation preprocessing of *Revisiting pre-trained remote sensing model benchmarks: resizing and
normalization matters* (Corley et al., arXiv 2305.13456).

The generator writes, per scene, one multi-temporal GeoTIFF (``T × 13`` uint16 bands, reflectance × 10⁴,
band descriptions ``t<k>:B02`` …, EPSG:32633 at 10 m, nodata 0) — the band-stacked layout of the HLS
multi-temporal crop data Prithvi is fine-tuned on — plus a per-pixel label raster of the last frame. Class
signatures follow textbook spectra (vegetation's red edge, water's NIR absorption, bright flat urban,
rising bare soil, burn scars' low NIR / high SWIR), each class has its own texture (canopy grain, field
rows, flat water, high-contrast urban blocks, coarse soil); crops green up with the season; a flood or a burn
appears only in the last frame, so telling flood from permanent water needs the time series. Scene
labels (EuroSAT-like) are the majority class of a chip; multi-labels (SoftCon) the classes covering at
least 5 % of it. Left out: clouds, atmospheric effects, real HLS band sets and acquisition geometry.

Folders are validated file by file (readable, CRS, band names from the descriptions and their order,
resolution, label alignment, overlapping footprints), read once through torchgeo's ``RasterDataset`` +
``GridGeoSampler`` and held as :class:`Chips`, so a bad file fails (or is skipped) before the first step;
overlapping scenes are de-duplicated and grouped so a split never puts one place on both sides. Named
datasets (:mod:`warmstart_eo.datasets`) are read per item (:class:`LazyChips`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from warmstart.errors import ConfigError, DataError
from warmstart_eo.bands import S2_BANDS

log = logging.getLogger(__name__)

BANDS = S2_BANDS
"""The 13 Sentinel-2 bands, in file order."""
CLASSES: tuple[str, ...] = ("forest", "cropland", "water", "urban", "bare", "flood", "burn")
"""Land-cover classes of the label rasters (flood and burn are last-frame events)."""
CRS = "EPSG:32633"
RESOLUTION = 10.0
NODATA = 0

# Reflectance (0-1) per class and band, B01..B12 (443 … 2190 nm).
SIGNATURES = np.array(
    [
        [0.03, 0.04, 0.08, 0.04, 0.12, 0.30, 0.40, 0.45, 0.46, 0.40, 0.01, 0.22, 0.10],  # forest
        [0.04, 0.05, 0.10, 0.06, 0.15, 0.33, 0.42, 0.48, 0.49, 0.42, 0.01, 0.26, 0.14],  # cropland (green)
        [0.08, 0.07, 0.06, 0.04, 0.03, 0.02, 0.015, 0.01, 0.01, 0.005, 0.001, 0.005, 0.003],  # water
        [0.12, 0.13, 0.15, 0.17, 0.18, 0.19, 0.20, 0.21, 0.21, 0.20, 0.01, 0.25, 0.22],  # urban
        [0.10, 0.12, 0.16, 0.22, 0.25, 0.27, 0.28, 0.30, 0.31, 0.30, 0.01, 0.38, 0.33],  # bare soil
        [0.09, 0.08, 0.08, 0.06, 0.05, 0.04, 0.03, 0.03, 0.03, 0.02, 0.002, 0.02, 0.01],  # flood (turbid)
        [0.04, 0.05, 0.06, 0.08, 0.09, 0.10, 0.11, 0.12, 0.12, 0.12, 0.005, 0.20, 0.22],  # burn scar
    ],
    dtype=np.float32,
)


# ---------------------------------------------------------------------------------------------------
# the generator
# ---------------------------------------------------------------------------------------------------
@dataclass
class SynthConfig:
    scenes: int = 8
    """Number of scenes (one GeoTIFF each, placed side by side on the map)."""
    size: int = 128
    """Scene width and height in pixels."""
    frames: int = 3
    """Acquisitions per scene (time steps, band-stacked in the file)."""
    event_prob: float = 0.6
    """Probability that a scene gets a flood or a burn in its last frame."""
    nodata_prob: float = 0.0
    """Probability that a scene gets a nodata (0) stripe, as at a swath edge."""
    spectral_overlap: float = 0.0
    """0: each base class has its own spectrum; → 1: every base class's spectrum is pulled this far toward
    their mean and every texture gets the same contrast, so a chip's mean spectrum (and per-band spread)
    says little and the class lives in its spatial pattern and seasonal dynamics (the bench's target)."""
    seed: int = 0
    """Seed of the generator."""


def _smooth_field(gen: torch.Generator, n: int, size: int, sigma: float) -> torch.Tensor:
    """``n`` smooth random fields (n, size, size), unit variance, by Gaussian blurring white noise."""
    noise = torch.randn(1, n, size, size, generator=gen)
    radius = int(3 * sigma)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    blurred = F.conv2d(
        F.pad(noise, (radius, radius, 0, 0), mode="circular"),
        kernel.view(1, 1, 1, -1).expand(n, 1, 1, -1),
        groups=n,
    )
    blurred = F.conv2d(
        F.pad(blurred, (0, 0, radius, radius), mode="circular"),
        kernel.view(1, 1, -1, 1).expand(n, 1, -1, 1),
        groups=n,
    )
    blurred = blurred[0] - blurred[0].flatten(1).mean(dim=1).view(n, 1, 1)
    return blurred / blurred.flatten(1).std(dim=1).clamp_min(1e-6).view(n, 1, 1)  # (n, H, W), zero mean


TEXTURES = (
    (1.5, 0.12),  # forest: canopy grain
    (0.0, 0.18),  # cropland: field rows (oriented stripes, per scene)
    (6.0, 0.02),  # water: nearly flat
    (0.6, 0.30),  # urban: high-frequency, high-contrast blocks
    (4.0, 0.10),  # bare soil: coarse undulation
)
"""(blur sigma in px, relative amplitude) of each base class's texture; sigma 0 = stripes."""


def class_textures(
    gen: torch.Generator, size: int, abundance: torch.Tensor, contrast: float | None = None
) -> torch.Tensor:
    """(H, W) multiplicative texture: each class's own spatial pattern, mixed by its abundance (5, H, W), so
    the spatial structure (not only the spectrum) tells classes apart. ``contrast``: one amplitude for all."""
    out = torch.ones(size, size)
    for k, (sigma, amp) in enumerate(TEXTURES):
        amp = amp if contrast is None else contrast
        if sigma == 0.0:
            angle = float(torch.rand(1, generator=gen)) * math.pi
            yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
            field_k = torch.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / 4.0)
        else:
            field_k = _smooth_field(gen, 1, size, sigma=sigma)[0]
        out = out + abundance[k] * amp * field_k
    return out.clamp_min(0.3)


def synth_scene(config: SynthConfig, index: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene: reflectance (T, 13, H, W) float32 in [0, 1] and the last frame's labels (H, W) uint8."""
    gen = torch.Generator().manual_seed(config.seed * 100_003 + index)
    s, t_count = config.size, config.frames
    base_classes = 5  # forest, cropland, water, urban, bare
    logits = _smooth_field(gen, base_classes, s, sigma=s / 10)  # (5, H, W)
    logits += torch.randn(base_classes, 1, 1, generator=gen) * 0.8  # scene-level class preference
    dominant = int(torch.randint(base_classes, (1,), generator=gen))
    logits[dominant] += 1.0
    labels = logits.argmax(0)  # (H, W)
    # mixed pixels: soft abundances blurred across class borders
    abundance = torch.softmax(logits * 10.0, dim=0)  # (5, H, W)
    labels_last = labels.clone()
    event_field = _smooth_field(gen, 1, s, sigma=s / 12)[0]  # (H, W)
    event = None
    if float(torch.rand(1, generator=gen)) < config.event_prob:
        event = ("flood", "burn")[index % 2]
        blob = event_field > 0.3
        if event == "flood":
            hit = blob & ((labels == 0) | (labels == 1) | (labels == 4))
            labels_last[hit] = CLASSES.index("flood")
        else:
            hit = blob & ((labels == 0) | (labels == 1))
            labels_last[hit] = CLASSES.index("burn")
    overlap = config.spectral_overlap
    contrast = None if overlap == 0 else 0.2
    texture = class_textures(gen, s, abundance, contrast)  # (H, W) class-specific spatial texture
    sig = torch.from_numpy(SIGNATURES).clone()  # (7, 13)
    if overlap:
        sig[:base_classes] = (1 - overlap) * sig[:base_classes] + overlap * sig[:base_classes].mean(0)
    bare = sig[4]
    green_up = torch.from_numpy(SIGNATURES[4] - SIGNATURES[1])  # crops' seasonal swing, kept at full size
    frames = []
    for t in range(t_count):
        season = 0.5 - 0.5 * math.cos(2 * math.pi * (t + 1) / (t_count + 1))  # green-up in (0, 1]
        class_sig = sig[:base_classes].clone()
        class_sig[0] = sig[0] * (0.75 + 0.25 * season) + bare * 0.05 * (1 - season)
        if overlap:
            class_sig[1] = sig[1] + (1 - season) * green_up  # crops: bare-soil-like → green
        else:
            class_sig[1] = season * sig[1] + (1 - season) * bare  # crops: bare soil → green
        pixel = torch.einsum("khw,kb->bhw", abundance, class_sig)  # (13, H, W) mixed pixels
        if t == t_count - 1 and event is not None:
            hit_mask = (labels_last >= 5).float()
            pixel = pixel * (1 - hit_mask) + sig[labels_last.clamp_min(5)].permute(2, 0, 1) * hit_mask
        illumination = 1.0 + 0.05 * torch.randn(1, generator=gen)
        noise = 0.004 * torch.randn(13, s, s, generator=gen)
        frames.append((pixel * texture * illumination + noise).clamp(0.0005, 1.0))
    image = torch.stack(frames).numpy()  # (T, 13, H, W)
    if float(torch.rand(1, generator=gen)) < config.nodata_prob:
        image[:, :, :, : s // 6] = 0.0  # a swath edge without data
    return image.astype(np.float32), labels_last.numpy().astype(np.uint8)


def scene_transform(index: int, size: int):
    """Affine transform of scene ``index``: scenes sit side by side, 1 km apart, in UTM 33N."""
    from rasterio.transform import from_origin

    x0 = 500_000.0 + index * (size * RESOLUTION + 1_000.0)
    return from_origin(x0, 5_000_000.0, RESOLUTION, RESOLUTION)


def band_names(frames: int) -> list[str]:
    return [f"t{t}:{b}" for t in range(frames) for b in BANDS]


def write_scene(
    path: Path, image: np.ndarray, transform: Any, crs: str | None = CRS, nodata: int | None = NODATA
) -> None:
    """Write a (T, 13, H, W) reflectance cube as a uint16 GeoTIFF of T·13 bands (reflectance × 10⁴)."""
    import rasterio

    t_count, c, h, w = image.shape
    data = np.round(image.reshape(t_count * c, h, w) * 10_000).astype(np.uint16)
    profile = dict(driver="GTiff", width=w, height=h, count=t_count * c, dtype="uint16", transform=transform)
    if crs is not None:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NotGeoreferencedWarning for the missing-CRS fixture
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
            names = (
                band_names(t_count)
                if c == len(BANDS)
                else [f"t{t}:band{i}" for t in range(t_count) for i in range(c)]
            )
            for i, name in enumerate(names, start=1):
                dst.set_band_description(i, name)
            dst.update_tags(frames=str(t_count), bands=",".join(BANDS))


def write_labels(path: Path, labels: np.ndarray, transform: Any, crs: str | None = CRS) -> None:
    import rasterio

    h, w = labels.shape
    profile = dict(driver="GTiff", width=w, height=h, count=1, dtype="uint8", transform=transform, crs=crs)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(labels[None])
        dst.update_tags(classes=",".join(CLASSES))


def synthesize(root: Path, config: SynthConfig | None = None) -> dict[str, Any]:
    """Write ``root/images/scene_XXXX.tif``, ``root/labels/scene_XXXX.tif`` and ``root/scenes.json``."""
    config = config or SynthConfig()
    if config.scenes < 1 or config.size < 16 or config.frames < 1:
        raise ConfigError("synth: need scenes ≥ 1, size ≥ 16 and frames ≥ 1")
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    counts = np.zeros(len(CLASSES), dtype=np.int64)
    for i in range(config.scenes):
        image, labels = synth_scene(config, i)
        transform = scene_transform(i, config.size)
        write_scene(root / "images" / f"scene_{i:04d}.tif", image, transform)
        write_labels(root / "labels" / f"scene_{i:04d}.tif", labels, transform)
        counts += np.bincount(labels.ravel(), minlength=len(CLASSES))
    meta = {
        "synth": asdict(config),
        "classes": list(CLASSES),
        "bands": list(BANDS),
        "pixels": counts.tolist(),
    }
    (root / "scenes.json").write_text(json.dumps(meta, indent=2))
    log.info("wrote %d scenes to %s", config.scenes, root)
    return meta


# ---------------------------------------------------------------------------------------------------
# validation + loading through torchgeo
# ---------------------------------------------------------------------------------------------------
@dataclass
class DataConfig:
    bands: list[str] | None = None
    """Bands to use, by name, in this order (B01 … B12, B8A, VV, VH, or a set: s2, s2-l2a, hls, s1, s1s2);
    default: every band the data holds (with --pretrained: the bands the encoder and the data share)."""
    file_bands: list[str] | None = None
    """Band order of the GeoTIFFs, for files without band descriptions (default: the descriptions; files
    without them and 13·T bands are read as B01 … B12 in wavelength order). Checked against descriptions."""
    frames: int = 1
    """Time steps to use: the last N acquisitions of each file / the N seasons of a dataset (Prithvi > 1)."""
    chip_size: int = 32
    """Chip size in pixels read by torchgeo's grid sampler."""
    stride: int | None = None
    """Grid stride in pixels (default: chip_size, non-overlapping)."""
    on_bad_file: Literal["skip", "fail"] = "skip"
    """A corrupt / inconsistent file (or a second CRS): skip it (reproject) with a warning, or fail."""
    max_nodata: float = 0.25
    """Drop chips whose nodata fraction exceeds this; remaining nodata pixels get the band mean."""
    verify_reads: bool = True
    """Decode every block of every image and label file while scanning, so a file whose header opens but
    whose (compressed) data is corrupt is skipped / fails here, by name, instead of inside torchgeo."""
    dedupe: bool = True
    """Drop chips whose footprint repeats another's (overlapping scenes on one grid). Chips that still
    overlap are kept on one side of the train / test split (split by geography)."""
    download: bool = False
    """Named datasets: let torchgeo download missing files into --root (needs a network)."""
    max_items: int | None = None
    """Named datasets: use at most this many items per split (a quick look at a large dataset)."""
    fmask_bits: list[int] = field(default_factory=lambda: [1, 2, 3])
    """HLS per-band folders: Fmask bits whose pixels become nodata (1 cloud, 2 adjacent, 3 shadow)."""


@dataclass
class ScanReport:
    images: list[Path]
    labels: dict[Path, Path]
    frames: int
    skipped: list[tuple[Path, str]]
    min_side: int
    bands: list[str] = field(default_factory=list)
    """Band order of the files (one frame)."""
    crs: Any = None
    reprojected: list[str] = field(default_factory=list)
    """Files in another CRS, reprojected to ``crs``."""
    overlaps: list[tuple[str, str]] = field(default_factory=list)
    """Pairs of files whose footprints intersect."""
    classes: list[str] | None = None


def _label_path(root: Path, image: Path) -> Path:
    return root / "labels" / image.name


def file_band_layout(descriptions: tuple[str | None, ...]) -> tuple[list[str], int] | None:
    """Bands (one frame) and frames from a file's band descriptions (``t<k>:<band>`` or ``<band>``).

    None when the descriptions do not name every band. Raises when frames disagree on the band order.
    """
    from warmstart_eo.bands import canonical, split_time

    if not descriptions or any(not d for d in descriptions):
        return None
    parsed = [split_time(d) for d in descriptions]  # type: ignore[arg-type]
    names = [canonical(band) for _, band in parsed]
    if any(n is None for n in names):
        return None
    times = [t if t is not None else 0 for t, _ in parsed]
    frames = len(set(times))
    per_frame: dict[int, list[str]] = {}
    for t, n in zip(times, names, strict=True):
        per_frame.setdefault(t, []).append(n)  # type: ignore[arg-type]
    layouts = list(per_frame.values())
    if any(lay != layouts[0] for lay in layouts) or sorted(times) != times:
        raise DataError(f"band descriptions {list(descriptions)[:6]}…: frames do not repeat one band order")
    return layouts[0], frames


def _overlapping_pairs(bounds: np.ndarray) -> list[tuple[int, int]]:
    """Index pairs of boxes (N, 4: minx, miny, maxx, maxy) whose interiors intersect."""
    minx, miny, maxx, maxy = (bounds[:, i] for i in range(4))
    ix = np.minimum(maxx[:, None], maxx[None]) - np.maximum(minx[:, None], minx[None])
    iy = np.minimum(maxy[:, None], maxy[None]) - np.maximum(miny[:, None], miny[None])
    hit = np.triu((ix > 1e-6) & (iy > 1e-6), k=1)
    return [(int(a), int(b)) for a, b in zip(*np.nonzero(hit), strict=True)]


def scan_folder(root: Path, config: DataConfig) -> ScanReport:
    """Check every GeoTIFF before torchgeo sees it: readable, CRS, band names and order, resolution,
    label alignment, overlapping footprints.

    Problems with one file are skipped with a warning (``on_bad_file=skip``) or raised (``fail``); a file in
    a second CRS is reprojected with a warning naming both (``fail``: refused); a folder with no usable
    file always raises.
    """
    import rasterio
    from rasterio.warp import transform_bounds

    from warmstart_eo.bands import parse_bands

    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such folder; create one with `warmstart-eo data-synth --out {root}`")
    image_dir = root / "images" if (root / "images").is_dir() else root
    files = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
    if not files:
        raise DataError(
            f"{image_dir}: no .tif files; point --data at a folder of GeoTIFFs (images/ + labels/)"
        )
    declared = parse_bands(config.file_bands, "data_config.file_bands")
    good: list[Path] = []
    sides: list[int] = []
    footprints: list[tuple[float, float, float, float]] = []
    labels: dict[Path, Path] = {}
    skipped: list[tuple[Path, str]] = []
    reprojected: list[str] = []
    ref: dict[str, Any] = {}
    classes: list[str] | None = None

    def bad(path: Path, why: str) -> None:
        if config.on_bad_file == "fail":
            raise DataError(f"{path}: {why} (set data_config.on_bad_file=skip to skip such files)")
        warnings.warn(f"{path}: {why}; skipped", stacklevel=3)
        log.warning("%s: %s; skipped", path, why)
        skipped.append((path, why))

    def read_header(path: Path) -> dict[str, Any]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with rasterio.open(path) as src:
                if config.verify_reads:
                    for _, window in src.block_windows(1):
                        src.read(window=window)  # decodes the block of every band
                return dict(
                    crs=src.crs,
                    res=src.res,
                    count=src.count,
                    bounds=tuple(src.bounds),
                    shape=src.shape,
                    descriptions=src.descriptions,
                    tags=src.tags(),
                )

    for path in files:
        try:
            h = read_header(path)
        except rasterio.errors.RasterioError as exc:
            bad(path, f"not a readable GeoTIFF ({str(exc).splitlines()[0][:80]})")
            continue
        if h["crs"] is None:
            bad(path, "has no CRS; write the file with a coordinate reference system (e.g. EPSG:32633)")
            continue
        try:
            layout = file_band_layout(h["descriptions"])
        except DataError as exc:
            bad(path, str(exc))
            continue
        if layout is not None and declared is not None and layout[0] != declared:
            raise ConfigError(
                f"{path}: its band descriptions say the order is {','.join(layout[0])} but "
                f"data_config.file_bands says {','.join(declared)}; fix the files' band order or file_bands"
            )
        if layout is None:
            per = declared or list(BANDS)
            if h["count"] % len(per):
                bad(
                    path,
                    f"has {h['count']} bands and no band descriptions; name its band order with "
                    f"data_config.file_bands (assumed {len(per)} per frame: {','.join(per)})",
                )
                continue
            layout = (per, h["count"] // len(per))
            if declared is None and not ref:
                log.warning("%s has no band descriptions; reading it as %s per frame", path, ",".join(per))
        bands_f, frames_f = layout
        if not ref:
            ref = {"bands": bands_f, "frames": frames_f, "res": h["res"], "crs": h["crs"], "name": path.name}
        if bands_f != ref["bands"]:
            bad(
                path,
                f"band order {','.join(bands_f)} differs from {','.join(ref['bands'])} of {ref['name']}; "
                "write every file with one band order",
            )
            continue
        if frames_f != ref["frames"]:
            bad(
                path,
                f"has {frames_f} frames but {ref['name']} has {ref['frames']}; all files need the same frames",
            )
            continue
        if h["crs"] != ref["crs"]:
            if config.on_bad_file == "fail":
                raise DataError(
                    f"{path}: CRS {h['crs']} differs from {ref['crs']} of {ref['name']}; reproject the files "
                    "to one CRS (or set data_config.on_bad_file=skip to reproject on the fly)"
                )
            msg = f"{path}: CRS {h['crs']} differs from {ref['crs']} of {ref['name']}; reprojected to {ref['crs']}"
            warnings.warn(msg, stacklevel=2)
            log.warning(msg)
            reprojected.append(path.name)
        elif not np.allclose(h["res"], ref["res"]):
            bad(
                path,
                f"resolution {h['res']} differs from {ref['res']} of {ref['name']}; resample the files to one resolution",
            )
            continue
        label = _label_path(root, path)
        if label.exists():
            try:
                lh = read_header(label)
            except rasterio.errors.RasterioError as exc:
                bad(
                    path,
                    f"its label raster {label} is not a readable GeoTIFF ({str(exc).splitlines()[0][:60]})",
                )
                continue
            same_bounds = np.allclose(lh["bounds"], h["bounds"])
            if lh["crs"] != h["crs"] or lh["shape"] != h["shape"] or not same_bounds:
                bad(
                    path,
                    f"its label raster {label} does not align (crs {lh['crs']} vs {h['crs']}, shape {lh['shape']} "
                    f"vs {h['shape']}, bounds {'equal' if same_bounds else 'differ'}); write labels on the image's grid",
                )
                continue
            if classes is None and lh["tags"].get("classes"):
                classes = lh["tags"]["classes"].split(",")
            labels[path] = label
        left, bottom, right, top = h["bounds"]
        if h["crs"] != ref["crs"]:
            left, bottom, right, top = transform_bounds(h["crs"], ref["crs"], left, bottom, right, top)
        footprints.append((left, bottom, right, top))
        good.append(path)
        sides.append(min(h["shape"]))
    if not good:
        raise DataError(
            f"{image_dir}: none of {len(files)} GeoTIFFs is usable"
            + (f" ({skipped[0][0].name}: {skipped[0][1]})" if skipped else "")
        )
    if config.frames > ref["frames"]:
        raise ConfigError(
            f"data.frames={config.frames} but the files hold {ref['frames']} time step(s); lower data.frames"
        )
    overlaps = [(good[a].name, good[b].name) for a, b in _overlapping_pairs(np.array(footprints))]
    if overlaps:
        log.warning("%d pair(s) of scenes overlap (%s & %s …)", len(overlaps), *overlaps[0])
    if skipped:
        log.warning("skipped %d of %d files in %s", len(skipped), len(files), image_dir)
    return ScanReport(
        good,
        labels,
        ref["frames"],
        skipped,
        min(sides),
        list(ref["bands"]),
        ref["crs"],
        reprojected,
        overlaps,
        classes,
    )


def resize_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Nearest-neighbour resize of a (h, w) label mask (−1 = no label) to (size, size)."""
    if mask.dim() != 2 or mask.shape[-1] == size:
        return mask
    return F.interpolate(mask[None, None].float(), size=(size, size), mode="nearest")[0, 0].long()


class EOChips(torch.utils.data.Dataset):
    """What every loader returns: items ``{"image" (T·C, h, w) raw, "label", "multilabel"[, "mask"]}``.

    ``labels`` (N,) scene class (−1: none) and ``multilabels`` (N, K) are held for every item (small);
    images are held (:class:`Chips`) or read per item (:class:`LazyChips`). ``classes`` and ``tasks``
    come from the data; ``groups`` (N,) puts overlapping chips in one group (split by geography);
    ``split`` (N,) is the dataset's own split (0 train, 1 val, 2 test) where it has one.
    """

    labels: torch.Tensor
    multilabels: torch.Tensor
    frames: int
    bands: list[str]
    transform: Any
    classes: list[str]
    tasks: tuple[str, ...]
    groups: torch.Tensor | None
    split: torch.Tensor | None
    notes: dict[str, Any]
    skipped_files: int

    def raw(self, i: int) -> tuple[torch.Tensor, torch.Tensor | None]:  # image (T·C, h, w), mask (h, w)
        raise NotImplementedError

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image, mask = self.raw(int(i))
        if self.transform is not None:
            image = self.transform(image)
        item = {"image": image, "label": self.labels[i], "multilabel": self.multilabels[i]}
        if mask is not None:
            item["mask"] = resize_mask(mask, image.shape[-1])
        return item

    @property
    def channel_names(self) -> list[str]:
        from warmstart_eo.bands import channel_names

        return channel_names(self.bands, self.frames)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def has_labels(self) -> bool:
        return bool((self.labels >= 0).any()) or bool(self.multilabels.sum() > 0)

    def band_index(self, bands: list[str]) -> list[int]:
        """Channel indices of ``bands`` (every frame) in this dataset's (T·C) stack."""
        missing = [b for b in bands if b not in self.bands]
        if missing:
            raise ConfigError(f"bands {missing} are not in the data (it has {','.join(self.bands)})")
        c = len(self.bands)
        return [t * c + self.bands.index(b) for t in range(self.frames) for b in bands]

    def subset(self, index: torch.Tensor | list[int]) -> EOChips:
        raise NotImplementedError

    def with_transform(self, transform: Any) -> EOChips:
        raise NotImplementedError

    def select_bands(self, bands: list[str]) -> EOChips:
        raise NotImplementedError


@dataclass(eq=False)
class Chips(EOChips):
    """Chips held in memory: raw reflectance, labels; ``transform`` (a :class:`Preprocess`) applied per item.

    ``images`` (N, T·C, h, w) float32 reflectance × 10⁴ (time-major), ``masks`` (N, h, w) int64 (-1 where
    no label), ``labels`` (N,) scene class, ``multilabels`` (N, K) float.
    """

    images: torch.Tensor
    masks: torch.Tensor | None
    labels: torch.Tensor
    multilabels: torch.Tensor
    frames: int
    bands: list[str]
    transform: Any = None
    skipped_files: int = 0
    classes: list[str] = field(default_factory=lambda: list(CLASSES))
    tasks: tuple[str, ...] = ("classify", "multilabel", "segment")
    groups: torch.Tensor | None = None
    split: torch.Tensor | None = None
    bounds: torch.Tensor | None = None
    """(N, 4) chip footprints (minx, miny, maxx, maxy) in the data's CRS, where known."""
    notes: dict[str, Any] = field(default_factory=dict)

    def raw(self, i: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.images[i], None if self.masks is None else self.masks[i]

    def _replace(self, **kw: Any) -> Chips:
        fields = {f: getattr(self, f) for f in self.__dataclass_fields__}
        return Chips(**(fields | kw))

    def subset(self, index: torch.Tensor | list[int]) -> Chips:
        index = torch.as_tensor(index, dtype=torch.long)
        pick = {
            k: (None if getattr(self, k) is None else getattr(self, k)[index])
            for k in ("images", "masks", "labels", "multilabels", "groups", "split", "bounds")
        }
        return self._replace(**pick)

    def with_transform(self, transform: Any) -> Chips:
        return self._replace(transform=transform)

    def select_bands(self, bands: list[str]) -> Chips:
        if list(bands) == list(self.bands):
            return self
        return self._replace(images=self.images[:, self.band_index(bands)], bands=list(bands))


@dataclass(eq=False)
class LazyChips(EOChips):
    """Items read per call from ``reader(i)`` → (T·C_reader, h, w), then ``channels`` picked: a large
    dataset is never held in memory (each DataLoader worker reads its own items)."""

    reader: Any
    """Picklable callable: source index → (image (T·C, h, w) float tensor, mask (h, w) | None)."""
    index: torch.Tensor
    labels: torch.Tensor
    multilabels: torch.Tensor
    frames: int
    bands: list[str]
    channels: list[int] | None = None
    transform: Any = None
    skipped_files: int = 0
    classes: list[str] = field(default_factory=list)
    tasks: tuple[str, ...] = ("classify",)
    groups: torch.Tensor | None = None
    split: torch.Tensor | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def raw(self, i: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        image, mask = self.reader(int(self.index[i]))
        if self.channels is not None:
            image = image[self.channels]
        return image.float(), mask

    def _replace(self, **kw: Any) -> LazyChips:
        fields = {f: getattr(self, f) for f in self.__dataclass_fields__}
        return LazyChips(**(fields | kw))

    def subset(self, index: torch.Tensor | list[int]) -> LazyChips:
        index = torch.as_tensor(index, dtype=torch.long)
        pick = {
            k: (None if getattr(self, k) is None else getattr(self, k)[index])
            for k in ("index", "labels", "multilabels", "groups", "split")
        }
        return self._replace(**pick)

    def with_transform(self, transform: Any) -> LazyChips:
        return self._replace(transform=transform)

    def select_bands(self, bands: list[str]) -> LazyChips:
        if list(bands) == list(self.bands):
            return self
        picked = self.band_index(bands)
        base = self.channels if self.channels is not None else None
        channels = [base[i] for i in picked] if base is not None else picked
        return self._replace(channels=channels, bands=list(bands))


def _raster_classes():
    """torchgeo ``RasterDataset`` subclasses for our layout (built lazily: torchgeo imports take seconds)."""
    from torchgeo.datasets import RasterDataset

    class EOImages(RasterDataset):
        filename_regex = r"^(?P<name>.+)\.tiff?$"
        is_image = True

        @property
        def dtype(self) -> torch.dtype:
            return torch.float32

    class EOLabels(RasterDataset):
        filename_regex = r"^(?P<name>.+)\.tiff?$"
        is_image = False

    return EOImages, EOLabels


def _geo_groups(bounds: torch.Tensor) -> torch.Tensor:
    """Connected components of chips whose footprints intersect (union-find): one group id per chip."""
    parent = list(range(len(bounds)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in _overlapping_pairs(bounds.double().numpy()):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = [find(i) for i in range(len(bounds))]
    _, ids = np.unique(np.array(roots), return_inverse=True)
    return torch.from_numpy(ids.astype(np.int64))


def load_chips(root: Path, config: DataConfig | None = None) -> Chips:
    """Validate the folder, index it with torchgeo and read every chip of a ``GridGeoSampler`` once."""
    from torchgeo.samplers import GridGeoSampler

    from warmstart_eo.bands import parse_bands

    config = config or DataConfig()
    report = scan_folder(root, config)
    bands = parse_bands(config.bands) or list(report.bands)
    missing = [b for b in bands if b not in report.bands]
    if missing:
        raise ConfigError(
            f"data_config.bands: {missing} not in {root} (its files hold {','.join(report.bands)})"
        )
    EOImages, EOLabels = _raster_classes()
    images_ds = EOImages(paths=[str(p) for p in report.images], crs=report.crs, cache=True)
    label_files = [str(report.labels[p]) for p in report.images if p in report.labels]
    labels_ds = EOLabels(paths=label_files, crs=report.crs, cache=True) if label_files else None
    chip, stride = config.chip_size, config.stride or config.chip_size
    # torchgeo reads tiles of several chips at once (one rasterio merge per tile, not per chip); the tiles
    # are cut into chips here. Pixels outside a scene come back as nodata and are dropped below.
    if report.min_side < chip:
        raise DataError(f"{root}: scenes of {report.min_side} px are smaller than data.chip_size={chip}")
    per_tile = max(1, min(256 // stride, (report.min_side - chip) // stride + 1))
    tile = stride * (per_tile - 1) + chip
    sampler = GridGeoSampler(images_ds, size=tile, stride=stride * per_tile)
    t_file, c_file = report.frames, len(report.bands)
    keep_bands = [
        t * c_file + report.bands.index(b) for t in range(t_file - config.frames, t_file) for b in bands
    ]
    res_x, res_y = images_ds.res
    images, masks, boxes, dropped = [], [], [], 0
    for geo in sampler:
        x_slice, y_slice = geo[0], geo[1]
        image = images_ds[geo]["image"]  # (T_file·C_file, H, W)
        label = torch.full(image.shape[-2:], -1, dtype=torch.long)
        if labels_ds is not None:
            with contextlib.suppress(IndexError):
                label = labels_ds[geo]["mask"].long().reshape(image.shape[-2:])
        height, width = image.shape[-2:]
        tile_nodata = (image == NODATA).all(dim=0)  # (H, W)
        for y in range(0, height - chip + 1, stride):
            for x in range(0, width - chip + 1, stride):
                window = image[keep_bands, y : y + chip, x : x + chip]  # (T·C, h, w)
                nodata = tile_nodata[y : y + chip, x : x + chip]  # (h, w)
                if bool(nodata.all()):
                    continue  # outside every scene
                if float(nodata.float().mean()) > config.max_nodata:
                    dropped += 1
                    continue
                if nodata.any():
                    fill = window[:, ~nodata].mean(dim=1)  # (T·C,) band means of the valid pixels
                    window = torch.where(nodata, fill[:, None, None], window)
                mask = label[y : y + chip, x : x + chip]
                images.append(window)
                masks.append(torch.where(nodata, torch.full_like(mask, -1), mask))
                left, top = x_slice.start + x * res_x, y_slice.stop - y * res_y
                boxes.append((left, top - chip * res_y, left + chip * res_x, top))
    if dropped:
        log.warning("dropped %d chips with more than %.0f%% nodata", dropped, 100 * config.max_nodata)
    if not images:
        raise DataError(f"{root}: no chip of {config.chip_size} px fits the scenes; lower data.chip_size")
    bounds = torch.tensor(boxes, dtype=torch.float64)  # (N, 4)
    keep = torch.arange(len(images))
    duplicates = 0
    if config.dedupe and report.overlaps:
        _, first = np.unique(np.round(bounds.numpy(), 3), axis=0, return_index=True)
        keep = torch.from_numpy(np.sort(first))
        duplicates = len(images) - len(keep)
        if duplicates:
            log.warning("dropped %d duplicate chips of overlapping scenes", duplicates)
    image_t = torch.stack([images[i] for i in keep])  # (N, T·C, h, w)
    mask_t = torch.stack([masks[i] for i in keep])  # (N, h, w)
    bounds = bounds[keep]
    classes = report.classes or (list(CLASSES) if label_files else [])
    if label_files and int(mask_t.max()) >= len(classes):
        classes = [f"class_{k}" for k in range(int(mask_t.max()) + 1)]
    labels, multilabels = scene_labels(mask_t, max(1, len(classes)))
    groups = _geo_groups(bounds)
    notes = {
        "scenes": len(report.images),
        "overlapping scene pairs": len(report.overlaps),
        "duplicate chips dropped": duplicates,
        "reprojected files": report.reprojected,
        "split": "by geography (overlapping chips on one side)"
        if int(groups.max()) + 1 < len(groups)
        else "random chips (no footprints overlap)",
        "file band order": ",".join(report.bands),
    }
    return Chips(
        image_t,
        mask_t,
        labels,
        multilabels,
        config.frames,
        list(bands),
        None,
        len(report.skipped),
        classes=classes,
        tasks=("classify", "multilabel", "segment") if label_files else (),
        groups=groups,
        bounds=bounds,
        notes=notes,
    )


def scene_labels(
    masks: torch.Tensor, classes: int = len(CLASSES), threshold: float = 0.05
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scene class = majority label of each chip; multi-labels = classes covering ≥ ``threshold``."""
    valid = masks >= 0
    onehot = F.one_hot(masks.clamp(0, classes - 1), classes).float() * valid[..., None]  # (N, h, w, K)
    counts = onehot.flatten(1, 2).sum(1)  # (N, K)
    frac = counts / counts.sum(1, keepdim=True).clamp_min(1)
    labels = torch.where(counts.sum(1) > 0, counts.argmax(1), torch.full_like(counts[:, 0], -1).long())
    return labels, (frac >= threshold).float()


def load_dataset(data: str | Path, config: DataConfig, root: Path | None = None) -> EOChips:
    """A folder of GeoTIFFs, or a dataset by name (eurosat, bigearthnet, so2sat, ssl4eo-s12, seco, …) read
    through torchgeo's own class from ``root``."""
    from warmstart_eo.datasets import DATASETS, load_named

    name = str(data).lower()
    if name.split(":")[0] in DATASETS:
        return load_named(name, root, config)
    if not Path(data).exists():
        raise DataError(
            f"--data {data}: no such folder; pass a GeoTIFF folder or a dataset name ({', '.join(DATASETS)})"
        )
    from warmstart_eo.hls import is_hls_folder, load_hls

    if is_hls_folder(Path(data)):
        return load_hls(Path(data), config)
    return load_chips(Path(data), config)


def split_chips(chips: EOChips, test_fraction: float = 0.3, split_seed: int = 0) -> tuple[EOChips, EOChips]:
    """Train / test: the dataset's own split where it has one (val joins train); otherwise a fixed split
    (the same test chips for every seed and method) that keeps each group of overlapping chips on one side."""
    n = len(chips)
    if chips.split is not None and bool((chips.split == 2).any()) and bool((chips.split != 2).any()):
        test = torch.nonzero(chips.split == 2).flatten()
        train = torch.nonzero(chips.split != 2).flatten()
        return chips.subset(train), chips.subset(test)
    if n < 2:
        raise DataError(
            f"{n} chip(s): too few to hold out a test split; use more scenes or a smaller chip_size"
        )
    groups = chips.groups if chips.groups is not None else torch.arange(n)
    n_groups = int(groups.max()) + 1
    order = torch.randperm(n_groups, generator=torch.Generator().manual_seed(split_seed))
    sizes = torch.bincount(groups, minlength=n_groups)
    want = max(1, int(round(test_fraction * n)))
    test_groups, taken = [], 0
    for g in order.tolist():
        if taken >= want or len(test_groups) == n_groups - 1:
            break
        test_groups.append(g)
        taken += int(sizes[g])
    is_test = torch.isin(groups, torch.tensor(test_groups, dtype=torch.long))
    return chips.subset(torch.nonzero(~is_test).flatten()), chips.subset(torch.nonzero(is_test).flatten())


# ---------------------------------------------------------------------------------------------------
# statistics + preprocessing (the resizing / normalisation protocol)
# ---------------------------------------------------------------------------------------------------
@dataclass
class BandStats:
    bands: list[str]
    """Channel names (``t<k>:<band>`` for multi-temporal input)."""
    mean: list[float]
    std: list[float]
    min: list[float]
    max: list[float]
    size: int
    """Chip size of the data the statistics (and the encoder) were computed on."""

    def save(self, path: Path) -> Path:
        """Write atomically (a temporary name, then rename): a failed write leaves no half file."""
        path = Path(path)
        if not path.parent.is_dir():
            raise ConfigError(f"{path}: folder {path.parent} does not exist; create it or pick another --out")
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)
        return path

    def select(self, names: list[str]) -> BandStats:
        """The statistics of ``names`` (channel names), in that order: they follow bands by name."""
        missing = [n for n in names if n not in self.bands]
        if missing:
            raise DataError(
                f"band statistics have no {missing} (they cover {','.join(self.bands)}); compute them on "
                "data with these bands (`warmstart-eo stats`)"
            )
        idx = [self.bands.index(n) for n in names]
        return BandStats(
            list(names),
            [self.mean[i] for i in idx],
            [self.std[i] for i in idx],
            [self.min[i] for i in idx],
            [self.max[i] for i in idx],
            self.size,
        )

    @classmethod
    def load(cls, path: Path) -> BandStats:
        path = Path(path)
        if path.is_dir():
            path = path / "stats.json"
        if not path.is_file():
            raise DataError(
                f"{path}: no band statistics; run `warmstart-eo stats --data <folder> --out {path}`"
            )
        try:
            return cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as exc:
            raise DataError(f"{path}: not a stats.json written by `warmstart-eo stats` ({exc})") from exc


def compute_stats(chips: EOChips, max_items: int = 4096, batch: int = 256) -> BandStats:
    """Per-channel mean / std / min / max (float64 accumulation) over every pixel of every chip, or of
    ``max_items`` chips spread evenly over a larger dataset (read per item, never all at once)."""
    n = len(chips)
    if n == 0:
        raise DataError("no chips to compute band statistics on")
    if isinstance(chips, Chips):
        x = chips.images.double().transpose(0, 1).flatten(1)  # (C, N·h·w)
        mean, std = x.mean(1), x.std(1)
        lo, hi, size = x.min(1).values, x.max(1).values, int(chips.images.shape[-1])
    else:
        picks = torch.linspace(0, n - 1, min(n, max_items)).round().long().unique().tolist()
        total = sq = count = lo = hi = None
        size = 0
        for start in range(0, len(picks), batch):
            x = torch.stack([chips.raw(i)[0] for i in picks[start : start + batch]]).double()  # (B, C, h, w)
            size = int(x.shape[-1])
            flat = x.transpose(0, 1).flatten(1)  # (C, B·h·w)
            s, q, c = flat.sum(1), (flat**2).sum(1), flat.shape[1]
            total, sq = (s, q) if total is None else (total + s, sq + q)
            count = c if count is None else count + c
            lo = flat.min(1).values if lo is None else torch.minimum(lo, flat.min(1).values)
            hi = flat.max(1).values if hi is None else torch.maximum(hi, flat.max(1).values)
        mean = total / count
        std = ((sq - count * mean**2) / max(count - 1, 1)).clamp_min(0).sqrt()
    return BandStats(
        bands=chips.channel_names,
        mean=mean.tolist(),
        std=std.clamp_min(1e-6).tolist(),
        min=lo.tolist(),
        max=hi.tolist(),
        size=size,
    )


@dataclass
class PreprocessConfig:
    normalize: Literal["pretrain", "scale", "none"] = "pretrain"
    """pretrain: z-score with the encoder's pretraining statistics (the protocol); scale: divide by 10⁴
    (reflectance, a common shortcut); none: raw digital numbers."""
    resize: bool = True
    """Resize chips to the encoder's pretraining size (the protocol); False feeds them at native size."""


class Preprocess:
    """Per-sample transform: normalise (C, h, w) reflectance then resize to ``size`` (bilinear)."""

    def __init__(self, stats: BandStats | None, config: PreprocessConfig, size: int | None) -> None:
        if config.normalize == "pretrain" and stats is None:
            raise ConfigError("normalize=pretrain needs band statistics (stats.json beside the checkpoint)")
        self.config = config
        self.size = size if config.resize else None
        if stats is not None:
            self.mean = torch.tensor(stats.mean).view(-1, 1, 1)
            self.std = torch.tensor(stats.std).view(-1, 1, 1)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        x = image.float()
        if self.config.normalize == "pretrain":
            if x.shape[0] != self.mean.shape[0]:
                raise DataError(
                    f"input has {x.shape[0]} channels but the statistics have {self.mean.shape[0]}; use the "
                    f"bands/frames the encoder was pretrained with"
                )
            x = (x - self.mean) / self.std
        elif self.config.normalize == "scale":
            x = x / 10_000.0
        if self.size is not None and x.shape[-1] != self.size:
            x = F.interpolate(x[None], size=(self.size, self.size), mode="bilinear", align_corners=False)[0]
        return x


def split_indices(n: int, fractions: tuple[float, ...], seed: int) -> list[torch.Tensor]:
    """Disjoint random index sets with the given fractions of ``n`` (the rest is dropped)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    out, start = [], 0
    for f in fractions:
        k = int(round(f * n))
        out.append(perm[start : start + k])
        start += k
    return out
