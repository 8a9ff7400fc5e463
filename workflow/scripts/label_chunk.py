"""Rule label_chunk: oracle labels for rows chunk, chunk + N, ... of a set of conformations."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1] / "src"))

from golf import data
from golf.labels import label_pending
from golf.oracle import Oracle
from golf.workflow import log_to, oracle_provenance, oracle_settings

log_to(snakemake.log[0])
chunk, n_chunks = int(snakemake.wildcards.chunk), snakemake.params.n_chunks
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
