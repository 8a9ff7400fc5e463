"""Foreign formats in and out: ASE databases, extended XYZ, SDF, plain XYZ, and a TorchANI export.

Readers return a :class:`golf.data.Dataset` that keeps the data contract:

- a conformation's atom order is the atom order of ``Chem.AddHs(Chem.MolFromSmiles(smiles))``
  for the molecule's (canonical) SMILES. A file whose atoms come in another order is reordered by
  matching the SMILES graph onto the file's bonds (SDF) or onto bonds perceived from the
  coordinates (RDKit ``rdDetermineBonds``); a record that cannot be matched raises
  :class:`FormatError` (or is skipped and listed in ``attrs["skipped_records"]`` with
  ``on_error="skip"``);
- without a SMILES (plain XYZ) the SMILES is perceived with ``DetermineBonds`` (charge 0);
- molecules are de-duplicated by canonical SMILES: ``molecule_id`` counts molecules in order of
  first appearance, ``conformer_id`` counts conformations within a molecule;
- energies in Hartree, forces in Hartree/Angstrom (converted from ``energy_unit``; forces are in
  ``energy_unit``/Angstrom). A conformation with both energy and forces has status "ok"; one with
  only an energy keeps it but stays "unlabelled" (training needs forces); otherwise "unlabelled".
- elements outside H C N O F S Cl raise :class:`FormatError` unless ``allow_elements`` names them.

Units are checked: an energy many times the total energy of its atoms in Hartree (an eV or
kcal/mol file read as Hartree), or forces whose median RMS is far above any molecular geometry
in Hartree/Angstrom, raise :class:`FormatError` naming the unit the numbers look like.

Writers (``write_sdf``, ``write_xyz``) serve ``golf optimize`` output; :func:`export_ani` writes a
file that ``torchani.datasets.ANIDataset`` reads (through :func:`golf.data.write`, the only code
that opens HDF5).
"""

from __future__ import annotations

import inspect
import io
import os
import re
import shlex
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from golf import data as golf_data
from golf.data import Conformer, Dataset, Molecule
from golf.units import HARTREE_TO_EV, HARTREE_TO_KCALPERMOL

__all__ = [
    "FormatError",
    "ALLOWED_ELEMENTS",
    "ENERGY_UNITS",
    "FORMATS",
    "read_ase_db",
    "read_extxyz",
    "read_sdf",
    "read_xyz",
    "import_file",
    "write_sdf",
    "write_xyz",
    "export_ani",
]

# Elements of the GOLF / nablaDFT molecules (golf-paper.md §5, Br is rare and off by default).
ALLOWED_ELEMENTS = ("H", "C", "N", "O", "F", "S", "Cl")

# Hartree per unit of energy; forces are in the same energy unit per Angstrom.
ENERGY_UNITS = {"hartree": 1.0, "ev": 1.0 / HARTREE_TO_EV, "kcal/mol": 1.0 / HARTREE_TO_KCALPERMOL}

FORMATS = ("ase_db", "extxyz", "xyz", "sdf", "golf")

# Rough isolated-atom energies (Hartree) to tell a total energy in Hartree from one in eV or
# kcal/mol: only a factor of ~2 matters, since those units differ from Hartree by 27x and 627x.
_ATOM_ENERGY = {1: -0.5, 5: -24.6, 6: -37.8, 7: -54.6, 8: -75.0, 9: -99.7, 14: -289.4, 15: -341.3,
                16: -398.1, 17: -460.1, 35: -2574.0, 53: -6918.0}  # fmt: skip
# A total energy this many times the atoms' Hartree scale is not in Hartree.
_ENERGY_RATIO_LIMIT = 4.0
# Median per-conformation RMS force (Hartree/Angstrom) above which forces are not in Hartree/Angstrom;
# DFT data of drug-like molecules sits near 0.01-0.05, the same data in eV/Angstrom read as Hartree near 0.5.
_FORCE_RMS_LIMIT = 0.25
# Covalent-radius factors tried in turn when perceiving bonds of a distorted geometry.
_COV_FACTORS = (1.3, 1.2, 1.4, 1.5)
# Our own SDF/XYZ keys (write_sdf/write_xyz), recognised by import_file.
_GOLF_ENERGY_KEY = "golf_energy_hartree"


class FormatError(Exception):
    """A foreign file that cannot be read or written faithfully; the message is one line."""


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------


