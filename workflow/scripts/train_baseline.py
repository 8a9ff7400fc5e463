"""Rule train_baseline: an NNP trained from scratch on D0 (f_baseline, golf-0)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1] / "src"))

import torch

from golf import data, nnp, train
from golf.workflow import log_to, new_model, train_settings

log_to(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
config = snakemake.config
d0 = data.read(snakemake.input.d0)
settings = train_settings(config, steps=config["train"]["baseline_steps"])
result = train.train(new_model(config, d0), d0, None, settings, metrics_csv=snakemake.output.metrics)
nnp.save_model(snakemake.output.model, result.model)
