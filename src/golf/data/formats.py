"""Foreign formats in and out: ASE databases, (extended) XYZ, SDF, and a TorchANI export.

Readers return a :class:`golf.data.dataset.Dataset` that keeps the data contract:

- a conformation's atom order is the atom order of ``Chem.AddHs(Chem.MolFromSmiles(smiles))``
  for the molecule's canonical SMILES. A record in another order is renumbered onto that order by
  an RDKit substructure match: SDF records with their own bonds; XYZ and database records with
  bonds perceived from the coordinates (``rdDetermineBonds``) and, when a SMILES is given, bond
  orders taken from it (``AllChem.AssignBondOrdersFromTemplate``). The file's atom index of each
  atom is kept as the per-atom property ``source_order`` (only where it differs from the identity)
  and the record's position in the file as ``source_record``, so the writers can give a record
  back in its own atom order and with its own title (``attrs["record_titles"]``);
- without a SMILES (plain XYZ) the molecule is perceived with ``DetermineBonds`` (charge 0);
- molecules are de-duplicated by canonical SMILES: ``molecule_id`` counts molecules in order of
  first appearance, ``conformer_id`` counts conformations within a molecule;
- energies are total energies in Hartree, forces in Hartree/Angstrom (``attrs["energy_convention"]
  == "total"``). The file's energy unit is explicit: ``energy_unit``, or the format's own
  convention when it is not given (the database's ``_property_unit_dict``, else Hartree for the
  GOLF authors' databases; eV for extended XYZ, as ASE writes it; Hartree for SDF). Energies that
  are not the size of a total energy of their atoms (a wrong unit, or atomref-subtracted values
  without atomrefs) raise :class:`FormatError` asking for the unit rather than guessing one;
- a database whose metadata holds ``atomrefs`` (the GOLF/nablaDFT layout: ``data.energy`` with
  the atomrefs subtracted) gets the atomrefs added back; the atomrefs stay in ``attrs["atomrefs"]``
  as provenance;
- a conformation with energy and forces has status "ok"; otherwise it stays "unlabelled";
- elements outside H C N O F S Cl raise :class:`FormatError` unless ``allow_elements`` names them;
  a bad record raises, or with ``on_error="skip"`` is listed in ``attrs["skipped_records"]``.

Writers (``write_sdf``, ``write_xyz``) serve ``golf optimize`` and ``golf export``;
:func:`export_ani` writes a file that ``torchani.datasets.ANIDataset`` reads (through
:func:`golf.data.dataset.write`, the only code that opens HDF5).
"""

from __future__ import annotations

import inspect
import io
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from golf import data as golf_data
from golf.data.dataset import Conformer, Dataset, Molecule
from golf.data.molecule import ELEMENTS, SmilesError, addhs_template, canonical_smiles, set_positions
from golf.units import HARTREE_TO_EV, HARTREE_TO_KCALPERMOL

__all__ = [
    "FormatError",
    "ALLOWED_ELEMENTS",
    "ENERGY_UNITS",
    "FORMATS",
    "read_ase_db",
    "read_atomrefs",
    "read_xyz",
    "read_extxyz",
    "read_sdf",
    "import_file",
    "write_sdf",
    "write_xyz",
    "export_ani",
]

# The elements an import accepts by default: the supported ones (golf.data.molecule).
ALLOWED_ELEMENTS = tuple(ELEMENTS)

# Hartree per unit of energy; forces are in the same energy unit per Angstrom.
ENERGY_UNITS = {"hartree": 1.0, "ev": 1.0 / HARTREE_TO_EV, "kcal/mol": 1.0 / HARTREE_TO_KCALPERMOL}

FORMATS = ("ase_db", "xyz", "extxyz", "sdf", "golf")
_SUFFIXES = {".db": "ase_db", ".xyz": "xyz", ".extxyz": "extxyz", ".sdf": "sdf", ".sd": "sdf", ".mol": "sdf"}
_SUFFIXES |= {".h5": "golf", ".hdf5": "golf"}

