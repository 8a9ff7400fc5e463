"""Conformation datasets and their HDF5 files: the only module that opens HDF5.

Layout (TorchANI's by-formula layout, readable by ``torchani.datasets.ANIDataset``):

    /<formula>/species        (n_conf, n_atoms)     int64, atomic numbers
    /<formula>/coordinates    (n_conf, n_atoms, 3)  float64, Angstrom
    /<formula>/energies       (n_conf,)             float64, Hartree (NaN when unlabelled)
    /<formula>/forces         (n_conf, n_atoms, 3)  float64, Hartree/Angstrom (NaN when unlabelled)
    /<formula>/row            (n_conf,)             int64, position in the dataset (keeps order)
    /<formula>/molecule_id    (n_conf,)             int64, key into the molecule table
    /<formula>/conformer_id   (n_conf,)             int64
    /<formula>/status         (n_conf,)             int64, code into STATUSES
    /<formula>/<prop>         (n_conf, ...)         per-conformation properties

Every group has the same keys (ANIDataset requires it): a property that some conformations lack
is stored with a fill value (NaN for floats, -1 for integers and names). Strings never go inside
groups: a name-valued property (a trajectory's end, "converged") is stored as int64 codes into its
list of names in the ``properties`` attribute, the way statuses are; the molecule table (SMILES,
names, charge, multiplicity, split), the status names, units and provenance are JSON file
attributes.

Energies follow one convention per file, ``attrs["energy_convention"]``: "total" (total energies,
what the oracle writes and what every reader of this package produces; atomrefs of a foreign
database stay as provenance in ``attrs["atomrefs"]``) or "atomref_subtracted" (only files written
before that rule: an imported GOLF/nablaDFT database kept its atomref-subtracted energies).
Mixing conventions (:func:`concat`) or training on subtracted energies
(:func:`require_total_energies`) is an error.

A conformation's atom order is the atom order of ``Chem.AddHs(Chem.MolFromSmiles(smiles))``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "STATUSES",
    "UNITS",
    "DataError",
    "Molecule",
    "Conformer",
    "Dataset",
    "read",
    "write",
    "concat",
    "ENERGY_CONVENTIONS",
    "energy_convention",
    "require_total_energies",
    "formula",
    "config_digest",
]

# Status of a conformation. Codes are positions in this tuple and never change meaning: append only.
STATUSES = (
    "unlabelled",  # geometry only, no oracle label yet
    "ok",  # labelled
    "scf_not_converged",  # the oracle's SCF fallback ladder was exhausted
    "timeout",  # the oracle task ran past its time limit
    "worker_crashed",  # the oracle worker died twice on this task
    "oracle_error",  # any other oracle error (message in the log)
    "force_too_large",  # label rejected: force norm above the configured limit
    "skipped_mmff_high",  # GOLF selection: MMFF energy above the threshold
    "skipped_repaired",  # GOLF selection: close atoms were pushed apart
    "skipped_nonfinite",  # non-finite positions or energies
    "converged",  # optimisation: converged by the force criterion
    "running",  # optimisation: a trajectory still in flight (a finished one ends converged, step_limit, ...)
    "skipped_no_mmff",  # RDKit MMFF has no parameters for the molecule
    "step_limit",  # optimisation: ran its steps without converging
    "broken",  # optimisation: the bond graph differs from the input's (golf.optim.lbfgs.bond_change)
    "fragmented",  # optimisation: the molecule fell apart into more pieces than the input had
)
_STATUS_CODE = {name: code for code, name in enumerate(STATUSES)}

UNITS = {
    "energies": "Hartree",
    "forces": "Hartree/Angstrom",
    "coordinates": "Angstrom",
}

ENERGY_CONVENTIONS = ("total", "atomref_subtracted")

_CORE_KEYS = ("species", "coordinates", "energies", "forces", "row", "molecule_id", "conformer_id", "status")
# File attributes that hold the layout itself; a dataset's own attrs must not overwrite them.
_RESERVED_ATTRS = ("golf_format", "units", "statuses", "properties", "molecules")


class DataError(Exception):
    """A file that is not one of our datasets, or a dataset that breaks the data contract."""


@dataclass
class Molecule:
    molecule_id: int
    smiles: str
    name: str = ""
    charge: int = 0
    multiplicity: int = 1
    split: str = "train"  # "train" or "test"


@dataclass
class Conformer:
    """One conformation. ``props`` holds extra properties: numeric scalars, per-atom arrays, or
    names (str; None where a conformation of the file lacks it)."""

    molecule_id: int
    conformer_id: int
    species: np.ndarray  # (atoms,) atomic numbers
    coordinates: np.ndarray  # (atoms, 3) Angstrom
    energy: float = float("nan")  # Hartree
    forces: np.ndarray | None = None  # (atoms, 3) Hartree/Angstrom
    status: str = "unlabelled"
    props: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.species = np.asarray(self.species, dtype=np.int64)
        self.coordinates = np.asarray(self.coordinates, dtype=np.float64).reshape(-1, 3)
        if self.forces is not None:
            self.forces = np.asarray(self.forces, dtype=np.float64).reshape(-1, 3)
        if self.status not in _STATUS_CODE:
            raise DataError(f"unknown status {self.status!r}; allowed: {', '.join(STATUSES)}")

    @property
    def labelled(self) -> bool:
        return self.status == "ok"

    @property
    def trainable(self) -> bool:
        """Labelled, with finite energy, forces and coordinates: a row training can use."""
        return (
            self.status == "ok"
            and np.isfinite(self.energy)
            and self.forces is not None
            and bool(np.isfinite(self.forces).all())
            and bool(np.isfinite(self.coordinates).all())
        )


class Dataset:
    """A list of conformations, the molecule table they refer to, and file attributes.

    A dataset read from a file holds its formula groups as whole arrays and makes one
    :class:`Conformer` per row only when ``conformers`` (or iteration, ``subset``, ...) asks for
    them; ``len``, :meth:`column`, :meth:`status_counts` and writing it back work on the arrays.
    """

    def __init__(
        self,
        molecules: dict[int, Molecule] | None = None,
        conformers: list[Conformer] | None = None,
        attrs: dict[str, Any] | None = None,
    ):
        self.molecules = {} if molecules is None else molecules
        self.attrs = {} if attrs is None else attrs
        self._conformers: list[Conformer] | None = [] if conformers is None else conformers
        self._groups: list[tuple[str, dict[str, np.ndarray]]] = []  # only while _conformers is None
        self._kinds: dict[str, tuple[str, tuple]] = {}

    @classmethod
    def _from_groups(cls, molecules, groups, kinds, attrs) -> Dataset:
        ds = cls(molecules, None, attrs)
        ds._conformers, ds._groups, ds._kinds = None, groups, kinds
        return ds

    @property
    def conformers(self) -> list[Conformer]:
        if self._conformers is None:
            self._conformers = _conformers_of(self._groups, self._kinds)
            self._groups, self._kinds = [], {}
        return self._conformers

    @conformers.setter
    def conformers(self, value: list[Conformer]) -> None:
        self._conformers, self._groups, self._kinds = value, [], {}

    def __len__(self) -> int:
        if self._conformers is None:
            return sum(len(g["row"]) for _, g in self._groups)
        return len(self._conformers)

    def __iter__(self):
        return iter(self.conformers)

    def __repr__(self) -> str:
        return f"Dataset({len(self.molecules)} molecules, {len(self)} conformations, attrs={sorted(self.attrs)})"

    def column(self, key: str) -> np.ndarray:
        """One value per conformation in row order: ``energies``, ``molecule_id``, ``conformer_id``,
        ``status`` (names) or a scalar property (its fill value, NaN or -1, where a row lacks it)."""
        if self._conformers is not None:
            return _column_of(self._conformers, key)
        if not self._groups:
            return np.zeros(0)
        scalar = (
            key in ("energies", "molecule_id", "conformer_id", "status") or self._kinds.get(key, (0, None))[1] == ()
        )
        if not scalar:
            raise DataError(f"no per-conformation scalar {key!r}; known: energies, molecule_id, conformer_id, status")
        values = np.concatenate([g[key] for _, g in self._groups])
        out = np.empty_like(values)
        out[np.concatenate([g["row"] for _, g in self._groups])] = values
        return np.asarray(STATUSES)[out] if key == "status" else out

    def subset(self, keep: Iterable[bool] | Iterable[int]) -> Dataset:
        """A dataset with the conformers selected by a boolean mask or by indices."""
        keep = list(keep)
        if keep and isinstance(keep[0], (bool, np.bool_)):
            conformers = [c for c, k in zip(self.conformers, keep, strict=True) if k]
        else:
            conformers = [self.conformers[i] for i in keep]
        used = {c.molecule_id for c in conformers}
        molecules = {i: m for i, m in self.molecules.items() if i in used}
        return Dataset(molecules, conformers, dict(self.attrs))

    def split(self, name: str) -> Dataset:
        """The conformers of molecules in the given split ("train" or "test")."""
        return self.subset([self.molecules[c.molecule_id].split == name for c in self.conformers])

    def labelled(self) -> Dataset:
        return self.subset([c.labelled for c in self.conformers])

    def status_counts(self) -> dict[str, int]:
        if self._conformers is None:
            return dict(Counter(self.column("status").tolist()))
        return dict(Counter(c.status for c in self._conformers))

    def smiles(self, conformer: Conformer) -> str:
        return self.molecules[conformer.molecule_id].smiles


def formula(species: np.ndarray) -> str:
    """Hill formula of a list of atomic numbers, e.g. ``C2H6O``."""
    from ase.data import chemical_symbols  # ASE, not RDKit: the Psi4 env has no RDKit

    counts = Counter(int(z) for z in species)
    symbols = {chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z{z}": n for z, n in counts.items()}
    order = ["C", "H"] if "C" in symbols else []
    order += sorted(s for s in symbols if s not in order)
    return "".join(s + (str(symbols[s]) if symbols[s] > 1 else "") for s in order if s in symbols)


def energy_convention(dataset: Dataset) -> str:
    """The dataset's energy convention (one of ENERGY_CONVENTIONS; "total" when not recorded)."""
    convention = dataset.attrs.get("energy_convention", "total")
    if convention not in ENERGY_CONVENTIONS:
        raise DataError(f"unknown energy_convention {convention!r}; allowed: {', '.join(ENERGY_CONVENTIONS)}")
    return convention


