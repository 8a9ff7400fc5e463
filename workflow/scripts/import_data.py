"""Rule import_data: a user's D0 or test set (ASE db, extxyz, SDF, XYZ, our HDF5) as our HDF5."""

from pathlib import Path

from golf import data
from golf.data.formats import import_file
from golf.study.jobs import log_to

log_to(snakemake.log[0])
name = snakemake.wildcards.name
split = "test" if name == "test" else "train"
if Path(snakemake.input.source).suffix in (".h5", ".hdf5"):
    dataset = data.read(snakemake.input.source)  # already ours; only its role is set here
    for molecule in dataset.molecules.values():
        molecule.split = split
else:
    # Records with elements the NNP does not cover are skipped and listed in the file's
    # skipped_records attribute (golf inspect shows them), not a failed import.
    dataset = import_file(
        snakemake.input.source, split=split, allow_elements=snakemake.params.elements, on_error="skip"
    )
dataset.attrs.update(kind=f"imported_{name}", source=str(snakemake.input.source))
data.write(snakemake.output.dataset, dataset)
