"""Rule label_chunk: oracle labels for rows i, i + N, ... of a set (scatter item i+1-of-N)."""

from golf import data
from golf.oracle.labels import label_pending
from golf.oracle.oracle import Oracle
from golf.study.jobs import log_to, oracle_provenance, oracle_settings, scatter_item

log_to(snakemake.log[0])
chunk, n_chunks = scatter_item(snakemake.wildcards.scatteritem)
conformations = data.read(snakemake.input.conformers)
if snakemake.params.split:
    conformations = conformations.split(snakemake.params.split)
rows = list(range(chunk, len(conformations), n_chunks))
part = conformations.subset(rows)
for row, conformer in zip(rows, part.conformers, strict=True):
    conformer.props["source_row"] = row  # the gather restores the input order with it

with Oracle(oracle_settings(snakemake.params.oracle)) as oracle:
    labelled = label_pending(oracle, part)
    labelled.attrs.update(kind="labels", **oracle_provenance(oracle))
data.write(snakemake.output.labels, labelled)
