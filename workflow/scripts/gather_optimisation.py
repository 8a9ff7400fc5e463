"""Rule gather_optimisation: the chunks of a set of oracle optimisations in one file; for the
trajectory baseline, whole trajectories in the seeded order up to its budget k, counted once."""

from golf import data
from golf.oracle.labels import ProvenanceError
from golf.oracle.trajectories import gather_trajectories
from golf.study.jobs import log_to, user_errors

log_to(snakemake.log[0])
chunks = [data.read(path) for path in snakemake.input.chunks]
params = snakemake.params
with user_errors(ProvenanceError):
    trajectories = gather_trajectories(chunks, budget=params.budget, allow_mixed=params.allow_mixed)
data.write(snakemake.output.trajectories, trajectories)
