"""RDKit MMFF94 as GOLF's surrogate oracle O_S (paper §5; golf-paper.md §4.2).

The force field is set up once per molecule (SMILES -> AddHs -> MMFF parameters) and then only
evaluated at new positions, which costs tens of microseconds: the surrogate must never dominate
a GOLF round. Energies are in kcal/mol, RDKit's unit.
"""

from __future__ import annotations

import numpy as np

from golf.data.molecule import SmilesError, addhs_template


class SurrogateError(Exception):
    """MMFF has no parameters for the molecule."""


class MMFF:
    """MMFF94 energy of one molecule at arbitrary positions (golf.data.molecule's atom order)."""

    def __init__(self, smiles: str):
        from rdkit import Chem
        from rdkit.Chem import AllChem

        try:
            mol = Chem.Mol(addhs_template(smiles))
        except SmilesError:
            raise SurrogateError(f"invalid SMILES {smiles!r}") from None
        self.n_atoms = mol.GetNumAtoms()
        props = AllChem.MMFFGetMoleculeProperties(mol)
        if props is None:
            raise SurrogateError(f"MMFF has no parameters for {smiles}")
        # The force field needs a conformer to bind to; its positions are replaced on every call.
        conf = Chem.Conformer(self.n_atoms)
        mol.AddConformer(conf, assignId=True)
        self._mol = mol
        self._props = props
        self._ff = AllChem.MMFFGetMoleculeForceField(mol, props, ignoreInterfragInteractions=False)

    def energy(self, coordinates: np.ndarray) -> float:
        """MMFF energy (kcal/mol) at (atoms, 3) positions in Angstrom; inf when not finite."""
        coordinates = np.asarray(coordinates, dtype=np.float64)
        if coordinates.shape != (self.n_atoms, 3):
            raise ValueError(f"expected ({self.n_atoms}, 3) coordinates, got {coordinates.shape}")
        if not np.isfinite(coordinates).all():
            return float("inf")
        return float(self._ff.CalcEnergy(coordinates.ravel().tolist()))

    def minimize(self, coordinates: np.ndarray, max_iters: int = 2000) -> tuple[np.ndarray, float]:
        """MMFF-optimised positions and their MMFF energy, starting from ``coordinates``."""
        from rdkit.Chem import AllChem

        coordinates = np.asarray(coordinates, dtype=np.float64)
        if coordinates.shape != (self.n_atoms, 3):
            raise ValueError(f"expected ({self.n_atoms}, 3) coordinates, got {coordinates.shape}")
        conf = self._mol.GetConformer()
        for i, xyz in enumerate(coordinates):
            conf.SetAtomPosition(i, xyz.tolist())
        # The same force field as energy(): with RDKit's default (interfragment terms ignored) the
        # fragments of a multi-fragment SMILES would be minimised on another energy surface.
        ff = AllChem.MMFFGetMoleculeForceField(self._mol, self._props, ignoreInterfragInteractions=False)
        ff.Minimize(maxIts=max_iters)
        positions = np.array(ff.Positions()).reshape(-1, 3)
        return positions, float(ff.CalcEnergy())


class SurrogatePool:
    """One :class:`MMFF` per SMILES, built on first use and kept."""

    def __init__(self):
        self._by_smiles: dict[str, MMFF] = {}

    def __getitem__(self, smiles: str) -> MMFF:
        ff = self._by_smiles.get(smiles)
        if ff is None:
            ff = self._by_smiles[smiles] = MMFF(smiles)
        return ff
