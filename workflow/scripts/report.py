"""Rule report: the study's Table 2, per-step metrics and plots (results/report/)."""

from pathlib import Path

from golf.report import build_report
from golf.workflow import log_to

log_to(snakemake.log[0])
inputs = snakemake.input


def first_seed(paths):
    """The first seed's files of a seed-by-seed list (all of them with one seed): what a
    build_report that numbers rounds by their position in the list expects."""
    paths = list(paths)
    return [p for p in paths if Path(p).parent == Path(paths[0]).parent] if paths else []


# build_report numbers rounds by their position in round_labels/random_labels, so those get the
# first seed's files; every seed's go to budget_labels (issue 19: each arm's real oracle calls and
# new conformations per seed). Every seed's d0.h5 holds the same labelled conformations (only the
# validation marks differ by seed), so the first one stands for all.
build_report(
    per_step_csvs=inputs.per_step,
    eval_labels=inputs.labels,
    round_labels=first_seed(inputs.round_labels),
    random_labels=first_seed(inputs.random_labels),
    model_metrics=inputs.model_metrics,
    traj=inputs.traj,
    test_set=inputs.test_set,
    evaluation=snakemake.params.evaluation,
    settings=snakemake.params.settings,
    outdir=Path(snakemake.output.summary).parent,
    budget_labels=[*inputs.round_labels, *inputs.random_labels, *inputs.traj_labels],
    d0=inputs.d0[0] if len(inputs.d0) else None,
)