# A neutral atom's total energy is 0.65-0.85 of the Thomas-Fermi estimate 0.7687 Z^(7/3) Hartree
# (H 0.65 ... I 0.85) and binding changes a molecule's by ~1 %. Outside these bounds the numbers
# are not total energies in Hartree: another unit (eV 27x, kcal/mol 627x), atomref-subtracted
# values (~0.005x) or atomrefs added twice (~1.5x).
_TOTAL_ENERGY_RATIO = (0.5, 1.2)
# Median per-conformation RMS force (Hartree/Angstrom) above which forces are not in Hartree/Angstrom;
# DFT data of drug-like molecules sits near 0.01-0.05, the same data in eV/Angstrom near 0.5.
_FORCE_RMS_LIMIT = 0.25
# Our own writers' energy key (write_sdf/write_xyz), Hartree; the readers recognise it.
_GOLF_ENERGY_KEY = "golf_energy_hartree"


class FormatError(Exception):
    """A foreign file that cannot be read or written faithfully; the message is one line."""


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------


def read_ase_db(
    path: str | os.PathLike,
    split: str = "train",
    energy_unit: str | None = None,
    allow_elements: Iterable[str] | None = None,
    on_error: str = "raise",
    energy_key: str = "energy",
    forces_key: str = "forces",
    atomrefs_subtracted: bool = True,
) -> Dataset:
    """Read an ASE SQLite database in the layout of the GOLF authors (golf-paper.md §5).

    Each row: key ``smiles``; ``data.energy`` (scalar or length-1 array) and ``data.forces``
    (atoms, 3) in the energy unit and unit/Angstrom; optional ``data.optimal_energy`` (test sets),
    kept as the per-conformation property ``e_opt`` (Hartree, total). Rows without ``data.energy``
    but with an ASE calculator result use it in eV (ASE's own unit). ``energy_key``/``forces_key``
    name other ``data`` entries (GOLF-SPICE uses ``total_energy``). Metadata ``atomrefs["energy"]``
    (per-Z list) are added to every ``data`` energy and kept in ``attrs["atomrefs"]`` (Hartree);
    ``atomrefs_subtracted=False`` reads a database of total energies that only lists its atomrefs.
    Rows without ``smiles`` get one perceived from the geometry. All molecules go to ``split``.
    """
    import ase.db

    path = _existing(path)
    try:
        db = ase.db.connect(str(path), type="db", create_indices=False)
        metadata = db.metadata or {}
        rows = list(db.select())
    except Exception as err:  # sqlite3 and ASE raise many kinds on damaged files
        raise FormatError(f"{path}: not a readable ASE database ({_describe(err)})") from None
    declared = _metadata_unit(metadata, path)
    if energy_unit is not None and declared is not None and _unit_factor(energy_unit) != _unit_factor(declared):
        raise FormatError(f"{path}: energy_unit {energy_unit!r} contradicts the database's declared unit {declared!r}")
    unit = energy_unit or declared or "hartree"
    factor = _unit_factor(unit)
    atomrefs = None
    if isinstance(metadata, Mapping) and "atomrefs" in metadata:
        atomrefs = _atomrefs_per_z(metadata["atomrefs"], path) * factor
    builder = _Builder(path, "ase_db", split, allow_elements, on_error, unit, energy_unit is not None)
    add_atomrefs = atomrefs is not None and atomrefs_subtracted
    if add_atomrefs:
        builder.hint = "atomrefs were added; if the energies are total already, pass atomrefs_subtracted=False"
    for row in rows:
        payload = dict(row.data) if row.get("data") is not None else {}
        with builder.record(f"row id={row.id}"):
            offset = _atomref_sum(atomrefs, row.numbers) if add_atomrefs else 0.0
            energy, forces = float("nan"), None
            if energy_key in payload:
                energy = _scalar(payload[energy_key], f"data.{energy_key}") * factor + offset
            elif row.get("energy") is not None:  # ASE's calculator convention: eV, total
                energy = float(row.energy) / HARTREE_TO_EV
            if forces_key in payload:
                forces = np.asarray(payload[forces_key], dtype=np.float64) * factor
            elif row.get("forces") is not None:
                forces = np.asarray(row.forces, dtype=np.float64) / HARTREE_TO_EV
            props = {}
            if "optimal_energy" in payload:
                props["e_opt"] = _scalar(payload["optimal_energy"], "data.optimal_energy") * factor + offset
            builder.add(
                row.numbers,
                row.positions,
                smiles=row.key_value_pairs.get("smiles"),
                energy=energy,
                forces=forces,
                props=props,
                title=str(row.key_value_pairs.get("name", "")),
            )
    if atomrefs is not None:
        builder.dataset.attrs["atomrefs"] = {"energy": atomrefs.tolist()}
        builder.dataset.attrs["source"]["atomrefs_added"] = add_atomrefs
    return builder.finish()