def read_ase_db(
    path: str | os.PathLike,
    split: str = "train",
    energy_unit: str = "hartree",
    allow_elements: Iterable[str] | None = None,
    on_error: str = "raise",
    energy_key: str = "energy",
    forces_key: str = "forces",
) -> Dataset:
    """Read an ASE SQLite database in the layout of the GOLF authors (golf-paper.md §5).

    Each row: key ``smiles``; ``data.energy`` (scalar or length-1 array) and ``data.forces``
    (atoms, 3) in ``energy_unit`` (Hartree by default) and ``energy_unit``/Angstrom; optional
    ``data.optimal_energy`` (test sets), kept as the per-conformation property ``e_opt`` (Hartree).
    Rows without ``data.energy`` but with an ASE calculator result use it in eV (ASE's own unit).
    ``energy_key``/``forces_key`` name other ``data`` entries (GOLF-SPICE uses ``total_energy``).
    Metadata ``atomrefs["energy"]`` (per-Z list) goes to ``dataset.attrs["atomrefs"]`` in Hartree.
    Rows without ``smiles`` get one perceived from the geometry. All molecules go to ``split``.
    """
    path = _existing(path)
    factor = _unit_factor(energy_unit)
    builder = _Builder(path, "ase_db", split, allow_elements, on_error, energy_unit)
    try:
        import ase.db

        db = ase.db.connect(str(path), type="db", create_indices=False)
        metadata = db.metadata or {}
        rows = db.select()
        for row in rows:
            record = f"row id={row.id}"
            payload = dict(row.data) if row.get("data") is not None else {}
            with builder.record(record):
                energy, forces = float("nan"), None
                if energy_key in payload:
                    energy = _scalar(payload[energy_key], f"data.{energy_key}") * factor
                elif row.get("energy") is not None:
                    energy = float(row.energy) / HARTREE_TO_EV
                if forces_key in payload:
                    forces = np.asarray(payload[forces_key], dtype=np.float64) * factor
                elif row.get("forces") is not None:
                    forces = np.asarray(row.forces, dtype=np.float64) / HARTREE_TO_EV
                props = {}
                if "optimal_energy" in payload:
                    props["e_opt"] = _scalar(payload["optimal_energy"], "data.optimal_energy") * factor
                builder.add(
                    species=row.numbers,
                    coordinates=row.positions,
                    smiles=row.key_value_pairs.get("smiles"),
                    energy=energy,
                    forces=forces,
                    props=props,
                    name=str(row.key_value_pairs.get("name", "")),
                )
    except FormatError:
        raise
    except Exception as err:  # sqlite3 and ASE raise many kinds on damaged files
        raise FormatError(f"{path}: not a readable ASE database ({_describe(err)})") from None
    if isinstance(metadata, Mapping) and "atomrefs" in metadata:
        builder.dataset.attrs["atomrefs"] = _atomrefs(metadata["atomrefs"], factor, path)
    return builder.finish()


def read_extxyz(
    path: str | os.PathLike,
    energy_key: str = "energy",
    forces_key: str = "forces",
    energy_unit: str = "ev",
    split: str = "train",
    allow_elements: Iterable[str] | None = None,
    on_error: str = "raise",
) -> Dataset:
    """Read an extended XYZ file with ``ase.io``; energies in ``energy_unit`` (ASE's eV by default).

    Energy and forces come from ``atoms.info[energy_key]`` / ``atoms.arrays[forces_key]`` or, for
    the keys ``energy``/``forces``, from the calculator ASE attaches. An ``info`` key ``smiles``
    fixes the molecule (atoms are reordered to its AddHs order); without it the SMILES is perceived.
    """
    path = _existing(path)
    factor = _unit_factor(energy_unit)
    builder = _Builder(path, "extxyz", split, allow_elements, on_error, energy_unit)
    frames = _ase_read(path, "extxyz")
    for index, atoms in enumerate(frames):
        with builder.record(f"frame {index}"):
            results = atoms.calc.results if atoms.calc is not None else {}
            energy = atoms.info.get(energy_key, results.get(energy_key))
            forces = atoms.arrays.get(forces_key, results.get(forces_key))
            builder.add(
                species=atoms.numbers,
                coordinates=atoms.positions,
                smiles=atoms.info.get("smiles"),
                energy=float("nan") if energy is None else _scalar(energy, energy_key) * factor,
                forces=None if forces is None else np.asarray(forces, dtype=np.float64) * factor,
                name=str(atoms.info.get("name", "")),
            )
    return builder.finish()


