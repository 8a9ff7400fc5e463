"""Rule import_reference: oracle minima energies taken from the test file (property e_opt)."""

from golf import data
from golf.oracle_optimize import reference_from_known_minima
from golf.workflow import log_to

log_to(snakemake.log[0])
data.write(snakemake.output.reference, reference_from_known_minima(data.read(snakemake.input.test)))
