"""Rules train_traj and train_trajeq: the trajectory baseline on D0 plus k DFT-trajectory frames.

traj-{k} (rule train_traj), as in the paper (golf-paper.md §2): the baseline fine-tuned once,
batches drawn uniformly from the concatenation of D0 and the trajectories, as many gradient steps
as the GOLF rounds (U x the GOLF budget).

trajeq-{k} (rule train_trajeq, issue 19): the same frames trained exactly as GOLF trains. Round r
fine-tunes round r-1 (the baseline for r = 1) on D0 and the first r x k/R frames in the seeded
start order, with golf_train's settings: each batch takes golf.initial_conf_pct of its
conformations from D0 and the rest from the new frames, U x (GOLF round r's new labels) steps at
GOLF round r's place of the shared cosine schedule (golf.workflow.golf_round_settings).
"""

import torch

from golf import data, nnp, train
from golf.labels import ProvenanceError, common_provenance
from golf.oracle_optimize import extra_frames
from golf.workflow import golf_round_settings, log_to, save_study_model, train_settings, trajeq_frames, user_errors

log_to(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
params = snakemake.params
d0 = data.read(snakemake.input.d0)
optimisations = data.read(snakemake.input.trajectories)
# One oracle for D0 and the trajectories (or a config key allows a mix).
sources = {snakemake.input.d0: d0, snakemake.input.trajectories: optimisations}
with user_errors(ProvenanceError):
    common_provenance(sources, allow_mixed=params.allow_mixed)
model = nnp.load_model(snakemake.input.model)
checkpointing = {"checkpoint": params.checkpoint, "checkpoint_every": params.train["train"]["checkpoint_every"]}

if "golf_labels" in snakemake.input.keys():  # trajeq: GOLF's recipe
    # GOLF's own label counts per round set the steps and the schedule: trajeq-{k} trains
    # exactly golf-R's gradient steps, whatever labels GOLF lost to failures.
    golf_rounds = [data.read(path) for path in snakemake.input.golf_labels]
    labelled = [sum(c.labelled for c in r.conformers) for r in golf_rounds]
    settings = golf_round_settings(params.train, params.utd_ratio, params.budget, labelled)
    new = trajeq_frames(optimisations, params.round, params.rounds)
    # The frames start from D0 conformations that are not held out (this seed's split), so
    # training keeps them all; an empty slice (k < R) trains on D0 alone, as GOLF would.
    result = train.train(
        model, d0, new if len(new) else None, settings, metrics_csv=snakemake.output.metrics, **checkpointing
    )
    result.model.meta["extra_oracle_calls"] = len(new)
    result.model.meta["trajeq"] = {"round": params.round, "rounds": params.rounds, "golf_labelled": labelled}
else:  # traj-k: the paper's recipe
    trajectories = extra_frames(optimisations)
    # D0's attributes carry its validation split; the trajectory frames start from D0 conformations
    # that are not held out, so training keeps them (golf.train validates by D0's marks).
    pool = data.concat([d0, trajectories], attrs=dict(d0.attrs))
    settings = train_settings(params.train, steps=params.steps)
    result = train.train(model, pool, None, settings, metrics_csv=snakemake.output.metrics, **checkpointing)
    result.model.meta["extra_oracle_calls"] = len(trajectories)
save_study_model(snakemake.output.model, result.model, params.max_displacement)
