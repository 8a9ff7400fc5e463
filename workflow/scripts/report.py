"""Rule report: the study's Table 2, per-step metrics and plots (results/report/)."""

from pathlib import Path

from golf.report import build_report
from golf.workflow import log_to

log_to(snakemake.log[0])
build_report(
    per_step_csvs=snakemake.input.per_step,
    eval_labels=snakemake.input.labels,
    round_labels=snakemake.input.round_labels,
    random_labels=snakemake.input.random_labels,
    model_metrics=snakemake.input.model_metrics,
    traj=snakemake.input.traj,
    test_set=snakemake.input.test_set,
    evaluation=snakemake.params.evaluation,
    settings=snakemake.params.settings,
    outdir=Path(snakemake.output.summary).parent,
)
