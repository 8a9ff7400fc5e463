"""Rule d0: D0 with its validation split decided once (property ``validation``, golf.train.trainer)."""

from golf import data
from golf.study.jobs import log_to
from golf.train.validation import mark_validation

log_to(snakemake.log[0])
v = snakemake.params.validation
d0 = mark_validation(data.read(snakemake.input.d0), v["val_fraction"], v["seed"], v["by"])
data.write(snakemake.output.d0, d0)
