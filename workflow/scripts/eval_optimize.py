"""Rule eval_optimize: a model's optimisation of every test conformation, frames at the eval steps.

The protocol is the evaluation's, not the checkpoint's: the paper's L-BFGS without a cap, or
the capped row set "<model>.capped-<x>" (params.max_displacement).
"""

import torch

from golf import data, evaluate, nnp
from golf.workflow import log_to

log_to(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
params = snakemake.params
settings = params.evaluation
starts = evaluate.evaluable(data.read(snakemake.input.test_set))
if params.model == "mmff":
    frames = evaluate.mmff_frames(starts, settings["timelimit"])
else:
    model = nnp.load_model(snakemake.input.model, device=nnp.resolve_device(params.device))
    frames = evaluate.nnp_frames(
        model,
        starts,
        settings["timelimit"],
        sorted(settings["steps"]),
        max_displacement=params.max_displacement,
    )
# The labelling keeps these attributes: the report groups evaluations by (protocol, model, seed).
frames.attrs.update(kind="evaluation_frames", model=params.model)
if params.seed is not None:  # MMFF has none: it pairs with every seed of the NNPs
    frames.attrs["seed"] = params.seed
data.write(snakemake.output.frames, frames)
