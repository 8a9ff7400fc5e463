"""Rule gather_labels: the labelled chunks of a set, back in input order, force-norm filter applied."""

from golf import data
from golf.oracle.labels import ProvenanceError, gather
from golf.study.jobs import log_to, user_errors

log_to(snakemake.log[0])
chunks = [data.read(path) for path in snakemake.input.chunks]
with user_errors(ProvenanceError):
    labels = gather(chunks, max_force_norm=snakemake.params.max_force_norm, allow_mixed=snakemake.params.allow_mixed)
labels.attrs["config_digest"] = data.config_digest(dict(snakemake.params))
data.write(snakemake.output.labels, labels)
