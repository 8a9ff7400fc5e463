"""Rule train_traj: traj-{k}, the baseline fine-tuned on D0 plus k DFT-trajectory conformations.

As in the paper (golf-paper.md §2), batches are drawn uniformly from the concatenation of D0 and
the trajectories, and the number of gradient steps equals the GOLF rounds' (U x the GOLF budget).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1] / "src"))

import torch

from golf import data, nnp, train
from golf.config import golf_budget
from golf.oracle_optimize import extra_frames
from golf.workflow import log_to, train_settings

log_to(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
config = snakemake.config
d0 = data.read(snakemake.input.d0)
trajectories = extra_frames(data.read(snakemake.input.trajectories))
pool = data.concat([d0, trajectories])
steps = config["golf"]["utd_ratio"] * max(golf_budget(config), 1)
settings = train_settings(config, steps=steps)
model = nnp.load_model(snakemake.input.model)
result = train.train(model, pool, None, settings, metrics_csv=snakemake.output.metrics)
result.model.meta["extra_oracle_calls"] = len(trajectories)
nnp.save_model(snakemake.output.model, result.model)