def read_sdf(
    path: str | os.PathLike,
    energy_prop: str | None = None,
    energy_unit: str = "hartree",
    split: str = "train",
    allow_elements: Iterable[str] | None = None,
    on_error: str = "raise",
) -> Dataset:
    """Read an SDF with RDKit (``removeHs=False``; hydrogens must be explicit in the file).

    Each record's molecule is matched onto ``AddHs(MolFromSmiles(MolToSmiles(RemoveHs(mol))))``
    and its coordinates reordered to that order. ``energy_prop`` names an SD property holding the
    energy in ``energy_unit`` (no forces in SDF, so such records stay "unlabelled" with an energy).
    The record title becomes the molecule's name.
    """
    from rdkit import Chem, rdBase

    path = _existing(path)
    factor = _unit_factor(energy_unit)
    builder = _Builder(path, "sdf", split, allow_elements, on_error, energy_unit)
    try:
        with rdBase.BlockLogs():
            supplier = Chem.SDMolSupplier(str(path), removeHs=False, sanitize=True)
            mols = list(supplier)
    except OSError as err:
        raise FormatError(f"{path}: not a readable SDF file ({_describe(err)})") from None
    if not mols:
        raise FormatError(f"{path}: no records; not an SDF file?")
    for index, mol in enumerate(mols, start=1):
        with builder.record(f"record {index}"):
            if mol is None:
                raise FormatError("RDKit could not parse this record (bad valence or damaged block)")
            if mol.GetNumConformers() == 0:
                raise FormatError("record has no coordinates")
            energy = float("nan")
            if energy_prop is not None:
                if not mol.HasProp(energy_prop):
                    raise FormatError(f"property {energy_prop!r} missing")
                energy = _scalar(mol.GetProp(energy_prop), energy_prop) * factor
            name = mol.GetProp("_Name").strip() if mol.HasProp("_Name") else ""
            builder.add(
                species=[a.GetAtomicNum() for a in mol.GetAtoms()],
                coordinates=mol.GetConformer().GetPositions(),
                smiles=None,
                energy=energy,
                name=name,
                rdmol=mol,
            )
    return builder.finish()


def read_xyz(
    path: str | os.PathLike,
    split: str = "train",
    allow_elements: Iterable[str] | None = None,
    on_error: str = "raise",
) -> Dataset:
    """Read a plain multi-frame XYZ file (geometry only; SMILES perceived with charge 0).

    The comment line of each frame becomes the molecule's name when it is the first of its kind.
    """
    path = _existing(path)
    builder = _Builder(path, "xyz", split, allow_elements, on_error, None)
    for index, (species, coordinates, comment) in enumerate(_parse_xyz(path)):
        with builder.record(f"frame {index}"):
            builder.add(species=species, coordinates=coordinates, smiles=None, name=comment)
    return builder.finish()


