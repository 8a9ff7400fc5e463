"""Chemistry with RDKit: conformer generation, the symmetry-aware RMSD, the MMFF surrogate.

May import :mod:`golf.data` and :mod:`golf.units`.

- :mod:`golf.chem.conformers`: molecule lists and their filter, ETKDG conformers, the train/test
  split, RMSD.
- :mod:`golf.chem.mmff`: RDKit's MMFF94 as the surrogate oracle (GOLF's stop signal).
"""

from golf.chem.conformers import (
    MoleculeFilter,
    MoleculeListError,
    filter_molecules,
    generate_conformers,
    molecule_list_path,
    nearest_rmsd,
    read_molecule_list,
)
from golf.chem.mmff import MMFF, SurrogateError, SurrogatePool

__all__ = [
    "MoleculeListError",
    "read_molecule_list",
    "molecule_list_path",
    "MoleculeFilter",
    "filter_molecules",
    "generate_conformers",
    "nearest_rmsd",
    "MMFF",
    "SurrogateError",
    "SurrogatePool",
]