def read_atomrefs(path: str | os.PathLike) -> dict[str, float]:
    """The atomrefs of an ASE database's metadata (the GOLF authors' layout) in Hartree per element.

    Only the elements of :data:`ALLOWED_ELEMENTS` with a non-zero value are returned; the unit
    follows the database's ``_property_unit_dict`` (Hartree when it has none).
    """
    import ase.db
    from ase.data import atomic_numbers

    path = _existing(path)
    try:
        metadata = ase.db.connect(str(path), type="db", create_indices=False).metadata or {}
    except Exception as err:  # sqlite3 and ASE raise many kinds on damaged files
        raise FormatError(f"{path}: not a readable ASE database ({_describe(err)})") from None
    if "atomrefs" not in metadata:
        raise FormatError(f"{path}: the database metadata has no atomrefs")
    refs = _atomrefs_per_z(metadata["atomrefs"], path) * _unit_factor(_metadata_unit(metadata, path) or "hartree")
    out = {s: float(refs[atomic_numbers[s]]) for s in ALLOWED_ELEMENTS if atomic_numbers[s] < len(refs)}
    return {s: e for s, e in out.items() if e != 0.0}


def read_xyz(
    path: str | os.PathLike,
    energy_key: str = "energy",
    forces_key: str = "forces",
    energy_unit: str | None = None,
    split: str = "train",
    allow_elements: Iterable[str] | None = None,
    on_error: str = "raise",
) -> Dataset:
    """Read a plain or extended XYZ file with ``ase.io`` (extended: energies in eV unless ``energy_unit``).

    Energy and forces come from ``atoms.info[energy_key]`` / ``atoms.arrays[forces_key]`` or, for
    the keys ``energy``/``forces``, from the calculator ASE attaches; files written by
    :func:`write_xyz` carry Hartree under ``golf_energy_hartree``. An ``info`` key ``smiles``
    fixes the molecule; without it the molecule is perceived. The title is ``info["name"]`` or,
    for a plain XYZ comment line, the comment itself.
    """
    import ase.io

    path = _existing(path)
    try:
        frames = ase.io.read(str(path), index=":", format="extxyz")
    except Exception as err:  # ASE's parsers raise anything from ValueError to StopIteration
        raise FormatError(f"{path}: not a readable XYZ file ({_describe(err)})") from None
    if not frames:
        raise FormatError(f"{path}: no frames")
    ours = energy_key == "energy" and energy_unit is None and _GOLF_ENERGY_KEY in frames[0].info
    if ours:
        energy_key, energy_unit = _GOLF_ENERGY_KEY, "hartree"
    unit = energy_unit or "ev"
    factor = _unit_factor(unit)
    builder = _Builder(path, "xyz", split, allow_elements, on_error, unit, energy_unit is not None and not ours)
    comments = _comment_lines(path, [len(a) for a in frames])
    for index, atoms in enumerate(frames):
        with builder.record(f"frame {index}"):
            results = atoms.calc.results if atoms.calc is not None else {}
            energy = atoms.info.get(energy_key, results.get(energy_key))
            forces = atoms.arrays.get(forces_key, results.get(forces_key))
            # ASE parses a plain comment line into flags; a comment without "=" is the title itself.
            title = atoms.info.get("name", comments[index] if "=" not in comments[index] else "")
            builder.add(
                atoms.numbers,
                atoms.positions,
                smiles=atoms.info.get("smiles"),
                energy=float("nan") if energy is None else _scalar(energy, energy_key) * factor,
                forces=None if forces is None else np.asarray(forces, dtype=np.float64) * factor,
                title=str(title),
            )
    return builder.finish()


read_extxyz = read_xyz  # one reader: ASE's extxyz parser reads plain XYZ as well


