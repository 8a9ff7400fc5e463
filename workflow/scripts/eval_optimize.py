"""Rule eval_optimize: a model's optimisation of every test conformation, frames at the eval steps
(golf.study.evaluate.evaluation_frames)."""

import torch

from golf import data, nnp
from golf.study import evaluate
from golf.study.jobs import log_to

log_to(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
params = snakemake.params
model = None  # MMFF
if params.model != "mmff":
    model = nnp.load_model(snakemake.input.model, device=nnp.resolve_device(params.device))
frames = evaluate.evaluation_frames(
    model,
    evaluate.evaluable(data.read(snakemake.input.test_set)),
    params.evaluation["timelimit"],
    params.evaluation["steps"],
    name=params.model,
    max_displacement=params.max_displacement,
    seed=params.seed,
)
data.write(snakemake.output.frames, frames)
