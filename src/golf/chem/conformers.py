"""Molecule lists and RDKit conformers: ETKDG embedding, optional MMFF relaxation, RMSD
de-duplication, and the train/test split by molecule.

Bad input never stops the study: a molecule with an invalid SMILES, an element outside the NNP's
list, a duplicate, or one RDKit cannot embed is skipped, and the skip (name, SMILES, reason) is
recorded in the dataset's ``skipped`` attribute and the log.
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from golf.data.dataset import Conformer, Dataset, Molecule
from golf.data.molecule import addhs_template, set_positions

log = logging.getLogger(__name__)

_COMMENT = re.compile(r"(?:^|\s)#")


class MoleculeListError(Exception):
    """A molecule list that cannot be used at all (missing, or no valid molecule in it)."""


@dataclass
class MoleculeSpec:
    smiles: str  # canonical
    name: str
    line: int


def read_molecule_list(path: str | Path) -> tuple[list[MoleculeSpec], list[dict]]:
    """Molecules of a ``.smi`` file ("SMILES name" per line, # comments) and the skipped lines.

    SMILES are canonicalised so that duplicates written differently are caught.
    """
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")  # invalid SMILES are reported below, in one line each
    path = Path(path)
    if not path.exists():
        raise MoleculeListError(f"{path}: no such molecule list")
    specs, skipped, seen = [], [], {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        # A comment starts a line or follows whitespace: '#' inside a SMILES is a triple bond (CC#N).
        line = _COMMENT.split(raw, maxsplit=1)[0].strip()
        if not line:
            continue
        smiles, *rest = line.split()
        name = rest[0] if rest else f"mol{number}"
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            skipped.append({"name": name, "smiles": smiles, "reason": f"line {number}: invalid SMILES"})
            continue
        canonical = Chem.MolToSmiles(mol)
        if canonical in seen:
            reason = f"line {number}: duplicate of {seen[canonical]}"
            skipped.append({"name": name, "smiles": smiles, "reason": reason})
            continue
        seen[canonical] = name
        specs.append(MoleculeSpec(canonical, name, number))
    if not specs and not skipped:
        raise MoleculeListError(f"{path}: no molecules in the list (only comments or blank lines)")
    return specs, skipped


# A molecule list shipped with RDKit: "rdkit:NCI/first_5K.smi" is RDConfig.RDDataDir/NCI/first_5K.smi
# (4 991 molecules of the NCI open database), a public set nobody here chose.
RDKIT_DATA = "rdkit:"


def molecule_list_path(name: str) -> str:
    """The file a config's ``molecules:`` names: a path, or ``rdkit:<file under RDKit's Data>``."""
    if not name.startswith(RDKIT_DATA):
        return name
    from rdkit import RDConfig

    return str(Path(RDConfig.RDDataDir) / name.removeprefix(RDKIT_DATA))


@dataclass(frozen=True)
class MoleculeFilter:
    """Which molecules of a list a study uses (config ``molecule_filter``); None or False: no limit."""

    max_heavy_atoms: int | None = None
    neutral: bool = False  # no formal charge on any atom (zwitterions out too)
    single_fragment: bool = False  # no salts or mixtures
    max_molecules: int | None = None  # the first that pass, in file order


def filter_molecules(
    specs: list[MoleculeSpec], elements: list[str], rules: MoleculeFilter
) -> tuple[list[MoleculeSpec], dict[str, int]]:
    """The molecules that pass ``rules``, and how many each rule left out (counted, not listed: a
    public set such as NCI's leaves out thousands). A molecule with an element outside
    ``elements`` passes on, to be skipped with its reason by :func:`generate_conformers`, but does
    not count towards ``max_molecules``."""
    from rdkit import Chem

    out: Counter = Counter()
    kept, usable = [], 0
    for spec in specs:
        mol = addhs_template(spec.smiles)
        if rules.max_heavy_atoms is not None and mol.GetNumHeavyAtoms() > rules.max_heavy_atoms:
            out["heavy_atoms"] += 1
        elif rules.neutral and any(a.GetFormalCharge() for a in mol.GetAtoms()):
            out["charged"] += 1
        elif rules.single_fragment and len(Chem.GetMolFrags(mol)) > 1:
            out["fragments"] += 1
        elif rules.max_molecules is not None and usable >= rules.max_molecules:
            out["beyond_max_molecules"] += 1
        else:
            kept.append(spec)
            usable += not {a.GetSymbol() for a in mol.GetAtoms()} - set(elements)
    return kept, dict(out)


def _rmsd(mol, conf_a: int, conf_b: int) -> float:
    """All-atom RMSD after the best alignment over symmetry-equivalent atom orders (Angstrom)."""
    from rdkit.Chem import rdMolAlign

    return rdMolAlign.GetBestRMS(mol, mol, prbId=conf_a, refId=conf_b)


def _rdkit_seed(seed: int) -> int:
    """A seed RDKit's ETKDG accepts and that gives distinct, reproducible conformers.

    RDKit seeds conformer i from the seed, so 0 makes every conformer the same geometry; -1 means
    "random" (not reproducible) and anything below -1 is an error. Positive seeds pass unchanged.
    """
    if seed > 0:
        return seed
    return 2**30 + (-seed) % 2**30  # 0 -> 2**30, -1 -> 2**30 + 1, ... (2**31 - 1 acts like 0)


def embed(smiles: str, n_keep: int, attempts: int, seed: int, mmff_relax: bool, rmsd_threshold: float):
    """Up to ``n_keep`` distinct conformers (coordinates in AddHs atom order) of one molecule.

    Returns (atomic numbers, list of (atoms, 3) arrays, charge, multiplicity).
    Raises ValueError when RDKit cannot embed the molecule.
    """
    from rdkit import Chem
    from rdkit.Chem import AllChem, Descriptors

    mol = Chem.Mol(addhs_template(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = _rdkit_seed(seed)
    params.pruneRmsThresh = -1.0  # we de-duplicate ourselves (all atoms), after any relaxation
    ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=attempts, params=params))
    if not ids:
        raise ValueError("RDKit could not embed the molecule (ETKDG failed)")
    if mmff_relax:
        AllChem.MMFFOptimizeMoleculeConfs(mol, maxIters=2000)
    # All atoms, not heavy atoms only: the conformations are not relaxed, so hydrogens differ too,
    # and small molecules have a single heavy-atom conformer.
    kept: list[int] = []
    for cid in ids:
        if all(_rmsd(mol, cid, k) >= rmsd_threshold for k in kept):
            kept.append(cid)
        if len(kept) == n_keep:
            break
    species = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    coords = [mol.GetConformer(cid).GetPositions() for cid in kept]
    charge = Chem.GetFormalCharge(mol)
    multiplicity = Descriptors.NumRadicalElectrons(mol) + 1
    return species, coords, charge, multiplicity


def _distorted(coords: list[np.ndarray], n: int, sigma: float, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` geometries: the distinct conformers in turn, each plus N(0, sigma^2) per coordinate."""
    return [coords[i % len(coords)] + rng.normal(0.0, sigma, coords[i % len(coords)].shape) for i in range(n)]


def nearest_rmsd(smiles: str, probe: np.ndarray, references: list[np.ndarray]) -> float:
    """All-atom RMSD (Angstrom, best superposition over symmetry-equivalent atom orders) from
    ``probe`` to the nearest of ``references``, geometries of the molecule ``smiles`` in AddHs
    atom order; inf without references."""
    from rdkit import Chem
    from rdkit.Chem import rdMolAlign

    if not references:
        return float("inf")
    mol = Chem.Mol(addhs_template(smiles))  # the graph gives GetBestRMS its symmetries
    ids = [set_positions(mol, xyz) for xyz in [probe, *references]]
    return min(rdMolAlign.GetBestRMS(mol, mol, prbId=ids[0], refId=ref) for ref in ids[1:])


def _test_molecules(mols: list, test_fraction: float, seed: int) -> set[int]:
    """Indices of the test molecules: a seeded random choice of about ``test_fraction`` of them,
    passing over a molecule whose element would then be missing from the training molecules (an
    NNP cannot be tested on an element it never saw). Both splits keep at least one molecule."""
    if test_fraction <= 0 or len(mols) < 2:
        return set()
    n_test = min(max(1, round(test_fraction * len(mols))), len(mols) - 1)
    elements = [{a.GetSymbol() for a in m.GetAtoms()} | {"H"} for m in mols]
    train_count = Counter(e for es in elements for e in es)
    order = list(range(len(mols)))
    random.Random(seed).shuffle(order)
    test: set[int] = set()
    for i in order:
        if len(test) == n_test:
            break
        if all(train_count[e] > 1 for e in elements[i]):
            test.add(i)
            train_count.subtract(elements[i])
    return test


def _conformer_split(
    smiles: str,
    coords: list[np.ndarray],
    per_molecule: int,
    test_per_molecule: int,
    noise: float,
    rmsd_threshold: float,
    rng: np.random.Generator,
) -> tuple[list[np.ndarray], list[tuple[np.ndarray, float]]]:
    """Training conformers and new test conformers of one molecule from its distinct ETKDG
    conformers (``coords``, pairwise at least ``rmsd_threshold`` apart).

    The last distinct conformers (up to ``test_per_molecule``, always leaving training its
    share) are test bases and never a training base, so no test conformer is a noisy copy of a
    training one (issue 19: one set of bases cycled for both made most "new" conformers near
    copies). A test conformer is kept only if it is at least ``rmsd_threshold`` (all atoms, best
    superposition) from every training conformer after the noise; it carries that distance. A
    rigid molecule (one distinct conformer) gives no test conformer.
    """
    # With noise every training conformer is a distorted copy of a base, so one base is enough for
    # training and the rest can be test bases; without noise each training conformer is a distinct
    # ETKDG conformer, so training keeps its per_molecule first and the test gets what is left.
    spare = len(coords) - 1 if noise > 0 else len(coords) - per_molecule
    n_test = max(0, min(test_per_molecule, spare))
    bases, test_bases = coords[: len(coords) - n_test], coords[len(coords) - n_test :]
    if noise > 0:
        train = _distorted(bases, per_molecule, noise, rng)
        test_geometries = _distorted(test_bases, n_test, noise, rng)
    else:
        train, test_geometries = bases[:per_molecule], test_bases
    test = []
    for xyz in test_geometries:
        distance = nearest_rmsd(smiles, xyz, train)
        if distance >= rmsd_threshold:
            test.append((xyz, distance))
    return train, test


def generate_conformers(
    specs: list[MoleculeSpec],
    *,
    elements: list[str],
    per_molecule: int,
    test_per_molecule: int,
    test_fraction: float,
    attempts: int = 30,
    seed: int = 42,
    mmff_relax: bool = False,
    rmsd_threshold: float = 0.3,
    split: str = "molecule",
    noise: float = 0.0,
    skipped: list[dict] | None = None,
) -> Dataset:
    """Conformers of every usable molecule, split into train and test (seeded).

    ``split="molecule"`` (the paper's): about ``test_fraction`` of the molecules are test
    molecules with ``test_per_molecule`` conformers each, the others train molecules with
    ``per_molecule``. ``split="conformer"``: every molecule has ``per_molecule`` train conformers
    and up to ``test_per_molecule`` test conformers made from distinct ETKDG conformers that no
    training conformer is made from, each kept only if it is at least ``rmsd_threshold`` (all
    atoms, best superposition, after any noise) from every training conformer of its molecule,
    a distance it carries as property ``train_rmsd``. A molecule that cannot give that many gets
    fewer or none (rigid molecules have one distinct conformer), and the dataset's
    ``test_shortfall`` attribute lists them. The test conformers form a second molecule entry (id
    ``n + id``, split "test", same SMILES and name), so the rest of the workflow sees the test
    set as test molecules either way.

    ``noise`` > 0 (Angstrom): every conformer is a distinct ETKDG conformer plus seeded Gaussian
    noise of that standard deviation on each coordinate; training conformers cycle through
    their distinct bases, so rigid molecules (one ETKDG conformer) get their share of distorted
    geometries too (normal-mode-like sampling of the neighbourhood, as ANI's data sets do).
    """
    if split not in ("molecule", "conformer"):
        raise ValueError(f"conformers.split must be 'molecule' or 'conformer', not {split!r}")
    from rdkit import Chem

    skipped = list(skipped or [])
    usable = []
    for spec in specs:
        bad = sorted({a.GetSymbol() for a in addhs_template(spec.smiles).GetAtoms()} - set(elements))
        if bad:
            reason = f"element(s) {', '.join(bad)} not supported (elements: {', '.join(elements)})"
            skipped.append({"name": spec.name, "smiles": spec.smiles, "reason": reason})
            continue
        usable.append(spec)

    by_conformer = split == "conformer"
    test_ids = (
        set() if by_conformer else _test_molecules([Chem.MolFromSmiles(s.smiles) for s in usable], test_fraction, seed)
    )

    dataset = Dataset()
    test_part = Dataset()
    short: list[dict] = []  # split by conformer: molecules with fewer new test conformers than asked
    for mid, spec in enumerate(usable):
        role = "test" if mid in test_ids else "train"
        n_keep = test_per_molecule if role == "test" else per_molecule
        try:
            n_embed = n_keep + (test_per_molecule if by_conformer else 0)
            species, coords, charge, multiplicity = embed(
                spec.smiles, n_embed, attempts, seed, mmff_relax, rmsd_threshold
            )
        except (ValueError, RuntimeError) as err:
            skipped.append({"name": spec.name, "smiles": spec.smiles, "reason": str(err)})
            continue
        rng = np.random.default_rng([_rdkit_seed(seed), mid])
        if by_conformer:
            train, test = _conformer_split(
                spec.smiles, coords, per_molecule, test_per_molecule, noise, rmsd_threshold, rng
            )
            if len(test) < test_per_molecule:
                short.append({"name": spec.name, "smiles": spec.smiles, "test_conformers": len(test)})
        else:
            train = _distorted(coords, n_embed, noise, rng) if noise > 0 else coords
            test = []
        dataset.molecules[mid] = Molecule(mid, spec.smiles, spec.name, charge, multiplicity, role)
        for cid, xyz in enumerate(train[:n_keep]):
            dataset.conformers.append(Conformer(mid, cid, species, xyz))
        if test:
            tid = len(usable) + mid
            test_part.molecules[tid] = Molecule(tid, spec.smiles, spec.name, charge, multiplicity, "test")
            for cid, (xyz, distance) in enumerate(test):
                test_part.conformers.append(Conformer(tid, cid, species, xyz, props={"train_rmsd": distance}))
    dataset.molecules.update(test_part.molecules)
    dataset.conformers.extend(test_part.conformers)
    if by_conformer:
        dataset.attrs["test_shortfall"] = short
        log.info(
            "split by conformer: %d test conformations of %d molecules; %d molecules gave fewer than %d "
            "(too few distinct conformers at least %.2f A from their training ones)",
            len(test_part.conformers),
            len(test_part.molecules),
            len(short),
            test_per_molecule,
            rmsd_threshold,
        )

    for item in skipped:
        log.warning("skipped %s (%s): %s", item["name"], item["smiles"], item["reason"])
    if not dataset.molecules:
        raise MoleculeListError("no usable molecule: " + "; ".join(f"{s['name']}: {s['reason']}" for s in skipped))
    dataset.attrs["skipped"] = skipped
    return dataset
