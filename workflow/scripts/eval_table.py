"""Rule eval_table: oracle-labelled evaluation frames -> the per-step table of golf.study.metrics."""

from golf import data
from golf.study import evaluate
from golf.study.jobs import log_to

log_to(snakemake.log[0])
test_set = evaluate.evaluable(data.read(snakemake.input.test_set))
frames = data.read(snakemake.input.labels)
# The protocol column comes from the frames' attrs["protocol"] (written by eval_optimize).
table = evaluate.per_step_table(snakemake.params.model, frames, test_set)
if snakemake.params.seed is not None:  # the study seed of the NNP (golf.study.report.s contract)
    table["seed"] = snakemake.params.seed
table.to_csv(snakemake.output.per_step, index=False)