def import_file(path: str | os.PathLike, fmt: str | None = None, **kw: Any) -> Dataset:
    """Read a foreign file into a Dataset, choosing the reader by ``fmt`` or by the suffix.

    ``.db`` -> ASE database, ``.extxyz`` -> extended XYZ, ``.xyz`` -> extended XYZ when the first
    comment line holds ``key=value`` properties, plain XYZ otherwise, ``.sdf``/``.sd``/``.mol``
    -> SDF, ``.h5``/``.hdf5`` -> a golf-workflow dataset. Files written by :func:`write_sdf` /
    :func:`write_xyz` read back with their energies. ``kw`` goes to the reader.
    """
    path = _existing(path)
    if fmt is None:
        fmt = _guess_format(path)
    if fmt == "golf":
        if kw:
            raise FormatError(f"{path}: a golf-workflow dataset takes no reader options, got {', '.join(kw)}")
        try:
            return golf_data.read(path)
        except golf_data.DataError as err:
            raise FormatError(str(err)) from None
    readers = {"ase_db": read_ase_db, "extxyz": read_extxyz, "xyz": read_xyz, "sdf": read_sdf}
    if fmt not in readers:
        raise FormatError(f"{path}: unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    reader = readers[fmt]
    known = list(inspect.signature(reader).parameters)[1:]
    unknown = [k for k in kw if k not in known]
    if unknown:
        raise FormatError(f"{path}: option {unknown[0]!r} does not apply to format {fmt}; known: {', '.join(known)}")
    # Our own writers' files (write_xyz / write_sdf) carry their energy in Hartree under a fixed key.
    if fmt == "extxyz" and "energy_key" not in kw and _first_comment_has(path, _GOLF_ENERGY_KEY):
        kw = {"energy_key": _GOLF_ENERGY_KEY, "energy_unit": "hartree", **kw}
    if fmt == "sdf" and "energy_prop" not in kw and _sdf_has_prop(path, _GOLF_ENERGY_KEY):
        kw = {"energy_prop": _GOLF_ENERGY_KEY, "energy_unit": "hartree", **kw}
    return reader(path, **kw)


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------


def write_sdf(
    path: str | os.PathLike,
    dataset: Dataset,
    energy_prop: str = _GOLF_ENERGY_KEY,
    extra_props: Sequence[str] | None = None,
) -> None:
    """Write every conformation as an SDF record, bonds from its molecule's SMILES.

    SD properties per record: ``energy_prop`` (Hartree; ``nan`` when unknown), ``golf_status``,
    ``golf_smiles``, ``golf_molecule_id``, ``golf_conformer_id``, and the scalar conformer
    properties named in ``extra_props`` (all scalar properties when None). Stereo tags follow the
    coordinates. Written atomically.
    """
    from rdkit import Chem

    buffer = io.StringIO()
    writer = Chem.SDWriter(buffer)
    writer.SetForceV3000(False)
    for index, c in enumerate(dataset.conformers):
        molecule = dataset.molecules[c.molecule_id]
        mol = Chem.Mol(_template(molecule.smiles).mol)
        if [a.GetAtomicNum() for a in mol.GetAtoms()] != c.species.tolist():
            raise FormatError(
                f"conformer {index} (molecule {c.molecule_id}): atoms are not in the AddHs order of {molecule.smiles}"
            )
        conf = Chem.Conformer(mol.GetNumAtoms())
        for i, xyz in enumerate(c.coordinates):
            conf.SetAtomPosition(i, xyz.tolist())
        conf.Set3D(True)
        mol.RemoveAllConformers()
        mol.AddConformer(conf, assignId=True)
        Chem.AssignStereochemistryFrom3D(mol)
        mol.SetProp("_Name", molecule.name)
        mol.SetProp(energy_prop, repr(float(c.energy)))  # "nan" when unknown: reads back as missing
        mol.SetProp("golf_status", c.status)
        mol.SetProp("golf_smiles", molecule.smiles)
        mol.SetIntProp("golf_molecule_id", int(c.molecule_id))
        mol.SetIntProp("golf_conformer_id", int(c.conformer_id))
        for key, value in _scalar_props(c, extra_props).items():
            mol.SetProp(key, repr(value))
        writer.write(mol)
    writer.close()
    _write_text(path, buffer.getvalue())


def write_xyz(path: str | os.PathLike, dataset: Dataset) -> None:
    """Write every conformation as a frame of a multi-frame XYZ file (Angstrom), atomically.

    The comment line holds ``key=value`` pairs (an extended-XYZ comment, so ASE parses it):
    ``golf_energy_hartree`` (``nan`` when unknown), ``status``, ``smiles``, ``molecule_id``, ``conformer_id``
    and the molecule's ``name`` when it has one.
    """
    from ase.data import chemical_symbols

    lines = []
    for c in dataset.conformers:
        molecule = dataset.molecules[c.molecule_id]
        # The energy key is always there (nan when unknown), so import_file recognises the file.
        pairs = [f"{_GOLF_ENERGY_KEY}={float(c.energy)!r}", f"status={c.status}", f'smiles="{molecule.smiles}"']
        pairs += [f"molecule_id={c.molecule_id}", f"conformer_id={c.conformer_id}"]
        if molecule.name and '"' not in molecule.name and "\\" not in molecule.name:
            pairs.append(f'name="{molecule.name}"')
        lines += [str(len(c.species)), " ".join(pairs)]
        for z, (x, y, zz) in zip(c.species, c.coordinates, strict=True):
            lines.append(f"{chemical_symbols[int(z)]:<2s} {x:16.10f} {y:16.10f} {zz:16.10f}")
    _write_text(path, "\n".join(lines) + "\n")


def export_ani(dataset: Dataset, path: str | os.PathLike) -> int:
    """Write the labelled conformations (status "ok", finite energy and forces) for TorchANI.

    The file has TorchANI's by-formula layout (``species``, ``coordinates``, ``energies``,
    ``forces``, plus golf's numeric bookkeeping arrays), so ``torchani.datasets.ANIDataset``
    reads it; conformer properties are dropped. Returns the number of conformations written.
    """
    keep = []
    for c in dataset.conformers:
        if c.status == "ok" and np.isfinite(c.energy) and c.forces is not None and np.isfinite(c.forces).all():
            keep.append(
                Conformer(
                    molecule_id=c.molecule_id,
                    conformer_id=c.conformer_id,
                    species=c.species,
                    coordinates=c.coordinates,
                    energy=c.energy,
                    forces=c.forces,
                    status="ok",
                )
            )
    if not keep:
        raise FormatError(f"{path}: nothing to export; the dataset has no labelled conformations")
    used = {c.molecule_id for c in keep}
    molecules = {i: m for i, m in dataset.molecules.items() if i in used}
    golf_data.write(path, Dataset(molecules, keep, dict(dataset.attrs)))  # JSON file attributes: ANI-safe
    return len(keep)


# --------------------------------------------------------------------------------------------
# The builder: element check, SMILES, atom order, molecule table, unit check
# --------------------------------------------------------------------------------------------


class _Builder:
    """Collects records into a Dataset; one instance per file read."""

    def __init__(self, path, fmt, split, allow_elements, on_error, energy_unit):
        if on_error not in ("raise", "skip"):
            raise FormatError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if split not in ("train", "test"):
            raise FormatError(f"split must be 'train' or 'test', got {split!r}")
        self.path = path
        self.split = split
        self.energy_unit = energy_unit
        self.on_error = on_error
        self.allowed = _allowed_numbers(allow_elements)
        source = {"format": fmt, "path": str(path)}
        if energy_unit is not None:
            source["energy_unit"] = energy_unit
        self.dataset = Dataset(attrs={"source": source})
        self.skipped: list[str] = []
        self._ids: dict[str, int] = {}
        self._counts: dict[int, int] = {}

    def record(self, where: str) -> _Record:
        return _Record(self, where)

    def add(
        self,
        species,
        coordinates,
        smiles: str | None,
        energy: float = float("nan"),
        forces=None,
        props: dict | None = None,
        name: str = "",
        rdmol=None,
    ) -> None:
        species = np.asarray(species, dtype=np.int64).reshape(-1)
        coordinates = np.asarray(coordinates, dtype=np.float64)
        if coordinates.shape != (len(species), 3):
            raise FormatError(f"coordinates have shape {coordinates.shape}, expected ({len(species)}, 3)")
        if not np.isfinite(coordinates).all():
            raise FormatError("non-finite coordinates")
        for z in species:
            if int(z) not in self.allowed:
                allowed = " ".join(_symbol(n) for n in sorted(self.allowed))
                raise FormatError(
                    f"element {_symbol(int(z))} is not allowed (allowed: {allowed}; pass allow_elements to extend)"
                )
        if forces is not None:
            forces = np.asarray(forces, dtype=np.float64)
            if forces.shape != (len(species), 3):
                raise FormatError(f"forces have shape {forces.shape}, expected ({len(species)}, 3)")
        if np.isfinite(energy):
            _check_energy(float(energy), species, self.energy_unit)

        canonical, order = _canonical_order(species, coordinates, smiles, rdmol)
        mid = self._ids.get(canonical)
        if mid is None:
            mid = self._ids[canonical] = len(self._ids)
            template = _template(canonical).mol
            self.dataset.molecules[mid] = Molecule(
                molecule_id=mid,
                smiles=canonical,
                name=name,
                charge=_formal_charge(template),
                multiplicity=1 + sum(a.GetNumRadicalElectrons() for a in template.GetAtoms()),
                split=self.split,
            )
        cid = self._counts.get(mid, 0)
        self._counts[mid] = cid + 1
        labelled = np.isfinite(energy) and forces is not None and np.isfinite(forces).all()
        self.dataset.conformers.append(
            Conformer(
                molecule_id=mid,
                conformer_id=cid,
                species=species[order],
                coordinates=coordinates[order],
                energy=float(energy),
                forces=None if forces is None else forces[order],
                status="ok" if labelled else "unlabelled",
                props=dict(props or {}),
            )
        )

    def finish(self) -> Dataset:
        if self.skipped:
            self.dataset.attrs["skipped_records"] = self.skipped
        if not self.dataset.conformers and not self.skipped:
            raise FormatError(f"{self.path}: no conformations in the file")
        _check_forces(self.dataset, self.path, self.energy_unit)
        return self.dataset


class _Record:
    """Context for one record: prefixes errors with the file and record, or skips the record."""

    def __init__(self, builder: _Builder, where: str):
        self.builder = builder
        self.where = where

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        if err is None:
            return False
        if isinstance(err, FormatError):
            message = f"{self.builder.path}: {self.where}: {err}"
        elif isinstance(err, (ValueError, TypeError, KeyError, IndexError, RuntimeError)):
            message = f"{self.builder.path}: {self.where}: {_describe(err)}"
        else:
            return False
        if self.builder.on_error == "skip":
            self.builder.skipped.append(message)
            return True
        raise FormatError(message) from None


def _canonical_order(species, coordinates, smiles, rdmol) -> tuple[str, np.ndarray]:
    """Canonical SMILES of a record and the file index of each atom in AddHs(canonical) order."""
    from rdkit import Chem, rdBase

    with rdBase.BlockLogs():
        if smiles is not None:
            template = _template(str(smiles))
            bonded = None
        elif rdmol is not None:
            # SDF: the record's own bonds define the molecule.
            template = _template(Chem.MolToSmiles(Chem.RemoveHs(rdmol)))
            bonded = rdmol
        else:
            bonded = _perceive_molecule(species, coordinates)
            template = _template(Chem.MolToSmiles(Chem.RemoveHs(bonded)))
        if sorted(species.tolist()) != sorted(template.species.tolist()):
            got, want = golf_data.formula(species), golf_data.formula(template.species)
            raise FormatError(f"atoms {got} do not match SMILES {template.smiles} ({want} with hydrogens)")
        order = _match(template, species, coordinates, bonded)
        if order is None:
            raise FormatError(f"cannot match the atoms onto SMILES {template.smiles} (bonds in the geometry differ)")
    return template.smiles, order


def _match(template: _Template, species, coordinates, bonded) -> np.ndarray | None:
    """File atom index for each template atom, or None when the graphs do not match.

    ``bonded`` is the record's own molecule (SDF, or bonds perceived for XYZ) or None; then bonds
    are perceived from the coordinates, retrying looser and tighter covalent radii because a
    distorted conformation may lose or gain a bond at the default.
    """
    n = len(template.species)
    same_order = np.array_equal(species, template.species)
    if bonded is not None:
        if same_order and np.array_equal(_adjacency(bonded), template.adjacency):
            return np.arange(n)  # already in AddHs order: keep it exactly, not a symmetric copy
        # Full chemical match first: bond orders and charges tell apart what topology cannot.
        match = bonded.GetSubstructMatch(template.mol)
        if len(match) == n and bonded.GetNumBonds() == template.mol.GetNumBonds():
            return np.asarray(match, dtype=np.int64)
    n_bonds = template.mol.GetNumBonds()
    for k in range(len(_COV_FACTORS) + 1):
        if k == 0:
            if bonded is None:
                continue
            graph = _skeleton(bonded)
        else:
            graph = _connectivity(species, coordinates, _COV_FACTORS[k - 1])
            if graph is None:
                continue
        if graph.GetNumBonds() != n_bonds:
            continue
        if same_order and np.array_equal(_adjacency(graph), template.adjacency):
            return np.arange(n)
        # Same atom and bond counts, so an injective match is an isomorphism of the two graphs.
        match = graph.GetSubstructMatch(template.skeleton)
        if len(match) == n:
            return np.asarray(match, dtype=np.int64)
    return None


def _adjacency(mol) -> np.ndarray:
    from rdkit import Chem

    return Chem.GetAdjacencyMatrix(mol)


def _skeleton(mol):
    """The bare graph of a molecule: element and connectivity only (all bonds single, no charges)."""
    from rdkit import Chem

    rw = Chem.RWMol(mol)
    for atom in rw.GetAtoms():
        atom.SetFormalCharge(0)
        atom.SetNumRadicalElectrons(0)
        atom.SetIsotope(0)
        atom.SetIsAromatic(False)
        atom.SetNoImplicit(True)
        atom.SetNumExplicitHs(0)
        atom.SetChiralTag(Chem.ChiralType.CHI_UNSPECIFIED)
    for bond in rw.GetBonds():
        bond.SetBondType(Chem.BondType.SINGLE)
        bond.SetIsAromatic(False)
        bond.SetStereo(Chem.BondStereo.STEREONONE)
    out = rw.GetMol()
    out.UpdatePropertyCache(strict=False)
    Chem.FastFindRings(out)
    return out


def _bare_mol(species, coordinates):
    from rdkit import Chem

    rw = Chem.RWMol()
    for z in species:
        rw.AddAtom(Chem.Atom(int(z)))
    conf = Chem.Conformer(len(species))
    for i, xyz in enumerate(coordinates):
        conf.SetAtomPosition(i, [float(v) for v in xyz])
    conf.Set3D(True)
    rw.AddConformer(conf, assignId=True)
    return rw.GetMol()


def _connectivity(species, coordinates, factor):
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    mol = _bare_mol(species, coordinates)
    try:
        rdDetermineBonds.DetermineConnectivity(mol, useHueckel=False, charge=0, covFactor=factor)
    except (ValueError, RuntimeError):
        return None
    # Single bonds, no charges: already a skeleton; ring info lets substructure matching run.
    mol.UpdatePropertyCache(strict=False)
    Chem.FastFindRings(mol)
    return mol


def _perceive_molecule(species, coordinates):
    """Bonds, bond orders and stereo perceived from a neutral geometry (rdDetermineBonds, charge 0)."""
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    last = "no bond pattern fits"
    for factor in _COV_FACTORS:
        mol = _bare_mol(species, coordinates)
        try:
            rdDetermineBonds.DetermineBonds(mol, charge=0, covFactor=factor)
            Chem.SanitizeMol(mol)
            Chem.AssignStereochemistryFrom3D(mol)
            return mol
        except (ValueError, RuntimeError) as err:
            last = _describe(err)
    raise FormatError(f"cannot perceive a neutral closed-shell molecule from the geometry ({last})")


class _Template(NamedTuple):
    """A molecule's canonical SMILES and its AddHs mol, with what matching needs precomputed."""

    smiles: str
    mol: Any  # Chem.Mol, AddHs(MolFromSmiles(smiles)); never modified
    species: np.ndarray  # (atoms,) atomic numbers in AddHs order
    adjacency: np.ndarray  # (atoms, atoms) 0/1
    skeleton: Any  # Chem.Mol, the bare graph (see _skeleton)


@lru_cache(maxsize=4096)
def _template(smiles: str) -> _Template:
    """The template of a SMILES (canonicalised first); FormatError if it is invalid."""
    from rdkit import Chem, rdBase

    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
        if mol is None or mol.GetNumAtoms() == 0:
            raise FormatError(f"invalid SMILES {smiles!r}")
        canonical = Chem.MolToSmiles(mol)
        template = Chem.AddHs(Chem.MolFromSmiles(canonical))
    species = np.array([a.GetAtomicNum() for a in template.GetAtoms()], dtype=np.int64)
    return _Template(canonical, template, species, _adjacency(template), _skeleton(template))


def _formal_charge(mol) -> int:
    from rdkit import Chem

    return int(Chem.GetFormalCharge(mol))


# --------------------------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------------------------


def _unit_factor(unit: str) -> float:
    key = str(unit).lower().replace(" ", "")
    if key not in ENERGY_UNITS:
        raise FormatError(f"unknown energy_unit {unit!r}; known: {', '.join(ENERGY_UNITS)}")
    return ENERGY_UNITS[key]


def _atoms_energy_scale(species) -> float:
    """Magnitude of the sum of isolated-atom energies (Hartree); Thomas-Fermi for unlisted elements."""
    return float(sum(abs(_ATOM_ENERGY.get(int(z), -0.7687 * int(z) ** (7 / 3))) for z in species))


def _guess_unit(ratio: float) -> str:
    return min(("ev", "kcal/mol"), key=lambda u: abs(np.log(ratio * ENERGY_UNITS[u])))


def _check_energy(energy: float, species, unit: str | None) -> None:
    """Raise if a total energy (Hartree, after conversion) is far too large for its atoms."""
    ratio = abs(energy) / _atoms_energy_scale(species)
    if ratio > _ENERGY_RATIO_LIMIT:
        guess = _guess_unit(ratio)
        raise FormatError(
            f"energy {energy:.6g} Ha (read as {unit}) is {ratio:.0f}x the atoms' total energy scale in Hartree; "
            f"it looks like {guess}: pass energy_unit={guess!r}"
        )


def _check_forces(dataset: Dataset, path, unit: str | None) -> None:
    rms = [float(np.sqrt(np.mean(c.forces**2))) for c in dataset.conformers if c.forces is not None]
    rms = [r for r in rms if np.isfinite(r)]
    if not rms:
        return
    median = float(np.median(rms))
    if median > _FORCE_RMS_LIMIT:
        guess = _guess_unit(median / 0.02)  # 0.02 Ha/Angstrom: a typical RMS force of a conformer
        raise FormatError(
            f"{path}: forces have a median RMS of {median:.3g} Ha/Angstrom (read as {unit}/Angstrom), far above "
            f"molecular forces in Hartree/Angstrom; they look like {guess}/Angstrom (energy_unit={guess!r} sets both "
            "energies and forces)"
        )


def _atomrefs(value, factor: float, path) -> dict[str, list[float]]:
    """Metadata ``atomrefs`` as {"energy": per-Z list in Hartree}."""
    if isinstance(value, Mapping):
        value = value.get("energy")
    try:
        refs = np.asarray(value, dtype=np.float64).reshape(-1) * factor
    except (TypeError, ValueError):
        raise FormatError(f"{path}: metadata atomrefs is not a per-Z list of energies") from None
    return {"energy": refs.tolist()}


def _scalar(value, what: str) -> float:
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise FormatError(f"{what} is not a number: {value!r}") from None
    if arr.size != 1:
        raise FormatError(f"{what} has {arr.size} values, expected one")
    return float(arr[0])


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _existing(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: no such file")
    return path


def _describe(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _symbol(z: int) -> str:
    from ase.data import chemical_symbols

    return chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z={z}"


def _allowed_numbers(allow_elements) -> set[int]:
    from ase.data import atomic_numbers

    names = ALLOWED_ELEMENTS if allow_elements is None else allow_elements
    if isinstance(names, str):
        names = names.replace(",", " ").split()
    out = set()
    for name in names:
        if isinstance(name, (int, np.integer)):
            out.add(int(name))
        elif str(name) in atomic_numbers:
            out.add(atomic_numbers[str(name)])
        else:
            raise FormatError(f"allow_elements: unknown element {name!r}")
    return out


def _ase_read(path: Path, fmt: str):
    import ase.io

    try:
        frames = ase.io.read(str(path), index=":", format=fmt)
    except Exception as err:  # ASE's parsers raise anything from ValueError to StopIteration
        raise FormatError(f"{path}: not a readable {fmt} file ({_describe(err)})") from None
    if not frames:
        raise FormatError(f"{path}: no frames")
    return frames


def _parse_xyz(path: Path):
    """Yield (species, coordinates, comment) per frame of a plain XYZ file."""
    from ase.data import atomic_numbers

    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise FormatError(f"{path}: not a readable XYZ file ({_describe(err)})") from None
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        try:
            n = int(lines[i].split()[0])
        except ValueError:
            raise FormatError(f"{path}: line {i + 1}: expected an atom count, got {lines[i].strip()[:40]!r}") from None
        if i + 2 + n > len(lines):
            raise FormatError(f"{path}: line {i + 1}: frame of {n} atoms runs past the end of the file")
        comment = lines[i + 1].strip()
        species, coordinates = [], []
        for k in range(i + 2, i + 2 + n):
            fields = lines[k].split()
            try:
                symbol = fields[0]
                z = int(symbol) if symbol.isdigit() else atomic_numbers[symbol.capitalize()]
                coordinates.append([float(v) for v in fields[1:4]])
                if len(coordinates[-1]) != 3:
                    raise ValueError
            except (IndexError, KeyError, ValueError):
                raise FormatError(f"{path}: line {k + 1}: expected 'element x y z', got {lines[k][:60]!r}") from None
            species.append(z)
        yield np.array(species), np.array(coordinates), comment
        i += 2 + n


def _guess_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".db":
        return "ase_db"
    if suffix == ".extxyz":
        return "extxyz"
    if suffix == ".xyz":
        return "extxyz" if _first_comment_has(path, "=") else "xyz"
    if suffix in (".sdf", ".sd", ".mol"):
        return "sdf"
    if suffix in (".h5", ".hdf5"):
        return "golf"
    raise FormatError(
        f"{path}: cannot tell the format from the suffix {suffix!r}; pass fmt (one of {', '.join(FORMATS)})"
    )


def _first_comment_has(path: Path, text: str) -> bool:
    try:
        with open(path, errors="replace") as f:
            f.readline()
            comment = f.readline()
    except OSError:
        return False
    if text != "=":
        return text in comment
    try:
        return any("=" in token for token in shlex.split(comment))
    except ValueError:
        return bool(re.search(r"\w=\S", comment))


def _sdf_has_prop(path: Path, prop: str) -> bool:
    try:
        with open(path, errors="replace") as f:
            return any(line.startswith(">") and f"<{prop}>" in line for line in f)
    except OSError:
        return False


def _scalar_props(c: Conformer, names: Sequence[str] | None) -> dict[str, float | int]:
    out = {}
    for key, value in c.props.items():
        if names is not None and key not in names:
            continue
        arr = np.asarray(value)
        if arr.ndim == 0 and arr.dtype.kind in "biuf":
            out[key] = arr.item()
    return out


def _write_text(path, text: str) -> None:
    """Write a text file atomically: a temporary file in the same folder, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