def read_sdf(
    path: str | os.PathLike,
    energy_prop: str | None = None,
    energy_unit: str | None = None,
    split: str = "train",
    allow_elements: Iterable[str] | None = None,
    on_error: str = "raise",
) -> Dataset:
    """Read an SDF with RDKit (``removeHs=False``; hydrogens must be explicit in the file).

    ``energy_prop`` names an SD property holding the energy (Hartree unless ``energy_unit``); no
    forces in SDF, so such records stay "unlabelled" with an energy. Files written by
    :func:`write_sdf` carry Hartree under ``golf_energy_hartree``. The record title is kept.
    """
    from rdkit import Chem, rdBase

    path = _existing(path)
    try:
        with rdBase.BlockLogs():
            mols = list(Chem.SDMolSupplier(str(path), removeHs=False, sanitize=True))
    except OSError as err:
        raise FormatError(f"{path}: not a readable SDF file ({_describe(err)})") from None
    if not mols:
        raise FormatError(f"{path}: no records; not an SDF file?")
    ours = energy_prop is None and energy_unit is None and mols[0] is not None and mols[0].HasProp(_GOLF_ENERGY_KEY)
    if ours:
        energy_prop = _GOLF_ENERGY_KEY
    unit = energy_unit or "hartree"
    factor = _unit_factor(unit)
    builder = _Builder(path, "sdf", split, allow_elements, on_error, unit, energy_unit is not None)
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
            builder.add(
                [a.GetAtomicNum() for a in mol.GetAtoms()],
                mol.GetConformer().GetPositions(),
                smiles=None,
                energy=energy,
                title=mol.GetProp("_Name").strip() if mol.HasProp("_Name") else "",
                rdmol=mol,
            )
    return builder.finish()


