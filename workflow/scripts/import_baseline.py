"""Rule import_baseline: config nnp.baseline_model as the study's baseline, no training."""

from golf import nnp
from golf.study.jobs import imported_baseline, log_to, save_study_model, user_errors

log_to(snakemake.log[0])
params = snakemake.params
with user_errors(nnp.NNPError, nnp.CheckpointError):
    model = imported_baseline(snakemake.input.model, params.elements)
# As for a trained baseline: optimised the way the study's GOLF rounds optimise.
save_study_model(snakemake.output.model, model, params.max_displacement)
