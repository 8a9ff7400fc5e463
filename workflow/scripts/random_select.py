"""Rule random_select: the random-selection control's conformation of each GOLF trajectory
(golf.study.recipes.random_control_selection)."""

import torch

from golf import data, nnp
from golf.study.jobs import log_to
from golf.study.recipes import random_control_selection

log_to(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
params = snakemake.params
selected = random_control_selection(
    nnp.load_model(snakemake.input.model, device=nnp.resolve_device(params.device)),
    data.read(snakemake.input.trajectories),
    [data.read(snakemake.input.d0), *(data.read(p) for p in snakemake.input.known)],
    seed=params.seed,
    round_=int(snakemake.wildcards.round),
    mmff_threshold=params.mmff_threshold,
    parallel=params.parallel,
    timelimit=params.timelimit,
    max_displacement=params.max_displacement,
)
data.write(snakemake.output.selected, selected)
