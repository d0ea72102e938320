"""Why does CLIP2Point few-shot not beat zero-shot here? Adapter settings swept on cached frozen features.

Seed paper: "CLIP2Point" (arXiv 2210.01055). Per seed this rebuilds exactly the CLIP2Point arm of
``warmstart-3d bench --kind points --points.part clip2point`` (tiny source CLIP 400 steps, image-depth
pretraining 150 steps, 28 clouds/class of which 12/class held out, the bench's shot draws), caches the frozen
10-view features of both encoders in ``--cache``, then trains the Dual-Path Adapter under several settings.

    OMP_NUM_THREADS=1 python apps/3d/scripts/clip2point_fewshot_sweep.py --seeds 0 1 2 --cache c2p-cache
    OMP_NUM_THREADS=1 python apps/3d/scripts/clip2point_fewshot_sweep.py --cache c2p-cache --selector

``--selector`` compares the fixed views with the learned view selector (renders inside every step; slower).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from warmstart_3d.clip2point import (
    ClipSpec,
    DepthConfig,
    FewShotConfig,
    PretrainConfig,
    SourceConfig,
    few_shot_accuracy,
    load_clip,
    load_eval_set,
    pretrain_clip2point,
    pretrain_source,
    sample_shots,
    split_indices,
    text_features,
    view_features,
    zero_shot_accuracy,
)

SETTINGS = {
    "paper DPA (100 steps, lr 1e-3)": FewShotConfig(),
    "30 steps": FewShotConfig(steps=30),
    "300 steps": FewShotConfig(steps=300),
    "lr 1e-4": FewShotConfig(lr=1e-4),
    "logit scale 1 (reference)": FewShotConfig(logit_scale=1.0),
    "zero-shot residual 1": FewShotConfig(zero_shot_weight=1.0),
    "zero-shot residual 3": FewShotConfig(zero_shot_weight=3.0),
    "zero-shot residual 10": FewShotConfig(zero_shot_weight=10.0),
    "zero-shot residual 3, lr 3e-4": FewShotConfig(zero_shot_weight=3.0, lr=3e-4),
}


def features(seed: int, cache: Path) -> dict:
    path = cache / f"feats_{seed}.pt"
    if path.is_file():
        return torch.load(path)
    with tempfile.TemporaryDirectory() as tmp:
        pretrain_source(SourceConfig(steps=400, per_class=96, n_points=1024, seed=seed), Path(tmp) / "s")
        clip = load_clip(ClipSpec(model=str(Path(tmp) / "s")))
    depth = DepthConfig()
    points, labels, names = load_eval_set(None, None, 28, 1024, 50_000 + seed)
    pool, test = split_indices(labels, 12, torch.Generator().manual_seed(seed))
    text = text_features(clip.model, clip.tokenizer, names)
    pre = PretrainConfig(per_class=64, n_points=1024, steps=150, batch_size=32, init="clip", seed=seed)
    model, _ = pretrain_clip2point(clip, depth, pre)
    encoders = {"c2p": model.depth_encoder, "clip": clip.model.visual}
    feats = {
        k: view_features(e, clip.mean, clip.std, points, "ten", depth, clip.image_size)
        for k, e in encoders.items()
    }
    out = {
        "feats": feats,
        "labels": labels,
        "pool": pool,
        "test": test,
        "text": text,
        "points": points,
        "c2p": model.depth_encoder.state_dict(),
        "clip_sd": clip.model.state_dict(),
    }
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(out, path)
    return out


def selector_rows(seed: int, d: dict, rows: dict[str, list[float]]) -> None:
    """4-shot: fixed views vs the learned view selector (same adapters, steps and shots)."""
    import copy

    import open_clip

    from warmstart_3d.clip2point import (
        OPENAI_MEAN,
        OPENAI_STD,
        LoadedCLIP,
        TinyCLIPConfig,
        few_shot_accuracy_learned_views,
    )

    clip_model = open_clip.CLIP(**TinyCLIPConfig().model_cfg())
    clip_model.load_state_dict(d["clip_sd"])
    depth_encoder = copy.deepcopy(clip_model.visual)
    depth_encoder.load_state_dict(d["c2p"])
    clip = LoadedCLIP(clip_model.eval(), None, OPENAI_MEAN, OPENAI_STD, 32, "cache")
    f, labels, pool, test, text, points = (
        d[k] for k in ("feats", "labels", "pool", "test", "text", "points")
    )
    picked = pool[sample_shots(labels[pool], 4, torch.Generator().manual_seed(seed * 100 + 4))]
    cfg = FewShotConfig()
    rows.setdefault("4-shot, fixed views", []).append(
        few_shot_accuracy(
            [f[p][picked] for p in ("c2p", "clip")],
            labels[picked],
            [f[p][test] for p in ("c2p", "clip")],
            labels[test],
            text,
            cfg,
            seed,
        )
    )
    acc, model = few_shot_accuracy_learned_views(
        [depth_encoder.eval(), clip_model.visual],
        clip,
        DepthConfig(),
        points[picked],
        labels[picked],
        points[test],
        labels[test],
        text,
        cfg,
        seed,
    )
    rows.setdefault("4-shot, learned view selector", []).append(acc)
    with torch.no_grad():
        elev, azim = model.selector(points[test])
    shift = (
        (elev - model.selector.elevation).abs().mean() + (azim - model.selector.azimuth).abs().mean()
    ) / 2
    rows.setdefault("mean learned view shift (deg)", []).append(float(shift))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cache", type=Path, default=Path("c2p-fewshot-cache"))
    parser.add_argument("--selector", action="store_true", help="only: 4-shot fixed views vs learned views")
    args = parser.parse_args()
    rows: dict[str, list[float]] = {}
    for seed in args.seeds:
        d = features(seed, args.cache)
        if args.selector:
            selector_rows(seed, d, rows)
            continue
        f, labels, pool, test, text = d["feats"], d["labels"], d["pool"], d["test"], d["text"]
        rows.setdefault("zero-shot, 10 views", []).append(
            zero_shot_accuracy(f["c2p"][test], text, labels[test])
        )
        for k in (1, 4, 16):
            picked = pool[sample_shots(labels[pool], k, torch.Generator().manual_seed(seed * 100 + k))]
            for name, cfg in SETTINGS.items():
                acc = few_shot_accuracy(
                    [f[p][picked] for p in ("c2p", "clip")],
                    labels[picked],
                    [f[p][test] for p in ("c2p", "clip")],
                    labels[test],
                    text,
                    cfg,
                    seed,
                )
                rows.setdefault(f"{k}-shot, {name}", []).append(acc)
    print("| setting | accuracy (mean ± std over seeds) |\n|---|---|")
    for name, values in rows.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"| {name} | {statistics.mean(values):.3f} ± {spread:.3f} |")


if __name__ == "__main__":
    main()
