"""Earth-observation data: a procedural Sentinel-2-like generator that writes real GeoTIFFs, a validated
loader through torchgeo's ``RasterDataset`` + ``GridGeoSampler``, per-band statistics, and the
evaluation preprocessing of *Revisiting pre-trained remote sensing model benchmarks: resizing and
normalization matters* (Corley et al., arXiv 2305.13456).

The generator writes, per scene, one multi-temporal GeoTIFF (``T × 13`` uint16 bands, reflectance × 10⁴,
band descriptions ``t<k>:B02`` …, EPSG:32633 at 10 m, nodata 0) — the band-stacked layout of the HLS
multi-temporal crop data Prithvi is fine-tuned on — plus a per-pixel label raster of the last frame. Class
signatures follow textbook spectra (vegetation's red edge, water's NIR absorption, bright flat urban,
rising bare soil, burn scars' low NIR / high SWIR); crops green up with the season; a flood or a burn
appears only in the last frame, so telling flood from permanent water needs the time series. Scene
labels (EuroSAT-like) are the majority class of a chip; multi-labels (SoftCon) the classes covering at
least 5 % of it. Left out: clouds, atmospheric effects, real HLS band sets and acquisition geometry.

Chips are read once through torchgeo (the real path for real scenes) and cached in memory as a map-style
dataset for the engine, so a bad file fails (or is skipped) before the first step, never mid-epoch.
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

log = logging.getLogger(__name__)

BANDS: tuple[str, ...] = (
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B09",
    "B10",
    "B11",
    "B12",
)
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
    texture = 1.0 + 0.08 * _smooth_field(gen, 1, s, sigma=1.5)[0]  # (H, W) fine spatial texture
    sig = torch.from_numpy(SIGNATURES)  # (7, 13)
    bare = sig[4]
    frames = []
    for t in range(t_count):
        season = 0.5 - 0.5 * math.cos(2 * math.pi * (t + 1) / (t_count + 1))  # green-up in (0, 1]
        class_sig = sig[:base_classes].clone()
        class_sig[0] = sig[0] * (0.75 + 0.25 * season) + bare * 0.05 * (1 - season)
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
    bands: list[str] = field(default_factory=lambda: list(BANDS))
    """Sentinel-2 bands to use (names from B01 … B12, B8A), in this order."""
    frames: int = 1
    """Time steps to use: the last N acquisitions of each file (Prithvi: > 1)."""
    chip_size: int = 32
    """Chip size in pixels read by torchgeo's grid sampler."""
    stride: int | None = None
    """Grid stride in pixels (default: chip_size, non-overlapping)."""
    on_bad_file: Literal["skip", "fail"] = "skip"
    """A corrupt / inconsistent file in the folder: skip it with a warning and a count, or fail."""
    max_nodata: float = 0.25
    """Drop chips whose nodata fraction exceeds this; remaining nodata pixels get the band mean."""
    verify_reads: bool = True
    """Decode every block of every image and label file while scanning, so a file whose header opens but
    whose (compressed) data is corrupt is skipped / fails here, by name, instead of inside torchgeo."""


@dataclass
class ScanReport:
    images: list[Path]
    labels: dict[Path, Path]
    frames: int
    skipped: list[tuple[Path, str]]
    min_side: int


def _label_path(root: Path, image: Path) -> Path:
    return root / "labels" / image.name


