"""Metrics from the library that owns them: our calls equal torchmetrics'; part mIoU vectorised = the loop."""

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from warmstart_3d.metrics import image_ssim, psnr, ssim_map
from warmstart_3d.partseg import PartLayout, part_metrics


def test_psnr_ssim_are_torchmetrics_and_the_loss_ssim_agrees_away_from_the_border():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 24, 20, 3, generator=g, dtype=torch.float64)
    b = (a + 0.1 * torch.randn(3, 24, 20, 3, generator=g, dtype=torch.float64)).clamp(0, 1)
    x, y = a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2)
    per_image = [float(peak_signal_noise_ratio(x[i], y[i], data_range=1.0)) for i in range(3)]
    assert abs(psnr(a, b) - sum(per_image) / 3) < 1e-4
    assert abs(image_ssim(a, b) - float(structural_similarity_index_measure(x, y, data_range=1.0))) < 1e-6
    # torchmetrics pads by reflection; the 3DGS loss's zero-padded map equals its map away from the border
    _, full = structural_similarity_index_measure(x, y, data_range=1.0, return_full_image=True)
    ours = ssim_map(a, b)
    assert (full - ours)[..., 5:-5, 5:-5].abs().max() < 1e-12 and (full - ours).abs().max() > 1e-3


def _loop_metrics(pred, target, classes, layout):  # the double loop this replaced (ShapeNetPart's rule)
    shape_iou = []
    for i in range(len(pred)):
        c = int(classes[i])
        ious = []
        for part in range(layout.offsets[c], layout.offsets[c] + layout.counts[c]):
            p, t = pred[i] == part, target[i] == part
            union = int((p | t).sum())
            ious.append(1.0 if union == 0 else int((p & t).sum()) / union)
        shape_iou.append(sum(ious) / len(ious))
    shape_iou = torch.tensor(shape_iou)
    per_class = [float(shape_iou[classes == c].mean()) for c in classes.unique().tolist()]
    return float(shape_iou.mean()), sum(per_class) / len(per_class)


def test_vectorised_part_miou_equals_the_per_shape_loop():
    layout = PartLayout(["lamp", "mug", "table"], [["a", "b", "c"], ["d", "e"], ["f", "g"]])
    g = torch.Generator().manual_seed(1)
    classes = torch.randint(3, (12,), generator=g)
    lo = torch.tensor(layout.offsets)[classes][:, None]
    hi = lo + torch.tensor(layout.counts)[classes][:, None]
    target = lo + (torch.rand(12, 40, generator=g) * (hi - lo)).long()
    pred = torch.where(torch.rand(12, 40, generator=g) < 0.6, target, torch.randint(7, (12, 40), generator=g))
    pred[0] = target[0]  # a perfect shape; some parts absent from both
    got = part_metrics(pred, target, classes, layout)
    inst, cls = _loop_metrics(pred, target, classes, layout)
    assert abs(got["instance_miou"] - inst) < 1e-6 and abs(got["class_miou"] - cls) < 1e-6
    assert got["accuracy"] == float((pred == target).float().mean())
