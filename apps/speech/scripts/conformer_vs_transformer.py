"""Paired CPU rounds: CTC+OT pretraining with a transformer vs a conformer speech encoder (tiny sizes).

Usage: OMP_NUM_THREADS=1 python apps/speech/scripts/conformer_vs_transformer.py <train.tsv with translations>
(e.g. the corpus-B/train.tsv of `warmstart-speech bench --kind ssl`, or any `data-synth` train.tsv).
One MT teacher (150 steps); per round both encoders pretrain 60 steps (order alternating); prints samples/s,
the median of the per-round conformer/transformer ratios with its range, the CTC phoneme error rate and the
modality gap on the held-out set, and the parameter counts.
"""

from __future__ import annotations

import statistics
import sys


def main(manifest: str, rounds: int = 3, steps: int = 60) -> None:
    import torch

    from warmstart.engine import quick_config
    from warmstart_speech.ctc_ot import modality_gap, phoneme_error_rate
    from warmstart_speech.models import ModelConfig, SpeechEncoder
    from warmstart_speech.stages import load_corpus, pretrain_encoder, train_mt

    torch.set_num_threads(1)
    corpus = load_corpus(manifest)
    mt, _ = train_mt(corpus, ModelConfig(), quick_config(150, 16, 2e-3, warmup=0, log_every=10))
    kinds = ("transformer", "conformer")
    speed: dict[str, list[float]] = {k: [] for k in kinds}
    quality: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    for r in range(rounds):
        for kind in kinds if r % 2 == 0 else kinds[::-1]:
            cfg = ModelConfig(encoder=kind)
            enc, summary = pretrain_encoder(
                corpus, cfg, quick_config(steps, 16, 2e-3, r, warmup=0, log_every=10), "ctc+ot", mt
            )
            speed[kind].append(summary.samples_per_s)
            per = phoneme_error_rate(enc, corpus.test, corpus.src_vocab)
            quality[kind].append((per, modality_gap(enc, mt, corpus.test)))
            print(r, kind, f"{summary.samples_per_s:.1f} utt/s", f"PER {per:.1f}", flush=True)
    ratios = [c / t for c, t in zip(speed["conformer"], speed["transformer"], strict=True)]
    n_src = len(corpus.src_vocab)
    print(
        "params",
        {k: sum(p.numel() for p in SpeechEncoder(ModelConfig(encoder=k), n_src).parameters()) for k in kinds},
    )
    print(
        "samples/s",
        speed,
        f"ratio conformer/transformer median {statistics.median(ratios):.2f}",
        min(ratios),
        max(ratios),
    )
    print("PER / modality gap", quality)


if __name__ == "__main__":
    main(sys.argv[1])