def import_file(path: str | os.PathLike, fmt: str | None = None, **kw: Any) -> Dataset:
    """Read a foreign file into a Dataset, choosing the reader by ``fmt`` or by the suffix.

    ``.db`` -> ASE database, ``.xyz``/``.extxyz`` -> (extended) XYZ, ``.sdf``/``.sd``/``.mol``
    -> SDF, ``.h5``/``.hdf5`` -> a golf-workflow dataset. ``kw`` goes to the reader.
    """
    path = _existing(path)
    if fmt is None:
        fmt = _SUFFIXES.get(path.suffix.lower())
        if fmt is None:
            raise FormatError(
                f"{path}: cannot tell the format from the suffix {path.suffix!r}; pass fmt ({', '.join(FORMATS)})"
            )
    if fmt == "golf":
        if kw:
            raise FormatError(f"{path}: a golf-workflow dataset takes no reader options, got {', '.join(kw)}")
        try:
            return golf_data.read(path)
        except golf_data.DataError as err:
            raise FormatError(str(err)) from None
    readers = {"ase_db": read_ase_db, "xyz": read_xyz, "extxyz": read_xyz, "sdf": read_sdf}
    if fmt not in readers:
        raise FormatError(f"{path}: unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    known = list(inspect.signature(readers[fmt]).parameters)[1:]
    unknown = [k for k in kw if k not in known]
    if unknown:
        raise FormatError(f"{path}: option {unknown[0]!r} does not apply to format {fmt}; known: {', '.join(known)}")
    return readers[fmt](path, **kw)


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------


def write_sdf(
    path: str | os.PathLike,
    dataset: Dataset,
    energy_prop: str = _GOLF_ENERGY_KEY,
    extra_props: Sequence[str] | None = None,
) -> None:
    """Write every conformation as an SDF record, bonds from its molecule's SMILES, atomically.

    Atoms come in the record's source order and with its own title where the dataset carries them
    (an imported file), else in AddHs order with the molecule's name. SD properties per record:
    ``energy_prop`` (Hartree; ``nan`` when unknown), ``golf_status``, ``golf_smiles``,
    ``golf_molecule_id``, ``golf_conformer_id``, and the scalar conformer properties named in
    ``extra_props`` (all scalar properties when None). Stereo tags follow the coordinates.
    """
    from rdkit import Chem

    buffer = io.StringIO()
    writer = Chem.SDWriter(buffer)
    writer.SetForceV3000(False)
    for index, c in enumerate(dataset.conformers):
        molecule = dataset.molecules[c.molecule_id]
        mol = Chem.Mol(_template(molecule.smiles))
        if [a.GetAtomicNum() for a in mol.GetAtoms()] != c.species.tolist():
            raise FormatError(
                f"conformer {index} (molecule {c.molecule_id}): atoms are not in the AddHs order of {molecule.smiles}"
            )
        mol.RemoveAllConformers()
        set_positions(mol, c.coordinates)
        Chem.AssignStereochemistryFrom3D(mol)
        order = _source_order(c)
        if order is not None:
            mol = Chem.RenumberAtoms(mol, np.argsort(order).tolist())  # file atom j = AddHs atom argsort[j]
        mol.SetProp("_Name", _title(dataset, c))
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
    """Write every conformation as a frame of an extended XYZ file (``ase.io``, Angstrom), atomically.

    Atoms and titles as in :func:`write_sdf`. The comment line holds ``golf_energy_hartree`` (``nan``
    when unknown), ``status``, ``smiles``, ``molecule_id``, ``conformer_id`` and ``name`` (the title).
    """
    import ase.io
    from ase import Atoms

    frames = []
    for c in dataset.conformers:
        molecule = dataset.molecules[c.molecule_id]
        order = _source_order(c)
        back = slice(None) if order is None else np.argsort(order)
        info = {_GOLF_ENERGY_KEY: float(c.energy), "status": c.status, "smiles": molecule.smiles}
        info |= {"molecule_id": int(c.molecule_id), "conformer_id": int(c.conformer_id)}
        if title := _title(dataset, c):
            info["name"] = title
        frames.append(Atoms(numbers=c.species[back], positions=c.coordinates[back], info=info))
    buffer = io.StringIO()
    ase.io.write(buffer, frames, format="extxyz")
    _write_text(path, buffer.getvalue())


def export_ani(dataset: Dataset, path: str | os.PathLike) -> int:
    """Write the labelled conformations (status "ok", finite energy and forces) for TorchANI.

    The file has TorchANI's by-formula layout (``species``, ``coordinates``, ``energies``,
    ``forces``, plus golf's numeric bookkeeping arrays), so ``torchani.datasets.ANIDataset``
    reads it; conformer properties are dropped. Returns the number of conformations written.
    """
    keep = [
        Conformer(c.molecule_id, c.conformer_id, c.species, c.coordinates, c.energy, c.forces, "ok")
        for c in dataset.conformers
        if c.status == "ok" and np.isfinite(c.energy) and c.forces is not None and np.isfinite(c.forces).all()
    ]
    if not keep:
        raise FormatError(f"{path}: nothing to export; the dataset has no labelled conformations")
    used = {c.molecule_id for c in keep}
    molecules = {i: m for i, m in dataset.molecules.items() if i in used}
    golf_data.write(path, Dataset(molecules, keep, dict(dataset.attrs)))  # JSON file attributes: ANI-safe
    return len(keep)


# --------------------------------------------------------------------------------------------
# The builder: element check, molecule and atom order, molecule table, unit check
# --------------------------------------------------------------------------------------------


class _Builder:
    """Collects the records of one file into a Dataset."""

    def __init__(self, path, fmt, split, allow_elements, on_error, unit: str, unit_given: bool):
        if on_error not in ("raise", "skip"):
            raise FormatError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if split not in ("train", "test"):
            raise FormatError(f"split must be 'train' or 'test', got {split!r}")
        self.path, self.split, self.on_error = path, split, on_error
        self.unit, self.unit_given = unit, unit_given
        self.hint = ""  # the reader's own explanation of a bad energy, when it has one
        self.allowed = _allowed_numbers(allow_elements)
        source = {"format": fmt, "path": str(path), "energy_unit": unit}
        self.dataset = Dataset(attrs={"source": source, "energy_convention": "total"})
        self.skipped: list[str] = []
        self.titles: list[str] = []
        self._ids: dict[str, int] = {}
        self._counts: dict[int, int] = {}

    def record(self, where: str) -> _Record:
        return _Record(self, where)

    def add(self, species, coordinates, smiles, energy=float("nan"), forces=None, props=None, title="", rdmol=None):
        record = len(self.titles)
        self.titles.append(title)  # before any error: record indices count every record of the file
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
            self._check_energy(float(energy), species)

        canonical, order = _addhs_order(species, coordinates, smiles, rdmol)
        mid = self._ids.get(canonical)
        if mid is None:
            from rdkit import Chem

            mid = self._ids[canonical] = len(self._ids)
            template = _template(canonical)
            self.dataset.molecules[mid] = Molecule(
                molecule_id=mid,
                smiles=canonical,
                name=title,
                charge=int(Chem.GetFormalCharge(template)),
                multiplicity=1 + sum(a.GetNumRadicalElectrons() for a in template.GetAtoms()),
                split=self.split,
            )
        cid = self._counts.get(mid, 0)
        self._counts[mid] = cid + 1
        props = {**(props or {}), "source_record": record}
        if not np.array_equal(order, np.arange(len(order))):
            props["source_order"] = order
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
                props=props,
            )
        )

    def _check_energy(self, energy: float, species) -> None:
        """Raise unless ``energy`` (Hartree, after conversion) is the size of a total energy of these atoms."""
        scale = float(sum(0.7687 * int(z) ** (7 / 3) for z in species))  # Thomas-Fermi atoms, Hartree
        ratio = abs(energy) / scale
        low, high = _TOTAL_ENERGY_RATIO
        if low <= ratio <= high:
            return
        hint = self.hint or (
            f"is energy_unit={self.unit!r} right, and are these total energies?"
            if self.unit_given
            else f"read as {self.unit}, the format's default; pass the file's energy_unit "
            f"({', '.join(ENERGY_UNITS)}), or atomrefs if the energies have them subtracted"
        )
        raise FormatError(
            f"energy {energy:.6g} Ha is {ratio:.3g}x the total-energy scale of its atoms "
            f"(~{-0.75 * scale:.0f} Ha), not a total energy in Hartree: {hint}"
        )

    def finish(self) -> Dataset:
        if self.skipped:
            self.dataset.attrs["skipped_records"] = self.skipped
        if any(self.titles):
            self.dataset.attrs["record_titles"] = self.titles
        if not self.dataset.conformers and not self.skipped:
            raise FormatError(f"{self.path}: no conformations in the file")
        rms = [np.sqrt(np.mean(c.forces**2)) for c in self.dataset if c.forces is not None]
        rms = [r for r in rms if np.isfinite(r)]
        if rms and np.median(rms) > _FORCE_RMS_LIMIT:
            raise FormatError(
                f"{self.path}: forces have a median RMS of {np.median(rms):.3g} Ha/Angstrom (read as "
                f"{self.unit}/Angstrom), far above molecular forces; pass the file's energy_unit (sets both "
                "energies and forces)"
            )
        return self.dataset