def scan_folder(root: Path, config: DataConfig) -> ScanReport:
    """Check every GeoTIFF before torchgeo sees it: readable, CRS, band count, resolution, label alignment.

    Problems with one file are skipped with a warning (``on_bad_file=skip``) or raised (``fail``); a
    folder with no usable file always raises.
    """
    import rasterio

    root = Path(root)
    image_dir = root / "images" if (root / "images").is_dir() else root
    if not root.exists():
        raise DataError(f"{root}: no such folder; create one with `warmstart-eo data-synth --out {root}`")
    files = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
    if not files:
        raise DataError(
            f"{image_dir}: no .tif files; point --data at a folder of GeoTIFFs (images/ + labels/)"
        )
    unknown = [b for b in config.bands if b not in BANDS]
    if unknown:
        raise ConfigError(f"data.bands: unknown band(s) {unknown}; choose from {', '.join(BANDS)}")
    good: list[Path] = []
    sides: list[int] = []
    labels: dict[Path, Path] = {}
    skipped: list[tuple[Path, str]] = []
    ref: dict[str, Any] = {}

    def bad(path: Path, why: str) -> None:
        if config.on_bad_file == "fail":
            raise DataError(f"{path}: {why} (set data.on_bad_file=skip to skip such files)")
        warnings.warn(f"{path}: {why}; skipped", stacklevel=3)
        log.warning("%s: %s; skipped", path, why)
        skipped.append((path, why))

    def read_header(path: Path) -> tuple[Any, ...]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with rasterio.open(path) as src:
                if config.verify_reads:
                    for _, window in src.block_windows(1):
                        src.read(window=window)  # decodes the block of every band
                return src.crs, src.res, src.count, src.bounds, src.shape

    for path in files:
        try:
            crs, res, count, bounds, shape = read_header(path)
        except rasterio.errors.RasterioError as exc:
            bad(path, f"not a readable GeoTIFF ({str(exc).splitlines()[0][:80]})")
            continue
        if crs is None:
            bad(path, "has no CRS; write the file with a coordinate reference system (e.g. EPSG:32633)")
            continue
        if count % len(BANDS):
            bad(
                path, f"has {count} bands; expected a multiple of {len(BANDS)} (frames × 13 Sentinel-2 bands)"
            )
            continue
        if not ref:
            ref = {"count": count, "res": res, "crs": crs, "name": path.name}
        if count != ref["count"]:
            bad(
                path,
                f"has {count} bands but {ref['name']} has {ref['count']}; all files need the same frames",
            )
            continue
        if not np.allclose(res, ref["res"]):
            bad(
                path,
                f"resolution {res} differs from {ref['res']} of {ref['name']}; resample the files to one resolution",
            )
            continue
        label = _label_path(root, path)
        if label.exists():
            try:
                l_crs, _, _, l_bounds, l_shape = read_header(label)
            except rasterio.errors.RasterioError as exc:
                bad(
                    path,
                    f"its label raster {label} is not a readable GeoTIFF ({str(exc).splitlines()[0][:60]})",
                )
                continue
            if l_crs != crs or l_shape != shape or not np.allclose(tuple(l_bounds), tuple(bounds)):
                bad(
                    path,
                    f"its label raster {label} does not align (crs {l_crs} vs {crs}, shape {l_shape} vs {shape}, "
                    f"bounds {'equal' if np.allclose(tuple(l_bounds), tuple(bounds)) else 'differ'}); write "
                    "labels on the image's grid",
                )
                continue
            labels[path] = label
        good.append(path)
        sides.append(min(shape))
    if not good:
        raise DataError(
            f"{image_dir}: none of {len(files)} GeoTIFFs is usable"
            + (f" ({skipped[0][0].name}: {skipped[0][1]})" if skipped else "")
        )
    frames = ref["count"] // len(BANDS)
    if config.frames > frames:
        raise ConfigError(
            f"data.frames={config.frames} but the files hold {frames} time step(s); lower data.frames"
        )
    if skipped:
        log.warning("skipped %d of %d files in %s", len(skipped), len(files), image_dir)
    return ScanReport(good, labels, frames, skipped, min(sides))


@dataclass
class Chips(torch.utils.data.Dataset):
    """Chips cached in memory: raw reflectance, labels; ``transform`` (a :class:`Preprocess`) applied per item.

    ``images`` (N, T·C, h, w) float32 reflectance × 10⁴ (time-major), ``masks`` (N, h, w) int64 (-1 where
    no label), ``labels`` (N,) scene class, ``multilabels`` (N, K) float.
    """

    images: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    multilabels: torch.Tensor
    frames: int
    bands: list[str]
    transform: Any = None
    skipped_files: int = 0

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image = self.images[i]
        if self.transform is not None:
            image = self.transform(image)
        return {
            "image": image,
            "mask": self.masks[i],
            "label": self.labels[i],
            "multilabel": self.multilabels[i],
        }

    def subset(self, index: torch.Tensor | list[int]) -> Chips:
        index = torch.as_tensor(index, dtype=torch.long)
        return Chips(
            self.images[index], self.masks[index], self.labels[index], self.multilabels[index],
            self.frames, self.bands, self.transform, self.skipped_files,
        )  # fmt: skip

    def with_transform(self, transform: Any) -> Chips:
        return Chips(
            self.images, self.masks, self.labels, self.multilabels, self.frames, self.bands, transform,
            self.skipped_files,
        )  # fmt: skip


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


