"""Rule oracle_optimize: oracle (DFT) geometry optimisations of one chunk of start conformations
(golf.study.recipes.oracle_optimisation_chunk)."""

from golf import data
from golf.oracle.oracle import Oracle
from golf.study.jobs import log_to, oracle_provenance, oracle_settings, scatter_item
from golf.study.recipes import oracle_optimisation_chunk

log_to(snakemake.log[0])
params = snakemake.params
chunk, n_chunks = scatter_item(snakemake.wildcards.scatteritem)
starts = data.read(snakemake.input.conformers)
if params.split:
    starts = starts.split(params.split)
with Oracle(oracle_settings(params.oracle)) as oracle:
    trajectories = oracle_optimisation_chunk(
        oracle,
        starts,
        chunk,
        n_chunks,
        params.traj,
        fmax=params.fmax,
        max_steps=params.max_steps,
        max_displacement=params.max_displacement,
        optimiser=params.optimiser,
    )
    trajectories.attrs.update(kind="oracle_optimisation", **oracle_provenance(oracle))
data.write(snakemake.output.trajectories, trajectories)
