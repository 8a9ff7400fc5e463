"""Rule report: the study's Table 2, per-step metrics and plots (results/report/)."""

from pathlib import Path

from golf.study.jobs import log_to
from golf.study.report import build_report

log_to(snakemake.log[0])
inputs = snakemake.input
# Every seed's d0.h5 holds the same labelled conformations (only the validation marks differ by
# seed), so the first one stands for all.
build_report(
    per_step_csvs=inputs.per_step,
    eval_labels=inputs.labels,
    round_labels=inputs.round_labels,
    random_labels=inputs.random_labels,
    model_metrics=inputs.model_metrics,
    traj=inputs.traj,
    test_set=inputs.test_set,
    evaluation=snakemake.params.evaluation,
    settings=snakemake.params.settings,
    outdir=Path(snakemake.output.summary).parent,
    d0=inputs.d0[0] if len(inputs.d0) else None,
)
