"""Rule golf_round_stats: one CSV row describing a GOLF round."""

from golf import data
from golf.active.round_stats import round_stats
from golf.study.jobs import log_to

log_to(snakemake.log[0])
stats = round_stats(
    int(snakemake.wildcards.round),
    trajectories=data.read(snakemake.input.trajectories),
    selected=data.read(snakemake.input.selected),
    labels=data.read(snakemake.input.labels),
    benchmarks=snakemake.params.benchmarks,
)
stats.to_csv(snakemake.output.stats, index=False)
