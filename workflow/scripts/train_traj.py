"""Rules train_traj and train_trajeq: the trajectory baseline on D0 plus k DFT-trajectory frames,
as the paper trains it (traj-{k}, golf.study.recipes.train_traj) or as GOLF trains
(trajeq-{k}'s rounds, golf.study.recipes.train_trajeq)."""

import torch

from golf import data, nnp
from golf.study.jobs import log_to, save_study_model
from golf.study.recipes import check_one_oracle, train_traj, train_trajeq

log_to(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
params = snakemake.params
d0 = data.read(snakemake.input.d0)
optimisations = data.read(snakemake.input.trajectories)
check_one_oracle({snakemake.input.d0: d0, snakemake.input.trajectories: optimisations}, params.allow_mixed)
model = nnp.load_model(snakemake.input.model)
files = {"metrics_csv": snakemake.output.metrics, "checkpoint": params.checkpoint}
if "golf_labels" in snakemake.input.keys():  # trajeq: GOLF's recipe
    golf_rounds = [data.read(path) for path in snakemake.input.golf_labels]
    model = train_trajeq(
        model,
        d0,
        optimisations,
        golf_rounds,
        params.train,
        utd_ratio=params.utd_ratio,
        budget=params.budget,
        round_=params.round,
        rounds=params.rounds,
        **files,
    )
else:  # traj-k: the paper's recipe
    model = train_traj(model, d0, optimisations, params.train, steps=params.steps, **files)
save_study_model(snakemake.output.model, model, params.max_displacement)
