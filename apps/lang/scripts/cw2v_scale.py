"""CW2V at a BERT-base scale on CPU: 30,000 old rows (D=768) + 8,000 new tokens, timed end to end.

Usage: ``python apps/lang/scripts/cw2v_scale.py [--untied] [--threads 2] [--out result.json]``. The old rows
are random (D=768, BERT-base's width) and the target corpus is 2,000 sequences of 256 ids, each drawn from
one of 100 topics (300 old + 80 new ids each, 20 % noise; a topic's old rows share a centroid), so a
new token's contexts are learnable; what
is timed is
``warmstart.init.cw2v_rows`` with its default config (sparse support 256, early stop) and expand's 60 s
training budget, pair building and the final rows included. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from warmstart.init import CW2VConfig, cw2v_rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--n_old", type=int, default=30_000)
    p.add_argument("--n_new", type=int, default=8_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--docs", type=int, default=2_000)
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--untied", action="store_true", help="also train the rows of a separate output head")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--budget", type=float, default=60.0, help="cw2v training seconds (expand default: 60)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    # 100 topics, each 300 old + n_new/100 new ids; a document draws from its topic 80 % of the time;
    # the old rows of a topic cluster around its centroid (as related tokens' embeddings do)
    topics = 100
    old_of = torch.randperm(args.n_old, generator=g)[: topics * 300].view(topics, 300)
    centroids = torch.randn(topics, args.dim, generator=g) * 0.1
    old = torch.randn(args.n_old, args.dim, generator=g) * 0.1
    old[old_of.reshape(-1)] += centroids.repeat_interleave(300, 0)
    head = old + torch.randn(args.n_old, args.dim, generator=g) * 0.05 if args.untied else None
    new_of = (args.n_old + torch.randperm(args.n_new, generator=g)).view(topics, -1)
    pool = torch.cat([old_of, new_of], 1)  # (topics, 300 + n_new / topics)
    topic = torch.randint(topics, (args.docs,), generator=g)
    pick = torch.randint(pool.shape[1], (args.docs, args.length), generator=g)
    ids = pool[topic].gather(1, pick)  # (docs, length)
    noise = torch.rand(args.docs, args.length, generator=g) < 0.2
    ids[noise] = torch.randint(args.n_old + args.n_new, (int(noise.sum()),), generator=g)
    sequences = list(ids)
    steps: list[int] = []
    start = time.perf_counter()
    res = cw2v_rows(
        old,
        args.n_new,
        sequences,
        old_head=head,
        config=CW2VConfig(max_seconds=args.budget),
        generator=g,
        progress=lambda step, total, loss: steps.append(step),
    )
    seconds = time.perf_counter() - start
    inside = bool((res.weights()[:8] >= 0).all())
    result = {
        "n_old": args.n_old,
        "n_new": args.n_new,
        "dim": args.dim,
        "untied": args.untied,
        "threads": args.threads,
        "seconds": round(seconds, 1),
        "train_seconds": round(res.seconds, 1),
        "steps": len(res.losses),
        "stopped": res.stopped,
        "first_loss": round(res.losses[0], 4) if res.losses else None,
        "last_loss": round(sum(res.losses[-20:]) / max(len(res.losses[-20:]), 1), 4),
        "heldout": [(s, round(v, 4)) for s, v in res.heldout_losses],
        "convex": inside,
    }
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=1)
    return result


if __name__ == "__main__":
    main()
