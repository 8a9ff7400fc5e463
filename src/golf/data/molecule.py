"""The data contract's molecule: the elements we support and the atom order of a conformation.

A conformation's atoms are in the order of ``Chem.AddHs(Chem.MolFromSmiles(smiles))`` for its
molecule's SMILES as stored (golf.data.dataset). Every module that needs that RDKit molecule, or
one with a conformation's coordinates, takes it from here, so the order has one definition.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = [
    "ELEMENTS",
    "SYMBOLS",
    "SmilesError",
    "addhs_template",
    "canonical_smiles",
    "set_positions",
    "with_coordinates",
]

# Elements of the nablaDFT/GOLF chemistry we support (reference/golf-paper.md §5, without Br): the
# NNP's, the importers' and the config schema's (tests/test_config.py holds the schema to it).
ELEMENTS: dict[str, int] = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9, "S": 16, "Cl": 17}
SYMBOLS: dict[int, str] = {z: s for s, z in ELEMENTS.items()}


class SmilesError(ValueError):
    """A SMILES that RDKit cannot parse (or that has no atoms)."""


@lru_cache(maxsize=4096)
def addhs_template(smiles: str):
    """``AddHs(MolFromSmiles(smiles))``: the atom order of every conformation of ``smiles``.

    Cached (parsing dominates for small molecules) and shared: never modify it; copy it with
    ``Chem.Mol(addhs_template(smiles))`` or use :func:`with_coordinates`.
    """
    from rdkit import Chem, rdBase

    with rdBase.BlockLogs():
        parsed = Chem.MolFromSmiles(smiles)
    if parsed is None or parsed.GetNumAtoms() == 0:
        raise SmilesError(f"invalid SMILES {smiles!r}")
    return Chem.AddHs(parsed)


def canonical_smiles(smiles: str) -> str:
    """RDKit's canonical SMILES (the key importers de-duplicate molecules by)."""
    from rdkit import Chem

    return Chem.MolToSmiles(Chem.RemoveHs(addhs_template(smiles)))


def set_positions(mol, coordinates) -> int:
    """Add a conformer at ``coordinates`` ((atoms, 3), Angstrom, ``mol``'s atom order) to ``mol``;
    returns its id."""
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    conf = Chem.Conformer(mol.GetNumAtoms())
    for i, (x, y, z) in enumerate(np.asarray(coordinates, dtype=np.float64)):
        conf.SetAtomPosition(i, Point3D(float(x), float(y), float(z)))
    conf.Set3D(True)
    return mol.AddConformer(conf, assignId=True)


def with_coordinates(smiles: str, coordinates):
    """A copy of :func:`addhs_template` with one conformer at ``coordinates`` (its id 0)."""
    from rdkit import Chem

    mol = Chem.Mol(addhs_template(smiles))
    mol.RemoveAllConformers()
    set_positions(mol, coordinates)
    return mol
