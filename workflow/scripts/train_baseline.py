"""Rule train_baseline: an NNP trained from scratch on D0 (f_baseline, golf-0)."""

import torch

from golf import data, train
from golf.study.jobs import log_to, new_model, save_study_model, train_settings

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
save_study_model(snakemake.output.model, result.model, snakemake.params.max_displacement)
