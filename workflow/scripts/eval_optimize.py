"""Rule eval_optimize: a model's optimisation of every test conformation, frames at the eval steps."""

import torch

from golf import data, evaluate, nnp
from golf.workflow import log_to

log_to(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
settings = snakemake.params.evaluation
starts, _ = evaluate.test_set(data.read(snakemake.input.reference))
if snakemake.wildcards.model == "mmff":
    frames = evaluate.mmff_frames(starts, settings["timelimit"])
else:
    model = nnp.load_model(snakemake.input.model, device=nnp.resolve_device(snakemake.params.device))
    frames = evaluate.nnp_frames(
        model,
        starts,
        settings["timelimit"],
        sorted(settings["steps"]),
        max_displacement=snakemake.params.max_displacement,
    )
frames.attrs.update(kind="evaluation_frames", model=snakemake.wildcards.model)
data.write(snakemake.output.frames, frames)
