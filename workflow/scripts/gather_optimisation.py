"""Rule gather_optimisation: the chunks of a set of oracle optimisations in one file; for the
trajectory baseline, whole trajectories in the seeded order up to its budget k, counted once."""

from golf import data
from golf.oracle_optimize import gather_trajectories
from golf.workflow import log_to

log_to(snakemake.log[0])
chunks = [data.read(path) for path in snakemake.input.chunks]
data.write(snakemake.output.trajectories, gather_trajectories(chunks, budget=snakemake.params.budget))