class _Record:
    """Context for one record: prefixes errors with the file and record, or skips the record."""

    def __init__(self, builder: _Builder, where: str):
        self.builder, self.where = builder, where

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


# --------------------------------------------------------------------------------------------
# Molecules and atom order (RDKit)
# --------------------------------------------------------------------------------------------


def _addhs_order(species, coordinates, smiles, rdmol) -> tuple[str, np.ndarray]:
    """Canonical SMILES of a record and the file index of each atom in its AddHs order.

    ``rdmol`` is the record's own molecule (SDF); without it bonds are perceived from the
    coordinates: connectivity when a SMILES is given (its bond orders are then assigned from the
    SMILES), connectivity and bond orders (neutral molecule) when not.
    """
    from rdkit import Chem, rdBase
    from rdkit.Chem import AllChem, rdDetermineBonds

    with rdBase.BlockLogs():
        mol = rdmol
        if mol is None:
            lines = [
                f"{_symbol(int(z))} {x:.12f} {y:.12f} {w:.12f}"
                for z, (x, y, w) in zip(species, coordinates, strict=True)
            ]
            mol = Chem.MolFromXYZBlock(f"{len(species)}\n\n" + "\n".join(lines) + "\n")
            try:
                if smiles is None:
                    rdDetermineBonds.DetermineBonds(mol, charge=0)
                    Chem.SanitizeMol(mol)
                    Chem.AssignStereochemistryFrom3D(mol)
                else:
                    rdDetermineBonds.DetermineConnectivity(mol)
            except (ValueError, RuntimeError) as err:
                raise FormatError(f"cannot perceive a neutral closed-shell molecule ({_describe(err)})") from None
        if smiles is None:
            smiles = Chem.MolToSmiles(Chem.RemoveHs(mol, sanitize=False))
        canonical = _canonical(str(smiles))
        template = _template(canonical)
        want = np.array([a.GetAtomicNum() for a in template.GetAtoms()])
        if sorted(species.tolist()) != sorted(want.tolist()):
            got, expected = golf_data.formula(species), golf_data.formula(want)
            raise FormatError(f"atoms {got} do not match SMILES {canonical} ({expected} with hydrogens)")
        same_bonds = mol.GetNumBonds() == template.GetNumBonds()
        if same_bonds and np.array_equal(species, want):
            if np.array_equal(Chem.GetAdjacencyMatrix(mol), Chem.GetAdjacencyMatrix(template)):
                return canonical, np.arange(len(species))  # already in AddHs order: keep it, not a symmetric copy
        if rdmol is None and same_bonds:
            try:
                mol = AllChem.AssignBondOrdersFromTemplate(template, mol)
            except (ValueError, RuntimeError):
                same_bonds = False
        match = mol.GetSubstructMatch(template) if same_bonds else ()
        if len(match) != len(species):
            raise FormatError(f"cannot match the atoms onto SMILES {canonical} (bonds in the geometry differ)")
    return canonical, np.asarray(match, dtype=np.int64)