def load_chips(root: Path, config: DataConfig | None = None) -> Chips:
    """Validate the folder, index it with torchgeo and read every chip of a ``GridGeoSampler`` once."""
    from torchgeo.samplers import GridGeoSampler

    config = config or DataConfig()
    report = scan_folder(root, config)
    EOImages, EOLabels = _raster_classes()
    images_ds = EOImages(paths=[str(p) for p in report.images], cache=True)
    label_files = [str(report.labels[p]) for p in report.images if p in report.labels]
    labels_ds = EOLabels(paths=label_files, cache=True) if label_files else None
    chip, stride = config.chip_size, config.stride or config.chip_size
    # torchgeo reads tiles of several chips at once (one rasterio merge per tile, not per chip); the tiles
    # are cut into chips here. Pixels outside a scene come back as nodata and are dropped below.
    if report.min_side < chip:
        raise DataError(f"{root}: scenes of {report.min_side} px are smaller than data.chip_size={chip}")
    per_tile = max(1, min(256 // stride, (report.min_side - chip) // stride + 1))
    tile = stride * (per_tile - 1) + chip
    sampler = GridGeoSampler(images_ds, size=tile, stride=stride * per_tile)
    t_file = report.frames
    keep_bands = [
        t * len(BANDS) + BANDS.index(b) for t in range(t_file - config.frames, t_file) for b in config.bands
    ]
    images, masks, dropped = [], [], 0
    for geo in sampler:
        image = images_ds[geo]["image"]  # (T_file·13, H, W)
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
    if dropped:
        log.warning("dropped %d chips with more than %.0f%% nodata", dropped, 100 * config.max_nodata)
    if not images:
        raise DataError(f"{root}: no chip of {config.chip_size} px fits the scenes; lower data.chip_size")
    image_t = torch.stack(images)  # (N, T·C, h, w)
    mask_t = torch.stack(masks)  # (N, h, w)
    labels, multilabels = scene_labels(mask_t)
    return Chips(
        image_t, mask_t, labels, multilabels, config.frames, list(config.bands), None, len(report.skipped)
    )


def scene_labels(masks: torch.Tensor, threshold: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Scene class = majority label of each chip; multi-labels = classes covering ≥ ``threshold``."""
    k = len(CLASSES)
    valid = masks >= 0
    onehot = F.one_hot(masks.clamp_min(0), k).float() * valid[..., None]  # (N, h, w, K)
    counts = onehot.flatten(1, 2).sum(1)  # (N, K)
    frac = counts / counts.sum(1, keepdim=True).clamp_min(1)
    labels = torch.where(counts.sum(1) > 0, counts.argmax(1), torch.full_like(counts[:, 0], -1).long())
    return labels, (frac >= threshold).float()


def load_dataset(data: str | Path, config: DataConfig, root: Path | None = None) -> Chips:
    """A folder of GeoTIFFs, or a torchgeo dataset by name (``eurosat``) read from ``root`` without download."""
    name = str(data).lower()
    if name in ("eurosat", "eurosat100"):
        return _load_torchgeo_eurosat(name, root, config)
    if not Path(data).exists():
        raise DataError(f"--data {data}: no such folder; pass a GeoTIFF folder or a dataset name (eurosat)")
    return load_chips(Path(data), config)


def _load_torchgeo_eurosat(name: str, root: Path | None, config: DataConfig) -> Chips:
    """torchgeo's EuroSAT (13 bands, 64 px chips, 10 classes) from local files; labels map to scene classes."""
    from torchgeo import datasets

    cls = datasets.EuroSAT100 if name == "eurosat100" else datasets.EuroSAT
    if root is None:
        raise ConfigError(f"--data {name} needs --root, the folder holding torchgeo's {cls.__name__} files")
    try:
        ds = cls(root=str(root), split="train", download=False)
    except Exception as exc:  # noqa: BLE001 - torchgeo raises DatasetNotFoundError and friends
        raise DataError(f"--root {root}: {cls.__name__} not found there ({type(exc).__name__})") from exc
    images, labels = [], []
    for i in range(len(ds)):
        s = ds[i]
        images.append(s["image"][[BANDS.index(b) for b in config.bands]])
        labels.append(int(s["label"]))
    image_t = torch.stack(images)
    lab = torch.tensor(labels)
    masks = lab.view(-1, 1, 1).expand(-1, *image_t.shape[-2:]).clone()
    return Chips(image_t, masks, lab, F.one_hot(lab).float(), 1, list(config.bands))


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
        path = Path(path)
        path.write_text(json.dumps(asdict(self), indent=2))
        return path

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


def compute_stats(chips: Chips) -> BandStats:
    """Per-channel mean / std / min / max over every pixel of every chip (float64 accumulation)."""
    x = chips.images.double().transpose(0, 1).flatten(1)  # (C, N·h·w)
    names = (
        [f"t{t}:{b}" for t in range(chips.frames) for b in chips.bands] if chips.frames > 1 else chips.bands
    )
    return BandStats(
        bands=list(names),
        mean=x.mean(1).tolist(),
        std=x.std(1).clamp_min(1e-6).tolist(),
        min=x.min(1).values.tolist(),
        max=x.max(1).values.tolist(),
        size=int(chips.images.shape[-1]),
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
