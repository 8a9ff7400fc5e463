"""Rule test_set: one row per test conformation, its start and its oracle minimum (golf.study.evaluate)."""

from golf import data
from golf.study import evaluate
from golf.study.jobs import log_to

log_to(snakemake.log[0])
source = data.read(snakemake.input.source)
if snakemake.params.known_minima:  # an imported test set with its minima energies (property e_opt)
    test_set = evaluate.known_minima_test_set(source)
else:  # the reference optimisations
    test_set = evaluate.reference_test_set(source)
data.write(snakemake.output.test_set, test_set)
