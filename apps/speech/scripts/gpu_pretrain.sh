#!/usr/bin/env bash
# One prepared GPU check (not run yet: no GPU was lent to the session that wrote it).
# Base-size CTC+OT pretraining for 300 steps in bf16; prints utterances/s and peak memory.
set -euo pipefail
OUT=${OUT:-/tmp/speech-gpu}
RECIPE=apps/speech/src/warmstart_speech/recipes/gpu-base.yaml
uv run warmstart-speech data-synth --out "$OUT/corpus" --synth.n_train 2000 --synth.n_test 100
uv run warmstart-speech mt-train --data "$OUT/corpus/train.tsv" --config "$RECIPE" --out "$OUT/mt"
uv run python - "$OUT" "$RECIPE" <<'PY'
import sys, time, torch
from warmstart_speech.cli import app
out, recipe = sys.argv[1], sys.argv[2]
torch.cuda.reset_peak_memory_stats()
t = time.perf_counter()
app.main(["pretrain", "--objective", "ctc+ot", "--mt", f"{out}/mt", "--data", f"{out}/corpus/train.tsv",
          "--config", recipe, "--out", f"{out}/pretrain"])
print(f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB, wall {time.perf_counter() - t:.0f} s "
      "(samples_per_s in the summary above = utterances/s)")
PY
