"""Why does B-Coder reranking not beat SFT on the tiny bench? Scores of held-out SFT samples, seed by seed.

Seed paper: B-Coder (Yu et al., arXiv 2310.03173). Re-runs the synthesis bench's recipe (``recipes/tiny.yaml``:
same seeds, data, pretraining, SFT and B-Coder training as ``warmstart-code bench``) and, for the SFT model's
samples on the held-out tasks, reports how well several scores order passing above failing programs of the
same task (``pair_accuracy``; 0.5 = chance) and the pass@1 of reranking by each: B-Coder's Q of the last
action, its V alone, the B-Coder LM's summed log-likelihood, the SFT model's mean token log-likelihood
(likelihood reranking) and the length; plus the passing share of B-Coder's replay buffer, the value's pair
accuracy on its own training samples and the correlation of Q with program length. A diagnostic, not a test.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python apps/code/scripts/bcoder_diagnosis.py`` (~6 min on 2 CPU cores).
"""

from __future__ import annotations

import copy
import json
import logging

import numpy as np
import torch

from warmstart.engine import quick_config
from warmstart_code.bcoder import (
    pair_accuracy,
    program_values,
    q_of_taken,
    rerank,
)
from warmstart_code.bench import SynthesisBenchConfig, bcoder_on_own_samples
from warmstart_code.data import generate_tasks
from warmstart_code.models import encode_pairs
from warmstart_code.sandbox import Sandbox, SandboxConfig
from warmstart_code.synthesis import (
    evaluate_model,
    pretrain_code_lm,
    supervised_finetune,
)

log = logging.getLogger("bcoder_diagnosis")


@torch.no_grad()
def scores(qmodel, sft_lm, tok, tasks, comps) -> dict[str, list[list[float]]]:
    """Per program: Q(last action), V at the last action, Σ log π_bcoder, mean log p_sft, completion tokens."""
    out: dict[str, list[list[float]]] = {
        k: [] for k in ("q_last", "v_last", "logp_bc_sum", "logp_sft_mean", "length")
    }
    for t, cs in zip(tasks, comps, strict=True):
        enc = encode_pairs(tok, [t.prompt] * len(cs), cs, 128)
        q, logp, value = q_of_taken(qmodel, enc)  # (B, T-1), (B, T, V), (B, T)
        lab = enc["labels"][:, 1:] != -100  # (B, T-1)
        last = lab.long().cumsum(-1).argmax(-1)  # (B,)
        taken = enc["input_ids"][:, 1:].unsqueeze(-1)  # (B, T-1, 1)
        lp_bc = logp[:, :-1].gather(-1, taken).squeeze(-1)
        sft_logits = sft_lm(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
        lp_sft = torch.log_softmax(sft_logits.float(), -1)[:, :-1].gather(-1, taken).squeeze(-1)
        out["q_last"].append(q.gather(-1, last[:, None]).squeeze(-1).tolist())
        out["v_last"].append(value[:, :-1].gather(-1, last[:, None]).squeeze(-1).tolist())
        out["logp_bc_sum"].append((lp_bc * lab).sum(-1).tolist())
        out["logp_sft_mean"].append(((lp_sft * lab).sum(-1) / lab.sum(-1)).tolist())
        out["length"].append(lab.sum(-1).float().tolist())
    return out


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    cfg = SynthesisBenchConfig(
        seeds=[0, 1, 2],
        pretrain_tasks=600,
        pretrain_steps=150,
        train_tasks=48,
        test_tasks=24,
        steps=40,
        n_samples=8,
    )  # = recipes/tiny.yaml
    res: dict[int, dict[str, float]] = {}
    with Sandbox(SandboxConfig()) as sb:
        for seed in cfg.seeds:
            pre = generate_tasks(cfg.pretrain_tasks, seed=1000 * seed)
            train = generate_tasks(cfg.train_tasks, seed=1000 * seed + 1, start_index=100_000)
            test = generate_tasks(cfg.test_tasks, seed=1000 * seed + 2, start_index=200_000)
            model, tok, _ = pretrain_code_lm(
                pre, cfg.model, quick_config(cfg.pretrain_steps, 32, 3e-3, seed, warmup=20)
            )
            sft_lm, _ = supervised_finetune(
                copy.deepcopy(model),
                tok,
                train,
                quick_config(cfg.steps, cfg.batch_size, cfg.lr, seed, warmup=0),
                128,
            )
            sft, samples, passed = evaluate_model(sft_lm, tok, test, sb, n=cfg.n_samples, k=cfg.k, seed=seed)
            q, sampled, passed_train = bcoder_on_own_samples(model, tok, train, sb, cfg, seed, 128)
            row = {
                "sft pass@1": sft.pass_at_1,
                "buffer passing share (sampled)": float(np.mean([x for p in passed_train for x in p])),
                "pair acc on own training samples": pair_accuracy(
                    program_values(q, tok, train, sampled), passed_train
                ),
            }
            s = scores(q.eval(), sft_lm.eval(), tok, test, samples)
            for k, v in s.items():
                row[f"pair acc {k}"] = pair_accuracy(v, passed)
                row[f"rerank pass@1 {k}"] = rerank(v, passed)
            flat_q = np.concatenate([np.asarray(x) for x in s["q_last"]])
            flat_len = np.concatenate([np.asarray(x) for x in s["length"]])
            row["corr(q_last, length)"] = float(np.corrcoef(flat_q, flat_len)[0, 1])
            res[seed] = row
            log.info("seed %d: %s", seed, json.dumps(row))
    for k in res[cfg.seeds[0]]:
        vals = [res[s][k] for s in res]
        log.info(
            "%-40s %.3f ± %.3f  %s", k, np.nanmean(vals), np.nanstd(vals, ddof=1), np.round(vals, 3).tolist()
        )


if __name__ == "__main__":
    main()
