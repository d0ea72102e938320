"""InstantSplat's own stage 1 when the user has it: DUSt3R / MASt3R point maps → depths, poses, intrinsics.

Seed papers: DUSt3R ("Geometric 3D Vision Made Easy", Wang et al., arXiv 2312.14132) and MASt3R ("Grounding
Image Matching in 3D with MASt3R", Leroy et al., arXiv 2406.09756), InstantSplat's stage 1 (arXiv 2403.20309).
Neither is on PyPI: they are cloned repositories (``git clone --recursive`` of naver/dust3r or naver/mast3r,
then ``pip install -e``-style use on ``PYTHONPATH``) with checkpoints. When importable, every pair of views goes
through the model, DUSt3R's global aligner (``PointCloudOptimizer``, MST init, as InstantSplat's
``init_geo.py``) brings the point maps into one frame, and :func:`from_pointmaps` converts its result into
this app's conventions: world-to-camera ``viewmats`` in view 0's frame, pinhole ``Ks`` and per-pixel camera
depth at the input images' resolution, 0 where the aligner's confidence mask is off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from warmstart.errors import UserError

StereoName = Literal["dust3r", "mast3r"]
INSTALL = {
    "dust3r": "git clone --recursive https://github.com/naver/dust3r and put it on PYTHONPATH",
    "mast3r": "git clone --recursive https://github.com/naver/mast3r and put it (and its dust3r) on PYTHONPATH",
}


@dataclass
class StereoConfig:
    checkpoint: str | None = None
    """The model's checkpoint (a local .pth or a hub id such as naver/DUSt3R_ViTLarge_BaseDecoder_512_dpt)."""
    image_size: int = 512
    """Long side the views are resized to for the model (multiples of 16; DUSt3R's 512 models)."""
    align_steps: int = 300
    """Global-alignment iterations (DUSt3R's demo and InstantSplat use 300)."""
    device: str = "cuda"
    """Device of the model (DUSt3R is impractical on CPU)."""


def require(name: StereoName) -> None:
    """One line when the package is not importable (it is not on PyPI)."""
    try:
        __import__(name)
    except ImportError:
        raise UserError(
            f"--isplat.init {name}: the {name} package is not installed (not on PyPI): {INSTALL[name]}, "
            "or use --isplat.init prior"
        ) from None


def from_pointmaps(
    pts3d: torch.Tensor,
    cam_to_world: torch.Tensor,
    focals: torch.Tensor,
    principal: torch.Tensor,
    masks: torch.Tensor | None,
    width: int,
    height: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(viewmats (V, 4, 4), Ks (V, 3, 3), depths (V, height, width)) from a global aligner's output.

    ``pts3d`` (V, h, w, 3) world point maps, ``cam_to_world`` (V, 4, 4), ``focals`` (V,) or (V, 1) in model
    pixels, ``principal`` (V, 2), ``masks`` (V, h, w) confidence masks or None. The world is re-expressed in
    view 0's camera frame; intrinsics and depth are rescaled from the model's (h, w) to (height, width).
    """
    v, h, w, _ = pts3d.shape
    viewmats = torch.linalg.inv(cam_to_world.double()).float()
    to_view0 = cam_to_world[0].double()
    viewmats = (viewmats.double() @ to_view0).float()  # world → view 0's frame
    cam = torch.einsum("vij,vhwj->vhwi", viewmats[:, :3, :3], _in_frame(pts3d, to_view0))
    cam = cam + viewmats[:, None, None, :3, 3]
    depth = cam[..., 2]
    if masks is not None:
        depth = torch.where(masks.bool(), depth, torch.zeros_like(depth))
    depth = torch.where(depth > 0, depth, torch.zeros_like(depth))
    sx, sy = width / w, height / h
    Ks = torch.zeros(v, 3, 3)
    f = focals.reshape(v).float()
    Ks[:, 0, 0], Ks[:, 1, 1] = f * sx, f * sy
    Ks[:, 0, 2], Ks[:, 1, 2] = principal[:, 0].float() * sx, principal[:, 1].float() * sy
    Ks[:, 2, 2] = 1.0
    depths = F.interpolate(depth[:, None].float(), size=(height, width), mode="nearest")[:, 0]
    return viewmats, Ks, depths


def _in_frame(pts3d: torch.Tensor, to_view0: torch.Tensor) -> torch.Tensor:
    """World points (V, h, w, 3) expressed in view 0's frame: inv(cam_to_world[0]) applied."""
    inv = torch.linalg.inv(to_view0)
    return (pts3d.double() @ inv[:3, :3].T + inv[:3, 3]).float()


def _model_images(images: torch.Tensor, size: int) -> list[dict]:
    """DUSt3R's image dicts (``img`` in [-1, 1], ``true_shape``, ``idx``, ``instance``) at a 16-px multiple."""
    import numpy as np

    v, h, w, _ = images.shape
    scale = size / max(h, w)
    hh, ww = max(16, round(h * scale / 16) * 16), max(16, round(w * scale / 16) * 16)
    x = F.interpolate(images.permute(0, 3, 1, 2).float(), size=(hh, ww), mode="bilinear", align_corners=False)
    return [
        {"img": x[i : i + 1] * 2 - 1, "true_shape": np.int32([[hh, ww]]), "idx": i, "instance": str(i)}
        for i in range(v)
    ]


def stereo_stage1(
    images: torch.Tensor, name: StereoName, config: StereoConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float]]:
    """Run DUSt3R / MASt3R + DUSt3R's global aligner on (V, H, W, 3) images: viewmats, Ks, depths, info."""
    require(name)
    if config.checkpoint is None:
        raise UserError(f"--isplat.init {name} needs --isplat.stereo.checkpoint (a .pth file or a hub id)")
    from dust3r.cloud_opt import GlobalAlignerMode, global_aligner
    from dust3r.image_pairs import make_pairs
    from dust3r.inference import inference

    if name == "mast3r":
        from mast3r.model import AsymmetricMASt3R as Model
    else:
        from dust3r.model import AsymmetricCroCo3DStereo as Model
    model = Model.from_pretrained(config.checkpoint).to(config.device)
    views = _model_images(images, config.image_size)
    pairs = make_pairs(views, scene_graph="complete", prefilter=None, symmetrize=True)
    output = inference(pairs, model, config.device, batch_size=1)
    aligner = global_aligner(output, device=config.device, mode=GlobalAlignerMode.PointCloudOptimizer)
    loss = aligner.compute_global_alignment(init="mst", niter=config.align_steps, schedule="cosine", lr=0.01)
    with torch.no_grad():
        pts3d = torch.stack([p.detach().float().cpu() for p in aligner.get_pts3d()])
        masks = torch.stack([m.detach().cpu() for m in aligner.get_masks()])
        poses = aligner.get_im_poses().detach().float().cpu()
        focals = aligner.get_focals().detach().float().cpu()
        principal = aligner.get_principal_points().detach().float().cpu()
    viewmats, Ks, depths = from_pointmaps(
        pts3d, poses, focals, principal, masks, images.shape[2], images.shape[1]
    )
    return viewmats, Ks, depths, {"stereo_alignment_loss": float(loss), "stereo_pairs": float(len(pairs))}
