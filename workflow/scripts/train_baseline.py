"""Rule train_baseline: an NNP trained from scratch on D0 (f_baseline, golf-0)."""

import torch

from golf import data, nnp, optimize, train
from golf.workflow import log_to, new_model, train_settings

log_to(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
params = snakemake.params
d0 = data.read(snakemake.input.d0)
settings = train_settings(params.train, steps=params.train["train"]["baseline_steps"])
result = train.train(
    new_model(params.model, d0),
    d0,
    None,
    settings,
    metrics_csv=snakemake.output.metrics,
    checkpoint=params.checkpoint,
    checkpoint_every=params.train["train"]["checkpoint_every"],
)
# How golf optimize and the ASE calculator optimise this model unless told otherwise: the way
# the study's GOLF rounds optimise (golf.max_displacement; None is the paper's L-BFGS).
result.model.meta["optimizer"] = optimize.optimizer_meta(max_displacement=snakemake.params.max_displacement)
nnp.save_model(snakemake.output.model, result.model)
