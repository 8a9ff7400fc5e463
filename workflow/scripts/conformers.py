"""Rule conformers: molecule list -> RDKit conformers (train and test split) in HDF5."""

from golf import data
from golf.chem import conformers
from golf.study.jobs import log_to

log_to(snakemake.log[0])
settings = snakemake.params.settings
specs, skipped = conformers.read_molecule_list(snakemake.input.molecules)
rules = conformers.MoleculeFilter(**snakemake.params.molecule_filter)
specs, filtered = conformers.filter_molecules(specs, snakemake.params.elements, rules)
dataset = conformers.generate_conformers(
    specs,
    elements=snakemake.params.elements,
    per_molecule=settings["per_molecule"],
    test_per_molecule=settings["test_per_molecule"],
    test_fraction=settings["test_fraction"],
    attempts=settings["attempts"],
    seed=settings["seed"],
    mmff_relax=settings["mmff_relax"],
    rmsd_threshold=settings["rmsd_threshold"],
    split=settings["split"],
    noise=settings["noise"],
    skipped=skipped,
)
dataset.attrs.update(
    kind="conformers", molecule_filter=filtered, config_digest=data.config_digest(dict(snakemake.params))
)
data.write(snakemake.output.conformers, dataset)
