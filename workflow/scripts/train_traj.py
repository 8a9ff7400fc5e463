"""Rule train_traj: traj-{k}, the baseline fine-tuned on D0 plus k DFT-trajectory conformations.

As in the paper (golf-paper.md §2), batches are drawn uniformly from the concatenation of D0 and
the trajectories, and the number of gradient steps equals the GOLF rounds' (U x the GOLF budget).
"""

import torch

from golf import data, nnp, train
from golf.labels import ProvenanceError, common_provenance
from golf.oracle_optimize import extra_frames
from golf.workflow import log_to, save_study_model, train_settings, user_errors

log_to(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
d0 = data.read(snakemake.input.d0)
optimisations = data.read(snakemake.input.trajectories)
# One oracle for D0 and the trajectories (or a config key allows a mix).
sources = {snakemake.input.d0: d0, snakemake.input.trajectories: optimisations}
with user_errors(ProvenanceError):
    common_provenance(sources, allow_mixed=snakemake.params.allow_mixed)
trajectories = extra_frames(optimisations)
# D0's attributes carry its validation split; the trajectory frames start from D0 conformations
# that are not held out, so training keeps them (golf.train validates by D0's marks).
pool = data.concat([d0, trajectories], attrs=dict(d0.attrs))
params = snakemake.params
settings = train_settings(params.train, steps=params.steps)
model = nnp.load_model(snakemake.input.model)
result = train.train(
    model,
    pool,
    None,
    settings,
    metrics_csv=snakemake.output.metrics,
    checkpoint=params.checkpoint,
    checkpoint_every=params.train["train"]["checkpoint_every"],
)
result.model.meta["extra_oracle_calls"] = len(trajectories)
save_study_model(snakemake.output.model, result.model, snakemake.params.max_displacement)
