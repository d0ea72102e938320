"""Evaluation: perplexity, linear probe and kNN on frozen features, bootstrap CIs, forgetting, pass@k, the bench
report, and bench jobs in worker processes."""

from warmstart.eval.bootstrap import bootstrap_ci, bootstrap_diff_ci
from warmstart.eval.forgetting import forgetting, forgetting_per_task
from warmstart.eval.jobs import run_jobs
from warmstart.eval.pass_at_k import mean_pass_at_k, pass_at_k
from warmstart.eval.perplexity import forward_logits, perplexity
from warmstart.eval.probe import ProbeResult, knn_accuracy, knn_predict, linear_probe
from warmstart.eval.report import BenchReport, environment_info, write_bench_report

__all__ = [
    "BenchReport",
    "ProbeResult",
    "bootstrap_ci",
    "bootstrap_diff_ci",
    "environment_info",
    "forgetting",
    "forgetting_per_task",
    "forward_logits",
    "knn_accuracy",
    "knn_predict",
    "linear_probe",
    "mean_pass_at_k",
    "pass_at_k",
    "perplexity",
    "run_jobs",
    "write_bench_report",
]
