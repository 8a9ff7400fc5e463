"""Rule oracle_optimize: oracle (DFT) geometry optimisations of one chunk of start conformations."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1] / "src"))

from golf import data
from golf.oracle import Oracle
from golf.oracle_optimize import optimise_dataset, shuffled
from golf.workflow import log_to, oracle_provenance, oracle_settings, validation_molecules

log_to(snakemake.log[0])
params = snakemake.params
chunk = int(snakemake.wildcards.chunk)
starts = data.read(snakemake.input.conformers)
if params.split:
    starts = starts.split(params.split)
if params.budget is not None:
    # The trajectory baseline starts from labelled D0 conformations in a seeded random order,
    # of molecules that training does not hold out for validation.
    held_out = validation_molecules(snakemake.config, starts)
    starts = starts.subset([c.labelled and c.molecule_id not in held_out for c in starts.conformers])
    order = [i for i in shuffled(len(starts), params.seed) if i % params.n_chunks == chunk]
else:
    order = list(range(chunk, len(starts), params.n_chunks))

with Oracle(oracle_settings(params.oracle)) as oracle:
    trajectories = optimise_dataset(
        oracle,
        starts,
        fmax=params.optimisation["fmax"],
        max_steps=params.max_steps,
        max_displacement=params.optimisation["max_displacement"],
        budget=params.budget,
        order=order,
    )
    trajectories.attrs.update(kind="oracle_optimisation", **oracle_provenance(oracle))
data.write(snakemake.output.trajectories, trajectories)
