"""Rule oracle_optimize: oracle (DFT) geometry optimisations of one chunk of start conformations."""

from golf import data
from golf.oracle import Oracle
from golf.oracle_optimize import oracle_trajectories, shuffled
from golf.validation import validation_predicate
from golf.workflow import log_to, oracle_provenance, oracle_settings, scatter_item

log_to(snakemake.log[0])
params = snakemake.params
chunk, n_chunks = scatter_item(snakemake.wildcards.scatteritem)
starts = data.read(snakemake.input.conformers)
if params.split:
    starts = starts.split(params.split)
budget = None
if params.traj is not None:
    # The trajectory baseline starts from labelled D0 conformations in a seeded random order,
    # of molecules that training does not hold out for validation; this chunk runs whole
    # trajectories until its share of the budget is spent, the gather keeps k in that order.
    held_out = validation_predicate(starts)
    starts = starts.subset([c.labelled and not held_out(c) for c in starts.conformers])
    order = shuffled(len(starts), params.traj["seed"])[chunk::n_chunks]
    budget = params.traj["share"]
else:
    order = list(range(chunk, len(starts), n_chunks))

with Oracle(oracle_settings(params.oracle)) as oracle:
    trajectories = oracle_trajectories(
        oracle,
        starts,
        fmax=params.fmax,
        max_steps=params.max_steps,
        max_displacement=params.max_displacement,
        budget=budget,
        whole_trajectories=True,
        order=order,
        optimiser=params.optimiser,
    )
    for frame in trajectories.conformers:  # the rank in the whole seeded order, for the gather
        frame.props["rank"] = chunk + frame.props["rank"] * n_chunks
    trajectories.attrs.update(kind="oracle_optimisation", **oracle_provenance(oracle))
data.write(snakemake.output.trajectories, trajectories)