def require_total_energies(dataset: Dataset, what: str = "training") -> None:
    """Raise DataError unless the dataset holds total energies (what models and the oracle use)."""
    convention = energy_convention(dataset)
    if convention != "total":
        source = dataset.attrs.get("source")
        origin = f" (imported from {source})" if source else ""
        raise DataError(
            f"{what} needs total energies, but this dataset{origin} holds {convention} energies; "
            "re-import the source file with `golf import`, which adds the atomrefs back"
        )


def config_digest(config: dict) -> str:
    """A short digest of a JSON-able config, stored as provenance."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _prop_kinds(conformers: list[Conformer]) -> dict[str, tuple[str, tuple]]:
    """For each property: ("float" | "int", ("atoms", *trailing) for a per-atom property or () for a scalar)."""
    kinds: dict[str, tuple[str, tuple]] = {}
    for c in conformers:
        for key, value in c.props.items():
            if key in _CORE_KEYS:
                raise DataError(f"property name {key!r} is reserved")
            if value is None:  # a name property this conformation lacks
                continue
            if isinstance(value, str):
                kind, shape = "name", ()
            elif isinstance(value, (float, np.floating)):  # scalars first: no array for the common case
                kind, shape = "float", ()
            elif isinstance(value, (int, np.integer)):
                kind, shape = "int", ()
            else:
                arr = np.asarray(value)
                if arr.dtype.kind not in "biuf":
                    raise DataError(f"property {key!r} must be numeric, got {arr.dtype}")
                kind = "int" if arr.dtype.kind in "biu" else "float"
                shape = ("atoms", *arr.shape[1:]) if arr.ndim else ()
            old = kinds.get(key)
            if old is None:
                kinds[key] = (kind, shape)
            elif (old[0] == "name") != (kind == "name"):
                raise DataError(f"property {key!r} mixes names and numbers")
            elif old[0] == "int" and kind == "float":
                kinds[key] = ("float", old[1])
    return kinds


def _groups_of(conformers: list[Conformer]) -> tuple[list[tuple[str, dict[str, np.ndarray]]], dict]:
    """The conformers as by-formula groups of whole arrays (the file layout), and the property kinds."""
    kinds = _prop_kinds(conformers)
    rows_of: dict[str, list[int]] = defaultdict(list)
    formula_of: dict[bytes, str] = {}  # formula() is slow next to a dict look-up by the species' bytes
    for row, c in enumerate(conformers):
        key = c.species.tobytes()
        name = formula_of.get(key)
        if name is None:
            name = formula_of[key] = formula(c.species)
        rows_of[name].append(row)
    groups = []
    for name, rows in rows_of.items():
        members = [conformers[r] for r in rows]
        n_atoms = len(members[0].species)  # one formula, one atom count
        nan_forces = np.full((n_atoms, 3), np.nan)
        k = len(members)
        g = {
            "species": np.stack([c.species for c in members]),
            "coordinates": np.stack([c.coordinates for c in members]),
            "energies": np.fromiter((c.energy for c in members), np.float64, k),
            "forces": np.stack([nan_forces if c.forces is None else c.forces for c in members]),
            "row": np.asarray(rows, dtype=np.int64),
            "molecule_id": np.fromiter((c.molecule_id for c in members), np.int64, k),
            "conformer_id": np.fromiter((c.conformer_id for c in members), np.int64, k),
            "status": np.fromiter((_STATUS_CODE[c.status] for c in members), np.int64, k),
        }
        for key, (kind, shape) in kinds.items():
            if kind == "name":  # held as str/None in memory; write() codes them
                g[key] = np.array([c.props.get(key) for c in members], dtype=object)
                continue
            full_shape = tuple(n_atoms if s == "atoms" else s for s in shape)
            fill = np.nan if kind == "float" else -1
            dtype = np.float64 if kind == "float" else np.int64
            values = [c.props.get(key) for c in members]
            if not full_shape and all(v is not None for v in values):
                g[key] = np.asarray(values, dtype=dtype)  # the common case: a scalar every row has
                continue
            column = np.full((k, *full_shape), fill, dtype=dtype)
            for i, value in enumerate(values):
                if value is None:
                    continue
                value = np.asarray(value, dtype=dtype)
                if value.size != int(np.prod(full_shape)):
                    raise DataError(f"property {key!r} of row {rows[i]} has shape {value.shape}, expected {full_shape}")
                column[i] = value.reshape(full_shape)
            g[key] = column
        groups.append((name, g))
    return groups, kinds


def _conformers_of(groups: list[tuple[str, dict[str, np.ndarray]]], kinds: dict) -> list[Conformer]:
    """One Conformer per row of the groups, in row order; arrays are views into the groups."""
    out: list[Conformer | None] = [None] * sum(len(g["row"]) for _, g in groups)
    for _, g in groups:
        labelled_forces = ~np.isnan(g["forces"]).all(axis=(1, 2))
        scalars = {k: g[k].tolist() for k, (_, shape) in kinds.items() if shape == ()}
        per_atom = {k: g[k] for k, (_, shape) in kinds.items() if shape != ()}
        columns = zip(
            g["row"].tolist(),
            g["molecule_id"].tolist(),
            g["conformer_id"].tolist(),
            g["energies"].tolist(),
            g["status"].tolist(),
            labelled_forces.tolist(),
            strict=True,
        )
        for i, (row, mid, cid, energy, code, has_forces) in enumerate(columns):
            # __init__'s conversions are no-ops for these arrays: skip them (10^5-10^6 rows)
            c = Conformer.__new__(Conformer)
            c.__dict__.update(
                molecule_id=mid,
                conformer_id=cid,
                species=g["species"][i],
                coordinates=g["coordinates"][i],
                energy=energy,
                forces=g["forces"][i] if has_forces else None,
                status=STATUSES[code],
                props={**{k: v[i] for k, v in scalars.items()}, **{k: v[i] for k, v in per_atom.items()}},
            )
            out[row] = c
    return out


def _column_of(conformers: list[Conformer], key: str) -> np.ndarray:
    getters = {
        "energies": lambda c: c.energy,
        "molecule_id": lambda c: c.molecule_id,
        "conformer_id": lambda c: c.conformer_id,
        "status": lambda c: c.status,
    }
    if key in getters:
        return np.array([getters[key](c) for c in conformers])
    kind = _prop_kinds(conformers).get(key)
    if kind is None or kind[1] != ():
        raise DataError(f"no per-conformation scalar {key!r}; known: energies, molecule_id, conformer_id, status")
    if kind[0] == "name":
        return np.array([c.props.get(key) for c in conformers], dtype=object)
    fill = np.nan if kind[0] == "float" else -1
    return np.array([c.props.get(key, fill) for c in conformers], dtype=np.float64 if kind[0] == "float" else np.int64)


def write(path: str | os.PathLike, dataset: Dataset) -> None:
    """Write a dataset atomically: a temporary file in the same folder, then a rename."""
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clash = sorted(set(dataset.attrs) & set(_RESERVED_ATTRS))
    if clash:
        raise DataError(f"attribute name(s) {', '.join(map(repr, clash))} are reserved for the file layout")
    attrs = {**dataset.attrs, "energy_convention": energy_convention(dataset)}  # every file records it
    if dataset._conformers is None:  # read from a file and not touched since: its arrays go back as they are
        groups, kinds = dataset._groups, dataset._kinds
    else:
        groups, kinds = _groups_of(dataset._conformers)

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        names = {  # one list of names per name property, over all groups
            k: sorted({v for _, g in groups for v in g[k] if v is not None})
            for k, (kind, _) in kinds.items()
            if kind == "name"
        }
        codes = {k: {n: i for i, n in enumerate(v)} | {None: -1} for k, v in names.items()}
        with h5py.File(tmp, "w") as f:
            for name, arrays in groups:
                g = f.create_group(name)
                for key, value in arrays.items():
                    if key in codes:
                        value = np.fromiter((codes[key][v] for v in value), np.int64, len(value))
                    g[key] = value
            f.attrs["golf_format"] = 1
            f.attrs["units"] = json.dumps(UNITS)
            f.attrs["statuses"] = json.dumps(list(STATUSES))
            f.attrs["properties"] = json.dumps(
                {k: [kind, list(shape), *([names[k]] if k in names else [])] for k, (kind, shape) in kinds.items()}
            )
            f.attrs["molecules"] = json.dumps([vars(m) for m in dataset.molecules.values()])
            for key, value in attrs.items():
                f.attrs[key] = json.dumps(value)  # JSON throughout, so values read back with their type
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read(path: str | os.PathLike) -> Dataset:
    """Read a dataset written by :func:`write` (whole arrays per group). Raises DataError for anything else."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: not an HDF5 file ({err})") from None
    with f:
        if "golf_format" not in f.attrs:
            raise DataError(f"{path}: HDF5 file without golf attributes; not a golf-workflow dataset")
        try:
            # status codes of the file -> ours (STATUSES only grows, so this is the identity for our files)
            code = np.array([_STATUS_CODE[s] for s in json.loads(f.attrs["statuses"])], dtype=np.int64)
            properties = json.loads(f.attrs["properties"])
            kinds = {k: (kind, tuple(shape)) for k, (kind, shape, *_) in properties.items()}
            # codes of a name property -> its names; the extra last entry turns the fill -1 into None
            names = {k: np.array([*p[2], None], dtype=object) for k, p in properties.items() if p[0] == "name"}
            molecules = {m["molecule_id"]: Molecule(**m) for m in json.loads(f.attrs["molecules"])}
            attrs = {k: _attr_value(v) for k, v in f.attrs.items() if k not in _RESERVED_ATTRS}
            groups = []
            for name, g in f.items():
                arrays = {key: g[key][()] for key in (*_CORE_KEYS, *kinds)}
                arrays["status"] = code[arrays["status"]]
                for key, table in names.items():
                    arrays[key] = table[arrays[key]]
                groups.append((name, arrays))
        except (KeyError, ValueError, TypeError, IndexError) as err:
            raise DataError(f"{path}: damaged golf-workflow dataset ({err!r})") from None
    if "energy_convention" not in attrs:
        # Before the convention was recorded, only an import of a database with atomrefs
        # (GOLF/nablaDFT) stored non-total energies: it kept them atomref-subtracted.
        attrs["energy_convention"] = "atomref_subtracted" if "atomrefs" in attrs else "total"
    dataset = Dataset._from_groups(molecules, groups, kinds, attrs)
    try:
        energy_convention(dataset)
    except DataError as err:
        raise DataError(f"{path}: {err}") from None
    return dataset


def _attr_value(value):
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    if isinstance(value, np.generic):
        return value.item()
    return value


def concat(datasets: Iterable[Dataset], attrs: dict | None = None) -> Dataset:
    """Conformers of several datasets in order. Molecule tables and energy conventions must agree.

    The result carries the inputs' common energy convention (over ``attrs``'s, which must agree too).
    """
    datasets = list(datasets)
    out = Dataset(attrs=dict(attrs or {}))
    conventions = {energy_convention(ds) for ds in datasets}
    if "energy_convention" in out.attrs:
        conventions.add(energy_convention(out))
    if len(conventions) > 1:
        raise DataError(
            f"cannot combine datasets with different energy conventions ({' and '.join(sorted(conventions))}); "
            "re-import the atomref-subtracted one with `golf import` to get total energies"
        )
    if conventions:
        out.attrs["energy_convention"] = conventions.pop()
    for ds in datasets:
        for mid, mol in ds.molecules.items():
            known = out.molecules.setdefault(mid, mol)
            if known.smiles != mol.smiles:
                raise DataError(f"molecule id {mid} is {known.smiles} in one dataset and {mol.smiles} in another")
        out.conformers.extend(ds.conformers)
    return out
