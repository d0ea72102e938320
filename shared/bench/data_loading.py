"""Data loading that scales: the engine's loader on a folder of GeoTIFF chips read per item, in-process
(``train.num_workers 0``: :class:`~warmstart.engine.ResumableLoader`) against 2 worker processes (torchdata's
``StatefulDataLoader`` behind :class:`~warmstart.engine.data.WorkerLoader`), and exact resume with workers.

    uv run python shared/bench/data_loading.py [--scenes 16] [--batches 60] [--out F.json]

The folder is written by the eo app's generator (real GeoTIFFs with a CRS); each item opens its scene with
rasterio and reads one chip window, as a dataset too large for memory is read. Reported: samples/s at 0
and 2 workers (median of rounds), and whether the batches after a mid-epoch state_dict/load_state_dict with
workers equal the uninterrupted sequence. On a machine whose cores are busy the worker figure says little.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch


class GeoTiffChips(torch.utils.data.Dataset):
    """(file, window) items over a folder of GeoTIFFs; each ``__getitem__`` reads one window from disk."""

    def __init__(self, folder: Path, chip: int = 32) -> None:
        import rasterio

        self.items: list[tuple[str, int, int]] = []
        self.chip = chip
        for path in sorted(folder.glob("*.tif")):
            with rasterio.open(path) as src:
                for row in range(0, src.height - chip + 1, chip):
                    for col in range(0, src.width - chip + 1, chip):
                        self.items.append((str(path), row, col))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> torch.Tensor:
        import rasterio
        from rasterio.windows import Window

        path, row, col = self.items[i]
        with rasterio.open(path) as src:
            data = src.read(window=Window(col, row, self.chip, self.chip))  # (C, h, w)
        return torch.from_numpy(data.astype("float32"))


def _loader(dataset, workers: int, batch: int):
    from warmstart.engine import ResumableLoader
    from warmstart.engine.data import WorkerLoader

    if workers == 0:
        return ResumableLoader(dataset, batch, seed=0)
    return WorkerLoader(dataset, batch, num_workers=workers, seed=0)


def samples_per_s(dataset, workers: int, batch: int, batches: int) -> float:
    loader = _loader(dataset, workers, batch)
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch / (time.perf_counter() - start)


def resume_equal(dataset, batch: int, head: int, tail: int) -> bool:
    uninterrupted = iter(_loader(dataset, 0, batch))
    expected = [next(uninterrupted) for _ in range(head + tail)]
    first = _loader(dataset, 2, batch)
    it = iter(first)
    seen = [next(it) for _ in range(head)]
    state = first.state_dict()
    second = _loader(dataset, 2, batch)
    second.load_state_dict(state)
    it2 = iter(second)
    seen += [next(it2) for _ in range(tail)]
    return all(torch.equal(a, b) for a, b in zip(seen, expected, strict=True))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench-out/data_loading.json"))
    args = parser.parse_args(argv)
    from warmstart_eo.data import SynthConfig, synthesize

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        synthesize(Path(tmp), SynthConfig(scenes=args.scenes, size=128, frames=3))
        dataset = GeoTiffChips(Path(tmp) / "images")
        rates = {
            w: [samples_per_s(dataset, w, args.batch, args.batches) for _ in range(args.rounds)]
            for w in (0, 2)
        }
        equal = resume_equal(dataset, args.batch, head=len(dataset) // args.batch + 3, tail=7)
    median = {f"workers_{w}": statistics.median(v) for w, v in rates.items()}
    result = {
        "items": len(dataset),
        "samples_per_s": median,
        "per_round": {f"workers_{w}": v for w, v in rates.items()},
        "speedup_2_over_0": median["workers_2"] / median["workers_0"],
        "resume_equal_with_workers": equal,
        "cpus": os.cpu_count(),
    }
    print(f"{len(dataset)} chips from {args.scenes} GeoTIFFs, batch {args.batch}")
    print(
        f"  0 workers: {median['workers_0']:.0f} samples/s   2 workers: {median['workers_2']:.0f} samples/s"
    )
    print(f"  resume with 2 workers equals the uninterrupted batches: {equal}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    if not equal:
        raise SystemExit("resume with workers diverged from the uninterrupted order")


if __name__ == "__main__":
    main()
