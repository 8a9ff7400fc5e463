"""Rule golf_optimize: a GOLF round's NNP trajectories with the MMFF stop, every frame kept."""

import torch

from golf import data, nnp
from golf.active.explore import run_golf_trajectories
from golf.study.jobs import log_to
from golf.study.names import round_seed
from golf.train.validation import validation_predicate

log_to(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
golf = snakemake.params.golf
r = int(snakemake.wildcards.round)
model = nnp.load_model(snakemake.input.model, device=nnp.resolve_device(snakemake.params.device))
d0 = data.read(snakemake.input.d0)
trajectories = run_golf_trajectories(
    model,
    d0,
    n_candidates=golf["per_round"],
    parallel=golf["parallel"],
    timelimit=golf["timelimit"],
    mmff_threshold=golf["mmff_threshold"],
    seed=round_seed(golf["seed"], r),  # a different, reproducible start sample every round
    round_index=r,
    max_displacement=golf["max_displacement"],
    exclude=validation_predicate(d0),
)
trajectories.attrs["config_digest"] = data.config_digest(dict(snakemake.params))
data.write(snakemake.output.trajectories, trajectories)
