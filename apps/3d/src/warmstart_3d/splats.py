"""Gaussian splats in memory and in the standard 3DGS PLY layout every splat viewer reads.

Seed papers: "3D Gaussian Splatting for Real-Time Radiance Field Rendering" (arXiv 2308.04079) for the file
layout (``x y z nx ny nz f_dc_0..2 f_rest_* opacity scale_0..2 rot_0..3``; opacity as a logit, scales as
logs, ``f_rest`` channel-major) and "ShapeSplat: A Large-scale Dataset of Gaussian Splats" (arXiv 2408.10906),
whose per-object files use the same layout. Read and written with ``plyfile``; degenerate Gaussians (NaN
positions, NaN/zero quaternions, non-finite log-scales or opacities) are refused with a one-line error or,
with ``repair=True``, dropped (positions) or reset (quaternion → identity, scale → the median, opacity → 0.1).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from warmstart.errors import DataError

log = logging.getLogger(__name__)

SH_C0 = 0.28209479177387814
"""Degree-0 spherical-harmonic constant: rgb = 0.5 + SH_C0 · f_dc."""


def rgb_to_sh(rgb: torch.Tensor) -> torch.Tensor:
    return (rgb - 0.5) / SH_C0


def sh_to_rgb(sh0: torch.Tensor) -> torch.Tensor:
    return sh0 * SH_C0 + 0.5


@dataclass
class Gaussians:
    """N Gaussians in the parameterisation 3DGS optimises (and stores in PLY)."""

    means: torch.Tensor
    """(N, 3) centres."""
    quats: torch.Tensor
    """(N, 4) rotations, wxyz, not necessarily unit."""
    log_scales: torch.Tensor
    """(N, 3) log of the axis scales."""
    opacity_logits: torch.Tensor
    """(N,) logit of the opacity."""
    sh: torch.Tensor
    """(N, K, 3) spherical-harmonic coefficients, K = (degree+1)²; row 0 is the DC colour."""

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        return int(round(math.sqrt(self.sh.shape[1]))) - 1

    @property
    def scales(self) -> torch.Tensor:
        return self.log_scales.exp()

    @property
    def opacities(self) -> torch.Tensor:
        return torch.sigmoid(self.opacity_logits)

    @property
    def rgb(self) -> torch.Tensor:
        """(N, 3) view-independent colour (DC term)."""
        return sh_to_rgb(self.sh[:, 0]).clamp(0, 1)

    @classmethod
    def from_activated(
        cls,
        means: torch.Tensor,
        scales: torch.Tensor,
        opacities: torch.Tensor,
        rgb: torch.Tensor,
        quats: torch.Tensor | None = None,
        sh_degree: int = 0,
    ) -> Gaussians:
        """Build from positive scales, opacities in (0, 1) and RGB in [0, 1]; higher SH bands start at 0."""
        n = means.shape[0]
        if (scales <= 0).any() or not torch.isfinite(scales).all():
            raise DataError("Gaussians: scales must be positive and finite (zero or negative scale given)")
        quats = quats if quats is not None else means.new_tensor([1.0, 0, 0, 0]).expand(n, 4).clone()
        sh = means.new_zeros(n, (sh_degree + 1) ** 2, 3)
        sh[:, 0] = rgb_to_sh(rgb)
        opac = opacities.clamp(1e-4, 1 - 1e-4)
        return cls(means.clone(), quats, scales.log(), torch.log(opac / (1 - opac)), sh)

    def to_params(self) -> torch.nn.ParameterDict:
        """gsplat ``simple_trainer`` parameter names: means, scales (log), quats, opacities (logit), sh0, shN."""
        return torch.nn.ParameterDict(
            {
                "means": torch.nn.Parameter(self.means.clone()),
                "scales": torch.nn.Parameter(self.log_scales.clone()),
                "quats": torch.nn.Parameter(self.quats.clone()),
                "opacities": torch.nn.Parameter(self.opacity_logits.clone()),
                "sh0": torch.nn.Parameter(self.sh[:, :1].clone()),
                "shN": torch.nn.Parameter(self.sh[:, 1:].clone()),
            }
        )

    @classmethod
    def from_params(cls, params: torch.nn.ParameterDict) -> Gaussians:
        return cls(
            params["means"].detach().clone(),
            params["quats"].detach().clone(),
            params["scales"].detach().clone(),
            params["opacities"].detach().clone(),
            torch.cat([params["sh0"], params["shN"]], dim=1).detach().clone(),
        )

    def features(self) -> torch.Tensor:
        """(N, 14) the Gaussian-MAE attribute vector: xyz, sigmoid opacity, exp scale, unit quat, DC colour."""
        quat = torch.nn.functional.normalize(self.quats, dim=-1)
        return torch.cat([self.means, self.opacities[:, None], self.scales, quat, self.rgb], dim=-1)

    def subset(self, index: torch.Tensor) -> Gaussians:
        return Gaussians(
            self.means[index],
            self.quats[index],
            self.log_scales[index],
            self.opacity_logits[index],
            self.sh[index],
        )


def check_gaussians(g: Gaussians, *, repair: bool = False, source: str = "Gaussians") -> Gaussians:
    """Refuse (or, with ``repair``, fix) degenerate Gaussians: see the module docstring for the repair rules."""
    bad_means = ~torch.isfinite(g.means).all(dim=-1)
    qnorm = g.quats.norm(dim=-1)
    bad_quats = ~torch.isfinite(g.quats).all(dim=-1) | (qnorm < 1e-12)
    bad_scales = ~torch.isfinite(g.log_scales).all(dim=-1)
    bad_opac = ~torch.isfinite(g.opacity_logits)
    bad_sh = ~torch.isfinite(g.sh).flatten(1).all(dim=-1)
    problems = {
        "non-finite positions": int(bad_means.sum()),
        "NaN or zero quaternions": int(bad_quats.sum()),
        "zero, negative or non-finite scales": int(bad_scales.sum()),
        "non-finite opacities": int(bad_opac.sum()),
        "non-finite colours": int(bad_sh.sum()),
    }
    found = {k: v for k, v in problems.items() if v}
    if not found:
        return g
    summary = ", ".join(f"{v} with {k}" for k, v in found.items())
    if not repair:
        raise DataError(f"{source}: degenerate Gaussians ({summary}); fix the file or load with --repair")
    log.warning("%s: repairing degenerate Gaussians (%s)", source, summary)
    quats = g.quats.clone()
    quats[bad_quats] = quats.new_tensor([1.0, 0, 0, 0])
    log_scales = g.log_scales.clone()
    good = torch.isfinite(log_scales)
    fill = log_scales[good].median() if good.any() else log_scales.new_tensor(math.log(0.01))
    log_scales[~good] = fill
    opac = g.opacity_logits.clone()
    opac[bad_opac] = math.log(0.1 / 0.9)
    sh = torch.nan_to_num(g.sh, nan=0.0, posinf=0.0, neginf=0.0)
    keep = ~bad_means
    return Gaussians(g.means[keep], quats[keep], log_scales[keep], opac[keep], sh[keep])


def ply_property_names(n_rest: int) -> list[str]:
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(n_rest)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    return names


def write_ply(path: str | Path, g: Gaussians) -> Path:
    """Write the standard 3DGS binary PLY (float32 properties, ``f_rest`` channel-major)."""
    from plyfile import PlyData, PlyElement

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(g)
    rest = g.sh[:, 1:].transpose(1, 2).reshape(n, -1)  # (N, 3·(K-1)) channel-major as 3DGS saves it
    columns = [
        g.means,
        torch.zeros_like(g.means),
        g.sh[:, 0],
        rest,
        g.opacity_logits[:, None],
        g.log_scales,
        g.quats,
    ]
    data = torch.cat(columns, dim=1).detach().cpu().float().numpy()
    names = ply_property_names(rest.shape[1])
    records = np.empty(n, dtype=[(name, "f4") for name in names])
    for i, name in enumerate(names):
        records[name] = data[:, i]
    PlyData([PlyElement.describe(records, "vertex")]).write(str(path))
    return path


REQUIRED = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2"]
REQUIRED += ["rot_0", "rot_1", "rot_2", "rot_3"]


def read_ply(path: str | Path, *, repair: bool = False) -> Gaussians:
    """Read a 3DGS PLY (ours, gsplat's exporter, the reference 3DGS code, ShapeSplat)."""
    from plyfile import PlyData

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such PLY file")
    try:
        ply = PlyData.read(str(path))
    except Exception as exc:  # noqa: BLE001 - plyfile raises several types for a broken file
        raise DataError(f"{path}: not a readable PLY file ({type(exc).__name__}: {exc})") from exc
    if "vertex" not in ply:
        raise DataError(f"{path}: no 'vertex' element; a 3DGS PLY stores Gaussians as vertices")
    vertex = ply["vertex"]
    names = {p.name for p in vertex.properties}
    missing = [name for name in REQUIRED if name not in names]
    if missing:
        raise DataError(
            f"{path}: missing 3DGS properties {', '.join(missing)}; a Gaussian-splat PLY needs x y z f_dc_0..2 "
            f"opacity scale_0..2 rot_0..3 (plain point clouds: use the points loader)"
        )
    n_rest = len([name for name in names if name.startswith("f_rest_")])
    degree = int(round(math.sqrt(n_rest / 3 + 1))) - 1
    if 3 * ((degree + 1) ** 2 - 1) != n_rest:
        raise DataError(f"{path}: {n_rest} f_rest_* properties is not 3·((d+1)²-1) for any SH degree d")

    def cols(keys: list[str]) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.asarray(vertex[k], dtype=np.float32) for k in keys], axis=1))

    means = cols(["x", "y", "z"])
    dc = cols(["f_dc_0", "f_dc_1", "f_dc_2"])
    rest_keys = sorted((k for k in names if k.startswith("f_rest_")), key=lambda k: int(k.split("_")[-1]))
    k_rest = (degree + 1) ** 2 - 1
    rest = (
        cols(rest_keys).reshape(-1, 3, k_rest).transpose(1, 2)
        if n_rest
        else means.new_zeros(len(means), 0, 3)
    )
    sh = torch.cat([dc[:, None], rest], dim=1)  # (N, K, 3)
    g = Gaussians(
        means,
        cols(["rot_0", "rot_1", "rot_2", "rot_3"]),
        cols(["scale_0", "scale_1", "scale_2"]),
        cols(["opacity"])[:, 0],
        sh,
    )
    return check_gaussians(g, repair=repair, source=str(path))
