"""Band names: one spelling for every sensor the app reads, parsed from what files and datasets call them.

Seed papers: SatMAE++ ("Rethinking Transformers Pre-training for Multi-Spectral Satellite Imagery", arXiv
2403.05419) groups Sentinel-2 bands by name and drops absent groups; Prithvi ("Foundation Models for
Generalist Geospatial Artificial Intelligence", arXiv 2310.18660) reads 6 HLS bands. Every channel the app
handles is named: Sentinel-2 ``B01`` … ``B12``, ``B8A`` (HLS bands are the Sentinel-2 bands they match),
Sentinel-1 ``VV`` / ``VH``; multi-temporal channels are ``t<k>:<band>``. Left out: Landsat-only bands
(thermal), other SAR polarisations.
"""

from __future__ import annotations

import re

from warmstart.errors import ConfigError

S2_BANDS: tuple[str, ...] = (
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
"""The 13 Sentinel-2 L1C bands in wavelength order (the generator's file order)."""
S2_L2A_BANDS: tuple[str, ...] = tuple(b for b in S2_BANDS if b != "B10")
"""The 12 bands of Sentinel-2 L2A (B10, cirrus, is dropped by atmospheric correction)."""
S1_BANDS: tuple[str, ...] = ("VV", "VH")
"""Sentinel-1 GRD dual polarisation."""
HLS_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B8A", "B11", "B12")
"""Prithvi's 6 HLS bands (blue, green, red, narrow NIR, SWIR 1, SWIR 2) as the Sentinel-2 bands they match."""
ALL_BANDS: tuple[str, ...] = S2_BANDS + S1_BANDS
SENSORS: dict[str, tuple[str, ...]] = {
    "s2": S2_BANDS,
    "s2-l2a": S2_L2A_BANDS,
    "hls": HLS_BANDS,
    "s1": S1_BANDS,
    "s1s2": S1_BANDS + S2_L2A_BANDS,
}
"""Named band sets ``--data_config.bands`` accepts instead of a list."""
HLS_ALIASES = {
    "BLUE": "B02",
    "GREEN": "B03",
    "RED": "B04",
    "NIR": "B8A",
    "NIR_NARROW": "B8A",
    "SWIR1": "B11",
    "SWIR_1": "B11",
    "SWIR2": "B12",
    "SWIR_2": "B12",
}


def canonical(name: str) -> str | None:
    """``B1`` / ``b01`` / ``S2_B02`` / ``B8a`` / ``t2:B04`` / ``BLUE`` / ``vv`` → ``B01`` … (None: unknown).

    A time prefix ``t<k>:`` is dropped here (see :func:`split_time`).
    """
    text = str(name).strip()
    text = re.sub(r"^t\d+:", "", text)
    text = re.sub(r"^(S2|S1)_", "", text, flags=re.IGNORECASE).upper()
    text = re.sub(r".*_(B\d{1,2}A?|VV|VH)$", r"\1", text)  # file-name-like descriptions: T33UUP_..._B04
    if text in HLS_ALIASES:
        return HLS_ALIASES[text]
    m = re.fullmatch(r"B0?(\d{1,2})(A?)", text)
    if m:
        out = f"B{int(m.group(1)):02d}{m.group(2)}"
        if out == "B08A":
            out = "B8A"
        return out if out in S2_BANDS else None
    return text if text in S1_BANDS else None


def split_time(name: str) -> tuple[int | None, str]:
    """``t2:B04`` → (2, ``t2:B04``'s band); a name without a time prefix → (None, name)."""
    m = re.match(r"^t(\d+):(.*)$", str(name).strip())
    return (int(m.group(1)), m.group(2)) if m else (None, str(name))


def parse_bands(names: list[str] | str | None, what: str = "data_config.bands") -> list[str] | None:
    """User-given bands → canonical names (a sensor name expands to its set); unknown names are refused."""
    if names is None:
        return None
    if isinstance(names, str):
        names = [names]
    if len(names) == 1 and names[0].lower() in SENSORS:
        return list(SENSORS[names[0].lower()])
    out, unknown = [], []
    for n in names:
        c = canonical(n)
        (out if c else unknown).append(c or n)
    if unknown:
        raise ConfigError(
            f"{what}: unknown band(s) {unknown}; use Sentinel-2 names (B01 … B12, B8A), VV/VH, or a set "
            f"({', '.join(SENSORS)})"
        )
    if len(set(out)) != len(out):
        raise ConfigError(f"{what}: band(s) listed twice in {names}")
    return out


def channel_names(bands: list[str], frames: int) -> list[str]:
    """Channel names of a (T·C) stack: the bands for one frame, ``t<k>:<band>`` (time-major) for several."""
    return list(bands) if frames == 1 else [f"t{t}:{b}" for t in range(frames) for b in bands]