def _canonical(smiles: str) -> str:
    """The canonical SMILES; FormatError if RDKit cannot parse it."""
    try:
        return canonical_smiles(smiles)
    except SmilesError as err:
        raise FormatError(str(err)) from None


def _template(smiles: str):
    """The molecule's atom order (:func:`golf.data.molecule.addhs_template`), never to be modified;
    FormatError if RDKit cannot parse the SMILES."""
    try:
        return addhs_template(smiles)
    except SmilesError as err:
        raise FormatError(str(err)) from None


def _source_order(c: Conformer) -> np.ndarray | None:
    """The file index of each atom, when the conformer came from a file in another order."""
    order = c.props.get("source_order")
    if order is None:
        return None
    order = np.asarray(order, dtype=np.int64)
    # rows without the property carry -1 fill values once they share an HDF5 group with others
    return order if sorted(order.tolist()) == list(range(len(c.species))) else None


def _title(dataset: Dataset, c: Conformer) -> str:
    """The record's own title where the dataset knows it, else the molecule's name."""
    titles = dataset.attrs.get("record_titles")
    record = c.props.get("source_record", -1)
    if titles and 0 <= int(record) < len(titles):
        return str(titles[int(record)])
    return dataset.molecules[c.molecule_id].name


# --------------------------------------------------------------------------------------------
# Units and atomrefs
# --------------------------------------------------------------------------------------------


def _unit_factor(unit: str) -> float:
    key = str(unit).lower().replace(" ", "")
    if key not in ENERGY_UNITS:
        raise FormatError(f"unknown energy_unit {unit!r}; known: {', '.join(ENERGY_UNITS)}")
    return ENERGY_UNITS[key]


def _metadata_unit(metadata, path) -> str | None:
    """The energy unit an ASE database declares (schnetpack's ``_property_unit_dict``), or None."""
    units = metadata.get("_property_unit_dict") if isinstance(metadata, Mapping) else None
    unit = units.get("energy") if isinstance(units, Mapping) else None
    if unit is not None and str(unit).lower().replace(" ", "") not in ENERGY_UNITS:
        raise FormatError(f"{path}: the database declares energy unit {unit!r}; known: {', '.join(ENERGY_UNITS)}")
    return unit


def _atomrefs_per_z(value, path) -> np.ndarray:
    """Metadata ``atomrefs`` (``{"energy": per-Z list}`` or the list itself) as an array in the file's unit."""
    if isinstance(value, Mapping):
        value = value.get("energy")
    try:
        return np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise FormatError(f"{path}: metadata atomrefs is not a per-Z list of energies") from None


def _atomref_sum(atomrefs: np.ndarray, numbers) -> float:
    numbers = np.asarray(numbers, dtype=np.int64)
    if numbers.max() >= len(atomrefs):
        raise FormatError(f"no atomref for element {_symbol(int(numbers.max()))}")
    return float(atomrefs[numbers].sum())


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


def _comment_lines(path: Path, n_atoms: Sequence[int]) -> list[str]:
    """The comment line of each frame (ASE keeps only its parsed key=value pairs)."""
    lines = path.read_text(errors="replace").splitlines()
    out, i = [], 0
    for n in n_atoms:
        out.append(lines[i + 1].strip() if i + 1 < len(lines) else "")
        i += n + 2
    return out


def _scalar_props(c: Conformer, names: Sequence[str] | None) -> dict[str, float | int]:
    out = {}
    for key, value in c.props.items():
        if names is not None and key not in names or key.startswith("source_"):
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
