"""golf.data.formats: foreign files in (ASE db, extxyz, SDF, XYZ) and out (SDF, XYZ, TorchANI export).

Every test builds its own small file with the library that defines the format (ase.db, ase.io,
RDKit), with atoms in a shuffled order where the reader must restore the AddHs order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem, rdDetermineBonds

from golf import data as golf_data
from golf.data.formats import (
    FormatError,
    export_ani,
    import_file,
    read_ase_db,
    read_atomrefs,
    read_extxyz,
    read_sdf,
    read_xyz,
    write_sdf,
    write_xyz,
)
from golf.units import HARTREE_TO_EV, HARTREE_TO_KCALPERMOL

# Rough DFT total energies (Hartree), only their magnitude matters for the unit checks.
E_ETHANOL = -154.95
E_ACETIC = -228.95


def embed(smiles: str, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """(species, coordinates) of an ETKDG conformer in AddHs(MolFromSmiles(smiles)) order."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=seed) == 0
    species = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    return species, mol.GetConformer().GetPositions()


def shuffled(species, coordinates, seed: int = 0):
    perm = np.random.default_rng(seed).permutation(len(species))
    assert (perm != np.arange(len(species))).any()
    return species[perm], coordinates[perm]


def assert_addhs_order(smiles: str, species, coordinates) -> None:
    """Species follow AddHs(MolFromSmiles(smiles)) and the geometry's bonds are the SMILES bonds."""
    template = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert list(species) == [a.GetAtomicNum() for a in template.GetAtoms()]
    mol = Chem.RWMol()
    for z in species:
        mol.AddAtom(Chem.Atom(int(z)))
    conf = Chem.Conformer(len(species))
    for i, xyz in enumerate(coordinates):
        conf.SetAtomPosition(i, xyz.tolist())
    mol.AddConformer(conf)
    mol = mol.GetMol()
    rdDetermineBonds.DetermineConnectivity(mol)
    bonds = {tuple(sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx()))) for b in mol.GetBonds()}
    expected = {tuple(sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx()))) for b in template.GetBonds()}
    assert bonds == expected


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and message
    return message


# --------------------------------------------------------------------------------------------
# ASE database (the GOLF authors' layout, golf-paper.md §5)
# --------------------------------------------------------------------------------------------


def write_golf_db(path, rows, atomrefs=None):
    """rows: (species, coordinates, key_value_pairs, data) tuples, written with ase.db."""
    import ase.db
    from ase import Atoms

    with ase.db.connect(str(path)) as db:
        for species, coordinates, kvp, data in rows:
            db.write(Atoms(numbers=species, positions=coordinates), key_value_pairs=kvp, data=data)
    if atomrefs is not None:
        db = ase.db.connect(str(path))
        db.metadata = {"atomrefs": {"energy": atomrefs}}


ATOMREFS = {1: -0.5, 6: -37.8, 8: -75.0}


def atomref_sum(species) -> float:
    return sum(ATOMREFS[int(z)] for z in species)


def test_read_ase_db_golf_layout(tmp_path):
    """The authors' layout: data.energy has the atomrefs subtracted; the import stores total energies."""
    eth_z, eth_xyz = embed("CCO", seed=1)
    eth2_z, eth2_xyz = embed("CCO", seed=2)
    acid_z, acid_xyz = embed("CC(=O)O", seed=3)
    s_z, s_xyz = shuffled(eth_z, eth_xyz)
    e_eth, e_acid = E_ETHANOL - atomref_sum(eth_z), E_ACETIC - atomref_sum(acid_z)  # about -1.4 Hartree
    e_opt = -155.0 - atomref_sum(eth_z)
    # Forces tied to positions (0.01 * r) reveal whether they were permuted with the atoms.
    rows = [
        (s_z, s_xyz, {"smiles": "OCC"}, {"energy": [e_eth], "forces": 0.01 * s_xyz, "optimal_energy": [e_opt]}),
        (acid_z, acid_xyz, {"smiles": "CC(O)=O"}, {"energy": np.array(e_acid), "forces": 0.01 * acid_xyz}),
        (eth2_z, eth2_xyz, {"smiles": "CCO"}, {}),  # geometry only
    ]
    atomrefs = [0.0] * 10
    for z, e in ATOMREFS.items():
        atomrefs[z] = e
    path = tmp_path / "D-0.db"
    write_golf_db(path, rows, atomrefs)

    ds = read_ase_db(path, split="test")

    assert len(ds) == 3
    assert [m.smiles for m in ds.molecules.values()] == ["CCO", "CC(=O)O"]
    assert all(m.split == "test" for m in ds.molecules.values())
    assert [(c.molecule_id, c.conformer_id) for c in ds] == [(0, 0), (1, 0), (0, 1)]
    assert [c.status for c in ds] == ["ok", "ok", "unlabelled"]
    for c in ds:
        assert_addhs_order(ds.smiles(c), c.species, c.coordinates)
    first = ds.conformers[0]
    assert first.energy == pytest.approx(E_ETHANOL, abs=1e-12)
    np.testing.assert_allclose(first.forces, 0.01 * first.coordinates, rtol=0, atol=1e-12)
    assert first.props["e_opt"] == pytest.approx(-155.0, abs=1e-12)
    # the file's atom index of each atom, so writers can give the record back in its own order
    np.testing.assert_array_equal(s_xyz[first.props["source_order"]], first.coordinates)
    assert [c.props["source_record"] for c in ds] == [0, 1, 2]
    assert ds.conformers[1].energy == pytest.approx(E_ACETIC, abs=1e-12)
    np.testing.assert_allclose(ds.conformers[1].coordinates, acid_xyz, atol=1e-12)  # already in order: kept
    assert "source_order" not in ds.conformers[1].props
    assert np.isnan(ds.conformers[2].energy) and ds.conformers[2].forces is None
    assert ds.attrs["atomrefs"]["energy"][6] == -37.8
    assert ds.attrs["energy_convention"] == "total"
    assert ds.attrs["source"]["format"] == "ase_db" and ds.attrs["source"]["atomrefs_added"] is True

    # The result honours the HDF5 data contract.
    golf_data.write(tmp_path / "d.h5", ds)
    back = golf_data.read(tmp_path / "d.h5")
    assert back.conformers[0].props["e_opt"] == first.props["e_opt"]
    assert np.isnan(back.conformers[1].props["e_opt"])
    assert back.attrs["atomrefs"] == ds.attrs["atomrefs"]
    assert back.attrs["energy_convention"] == "total"


def test_ase_db_total_energies_with_atomrefs(tmp_path):
    """A database of total energies that also lists atomrefs: adding them twice is caught, and the flag reads it."""
    z, xyz = embed("CCO")
    path = tmp_path / "total.db"
    atomrefs = [0.0] * 10
    for zz, e in ATOMREFS.items():
        atomrefs[zz] = e
    write_golf_db(path, [(z, xyz, {"smiles": "CCO"}, {"energy": [E_ETHANOL], "forces": 0.01 * xyz})], atomrefs)
    with pytest.raises(FormatError) as err:
        read_ase_db(path)
    assert "atomrefs_subtracted=False" in one_line(err)
    (c,) = read_ase_db(path, atomrefs_subtracted=False).conformers
    assert c.energy == E_ETHANOL


def test_ase_db_subtracted_energies_without_atomrefs_rejected(tmp_path):
    """Energies the size of atomref-subtracted values, with no atomrefs to add, are not total energies."""
    z, xyz = embed("CCO")
    path = tmp_path / "sub.db"
    write_golf_db(path, [(z, xyz, {"smiles": "CCO"}, {"energy": [-1.35], "forces": 0.01 * xyz})])
    with pytest.raises(FormatError) as err:
        read_ase_db(path)
    message = one_line(err)
    assert "not a total energy in Hartree" in message and "atomrefs" in message and "energy_unit" in message


NABLADFT = Path("/work/shared/reference/nabladft/nabladft-60.db")


@pytest.mark.skipif(not NABLADFT.is_file(), reason="the shared nablaDFT reference is not on this machine")
def test_import_nabladft_keeps_units_order_and_atomrefs():
    """Real nablaDFT data (the authors' format): total energies = data.energy + sum of atomrefs[Z]."""
    import ase.db

    ds = import_file(NABLADFT)
    db = ase.db.connect(str(NABLADFT))
    refs = np.asarray(db.metadata["atomrefs"]["energy"])
    rows = list(db.select())
    assert len(ds) == len(rows) == 60 and ds.attrs["energy_convention"] == "total"
    assert ds.attrs["atomrefs"]["energy"] == refs.tolist()
    assert ds.attrs["source"]["energy_unit"] == "Hartree"  # declared by the database itself
    for c, row in zip(ds, rows, strict=True):
        smiles = ds.smiles(c)
        assert Chem.MolToSmiles(Chem.MolFromSmiles(row.smiles)) == smiles
        template = Chem.AddHs(Chem.MolFromSmiles(smiles))
        np.testing.assert_array_equal(c.species, [a.GetAtomicNum() for a in template.GetAtoms()])
        np.testing.assert_array_equal(c.species, row.numbers)  # the file is in AddHs order already: kept
        np.testing.assert_array_equal(c.coordinates, row.positions)
        assert abs(c.energy - (row.data["energy"][0] + refs[row.numbers].sum())) < 1e-9
        assert c.energy < -800  # a total energy of a drug-like molecule, not ~ -6 Ha
        np.testing.assert_array_equal(c.forces, row.data["forces"])  # Hartree/Angstrom, unchanged
        assert c.status == "ok"


@pytest.mark.skipif(not NABLADFT.is_file(), reason="the shared nablaDFT reference is not on this machine")
def test_read_atomrefs_of_nabladft():
    refs = read_atomrefs(NABLADFT)
    assert list(refs) == ["H", "C", "N", "O", "F", "S", "Cl"]
    assert refs["H"] == pytest.approx(-0.50249, abs=1e-5) and refs["Cl"] == pytest.approx(-459.98865, abs=1e-5)


def test_read_atomrefs_errors(tmp_path):
    z, xyz = embed("CCO")
    write_golf_db(path := tmp_path / "plain.db", [(z, xyz, {"smiles": "CCO"}, {})])
    with pytest.raises(FormatError, match="no atomrefs"):
        read_atomrefs(path)
    with pytest.raises(FormatError, match="no such file"):
        read_atomrefs(tmp_path / "absent.db")


def test_ase_db_ev_energies_rejected_unless_declared(tmp_path):
    z, xyz = embed("CCO")
    e_ev = E_ETHANOL * HARTREE_TO_EV
    path = tmp_path / "ev.db"
    write_golf_db(path, [(z, xyz, {"smiles": "CCO"}, {"energy": [e_ev], "forces": 0.3 * np.ones_like(xyz)})])

    with pytest.raises(FormatError) as err:
        read_ase_db(path)
    message = one_line(err)
    # no guessing: the error asks for the unit
    assert "row id=1" in message and "not a total energy in Hartree" in message and "energy_unit" in message

    with pytest.raises(FormatError, match="unknown energy_unit 'rydberg'"):
        read_ase_db(path, energy_unit="rydberg")
    with pytest.raises(FormatError, match="split must be 'train' or 'test'"):
        read_ase_db(path, energy_unit="ev", split="validation")

    ds = read_ase_db(path, energy_unit="ev")
    assert ds.conformers[0].energy == pytest.approx(E_ETHANOL, rel=1e-14)
    np.testing.assert_allclose(ds.conformers[0].forces, 0.3 / HARTREE_TO_EV, rtol=1e-14)


def test_ase_db_ev_forces_rejected(tmp_path):
    """Hartree energies beside forces in eV/Angstrom (RMS ~0.8) are caught by the force check."""
    z, xyz = embed("CCO")
    rng = np.random.default_rng(0)
    path = tmp_path / "mixed.db"
    write_golf_db(path, [(z, xyz, {"smiles": "CCO"}, {"energy": E_ETHANOL, "forces": rng.normal(0, 0.8, xyz.shape)})])
    with pytest.raises(FormatError, match="forces have a median RMS .* pass the file's energy_unit"):
        read_ase_db(path)


def test_ase_db_unmatched_smiles(tmp_path):
    # Dimethyl ether has ethanol's formula but another graph: the SMILES cannot be matched.
    z, xyz = embed("COC")
    path = tmp_path / "wrong.db"
    write_golf_db(path, [(z, xyz, {"smiles": "CCO"}, {})])
    with pytest.raises(FormatError) as err:
        read_ase_db(path)
    assert "row id=1" in one_line(err) and "cannot match the atoms onto SMILES CCO" in str(err.value)

    write_golf_db(path2 := tmp_path / "formula.db", [(z, xyz, {"smiles": "CC"}, {})])
    with pytest.raises(FormatError, match=r"atoms C2H6O do not match SMILES CC"):
        read_ase_db(path2)

    write_golf_db(path3 := tmp_path / "bad.db", [(z, xyz, {"smiles": "C1CC"}, {})])
    with pytest.raises(FormatError, match="invalid SMILES 'C1CC'"):
        read_ase_db(path3)

    # on_error="skip" keeps the good rows and lists the bad one.
    good_z, good_xyz = embed("CCO")
    write_golf_db(
        path4 := tmp_path / "some.db", [(z, xyz, {"smiles": "CCO"}, {}), (good_z, good_xyz, {"smiles": "CCO"}, {})]
    )
    ds = read_ase_db(path4, on_error="skip")
    assert len(ds) == 1
    assert len(ds.attrs["skipped_records"]) == 1 and "row id=1" in ds.attrs["skipped_records"][0]


def test_missing_and_corrupt_files(tmp_path):
    for reader in (read_ase_db, read_extxyz, read_sdf, read_xyz, import_file):
        with pytest.raises(FormatError) as err:
            reader(tmp_path / "absent.db")
        assert "no such file" in one_line(err)
    assert not (tmp_path / "absent.db").exists()  # ase.db.connect would have created it

    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite\x00\x01" * 64)
    with pytest.raises(FormatError) as err:
        read_ase_db(junk)
    assert "not a readable ASE database" in one_line(err)

    sdf = tmp_path / "junk.sdf"
    sdf.write_text("garbage\nmore garbage\n$$$$\n")
    with pytest.raises(FormatError) as err:
        read_sdf(sdf)
    assert "record 1" in one_line(err)

    xyz = tmp_path / "junk.xyz"
    xyz.write_text("3\ncomment\nC 0 0 0\nH 1.0 0\n")
    with pytest.raises(FormatError) as err:
        read_xyz(xyz)
    assert "not a readable XYZ file" in one_line(err)

    extxyz = tmp_path / "junk.extxyz"
    extxyz.write_text("2\nProperties=species:S:1:pos:R:3 energy=oops\nH 0 0 0\n")
    with pytest.raises(FormatError) as err:
        read_extxyz(extxyz)
    one_line(err)

    with pytest.raises(FormatError, match="option 'energy_key' does not apply to format sdf"):
        import_file(sdf, energy_key="E")
    with pytest.raises(FormatError, match="cannot tell the format"):
        import_file(_touch(tmp_path / "x.txt"))


def _touch(path):
    path.write_text("x\n")
    return path


# --------------------------------------------------------------------------------------------
# Extended XYZ (ASE: eV, eV/Angstrom)
# --------------------------------------------------------------------------------------------


def test_read_extxyz_converts_ev(tmp_path):
    import ase.io
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    z, xyz = embed("CC(=O)O")
    s_z, s_xyz = shuffled(z, xyz, seed=3)
    frames = []
    e_ev = [-6230.5, -6230.25]
    for energy, (zz, pos, info) in zip(e_ev, [(s_z, s_xyz, {"smiles": "CC(O)=O"}), (z, xyz, {})], strict=True):
        atoms = Atoms(numbers=zz, positions=pos, info=info)
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=0.25 * pos)
        frames.append(atoms)
    path = tmp_path / "frames.extxyz"
    ase.io.write(path, frames, format="extxyz")

    ds = read_extxyz(path)

    assert len(ds) == 2 and list(ds.molecules) == [0]  # the second frame's SMILES was perceived: same molecule
    assert ds.molecules[0].smiles == "CC(=O)O"
    for c, energy in zip(ds, e_ev, strict=True):
        assert c.status == "ok"
        assert c.energy == pytest.approx(energy / HARTREE_TO_EV, rel=1e-15)
        # extxyz keeps 8 decimals of eV/Angstrom
        np.testing.assert_allclose(c.forces, 0.25 * c.coordinates / HARTREE_TO_EV, rtol=0, atol=1e-9)
        assert_addhs_order("CC(=O)O", c.species, c.coordinates)
    assert import_file(path).conformers[0].energy == ds.conformers[0].energy


def test_extxyz_custom_keys_and_unit(tmp_path):
    import ase.io
    from ase import Atoms

    z, xyz = embed("CCO")
    atoms = Atoms(numbers=z, positions=xyz, info={"REF_energy": E_ETHANOL * HARTREE_TO_KCALPERMOL})
    atoms.arrays["REF_forces"] = np.zeros_like(xyz)
    path = tmp_path / "custom.xyz"
    ase.io.write(path, [atoms], format="extxyz")

    ds = import_file(path, energy_key="REF_energy", forces_key="REF_forces", energy_unit="kcal/mol")
    assert ds.conformers[0].energy == pytest.approx(E_ETHANOL, rel=1e-12)
    assert ds.conformers[0].status == "ok"

    with pytest.raises(FormatError, match="not a total energy in Hartree: is energy_unit='hartree' right"):
        import_file(path, energy_key="REF_energy", forces_key="REF_forces", energy_unit="hartree")


# --------------------------------------------------------------------------------------------
# SDF and plain XYZ
# --------------------------------------------------------------------------------------------


def test_read_sdf_reorders_shuffled_atoms(tmp_path):
    smiles = "CC(=O)Nc1ccc(F)cc1"
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=5)
    perm = np.random.default_rng(1).permutation(mol.GetNumAtoms()).tolist()
    shuffled_mol = Chem.RenumberAtoms(mol, perm)
    shuffled_mol.SetProp("_Name", "4-fluoroacetanilide")
    shuffled_mol.SetProp("E_kcal", repr(-500.0 * HARTREE_TO_KCALPERMOL))
    path = tmp_path / "in.sdf"
    with Chem.SDWriter(str(path)) as writer:
        writer.write(shuffled_mol)

    ds = read_sdf(path, energy_prop="E_kcal", energy_unit="kcal/mol")

    (c,) = ds.conformers
    canonical = Chem.MolToSmiles(Chem.MolFromSmiles(smiles))
    assert ds.molecules[0].smiles == canonical and ds.molecules[0].name == "4-fluoroacetanilide"
    assert_addhs_order(canonical, c.species, c.coordinates)
    assert c.energy == pytest.approx(-500.0, rel=1e-14)
    assert c.status == "unlabelled" and c.forces is None  # SDF has no forces

    # Same geometry: reordering keeps the set of interatomic distances (SDF keeps 4 decimals).
    def distances(x):
        return np.sort(np.linalg.norm(x[:, None] - x[None], axis=-1).ravel())

    np.testing.assert_allclose(distances(c.coordinates), distances(mol.GetConformer().GetPositions()), atol=1e-3)

    with pytest.raises(FormatError, match="property 'E_missing' missing"):
        read_sdf(path, energy_prop="E_missing")


def test_read_xyz_perceives_smiles(tmp_path):
    frames = []
    for smiles, seed in (("CCO", 1), ("CCO", 2), ("CC(=O)O", 3), ("c1ccncc1", 4)):
        z, xyz = shuffled(*embed(smiles, seed), seed=seed)
        frames.append((z, xyz, f"{smiles} seed {seed}"))
    path = tmp_path / "plain.xyz"
    symbols = {1: "H", 6: "C", 7: "N", 8: "O"}
    with open(path, "w") as f:
        for z, xyz, comment in frames:
            f.write(f"{len(z)}\n{comment}\n")
            f.writelines(f"{symbols[int(a)]} {x:.8f} {y:.8f} {w:.8f}\n" for a, (x, y, w) in zip(z, xyz, strict=True))

    ds = import_file(path)  # no key=value in the comment: plain XYZ

    assert [m.smiles for m in ds.molecules.values()] == ["CCO", "CC(=O)O", "c1ccncc1"]
    assert [(c.molecule_id, c.conformer_id) for c in ds] == [(0, 0), (0, 1), (1, 0), (2, 0)]
    assert ds.molecules[0].name == "CCO seed 1"
    assert all(c.status == "unlabelled" for c in ds)
    for c in ds:
        assert_addhs_order(ds.smiles(c), c.species, c.coordinates)


def test_unknown_element(tmp_path):
    z, xyz = embed("CBr")
    path = tmp_path / "brome.xyz"
    path.write_text(
        f"{len(z)}\n\n"
        + "".join(
            f"{Chem.GetPeriodicTable().GetElementSymbol(int(a))} {x} {y} {w}\n"
            for a, (x, y, w) in zip(z, xyz, strict=True)
        )
    )
    with pytest.raises(FormatError) as err:
        read_xyz(path)
    message = one_line(err)
    assert "frame 0" in message and "element Br is not allowed" in message
    ds = read_xyz(path, allow_elements=["H", "C", "Br"])
    assert ds.molecules[0].smiles == "CBr"


# --------------------------------------------------------------------------------------------
# Writers and the TorchANI export
# --------------------------------------------------------------------------------------------


def small_dataset() -> golf_data.Dataset:
    molecules = {0: golf_data.Molecule(0, "CCO", name="ethanol"), 1: golf_data.Molecule(1, "CC(=O)O")}
    conformers = []
    for mid, smiles, seed, status in ((0, "CCO", 1, "ok"), (0, "CCO", 2, "converged"), (1, "CC(=O)O", 3, "ok")):
        z, xyz = embed(smiles, seed)
        labelled = status == "ok"
        conformers.append(
            golf_data.Conformer(
                molecule_id=mid,
                conformer_id=seed - 1 if mid == 0 else 0,
                species=z,
                coordinates=xyz,
                energy=E_ETHANOL - 0.001 * seed if mid == 0 else E_ACETIC,
                forces=0.01 * xyz if labelled else None,
                status=status,
                props={"step": seed * 10, "mmff_kcal": 1.5 * seed},
            )
        )
    return golf_data.Dataset(molecules, conformers, {"level_of_theory": "HF/STO-3G"})


def test_write_sdf_and_xyz_round_trip(tmp_path):
    import ase.io

    ds = small_dataset()
    write_sdf(tmp_path / "out.sdf", ds)
    write_xyz(tmp_path / "out.xyz", ds)
    text = (tmp_path / "out.sdf").read_text()
    assert text.count("$$$$") == 3 and "<golf_status>" in text and "<mmff_kcal>" in text

    for name in ("out.sdf", "out.xyz"):
        back = import_file(tmp_path / name)
        assert [m.smiles for m in back.molecules.values()] == ["CCO", "CC(=O)O"]
        assert back.molecules[0].name == "ethanol"
        assert len(back) == 3
        for a, b in zip(ds, back, strict=True):
            np.testing.assert_allclose(b.coordinates, a.coordinates, atol=1e-4)  # SDF keeps 4 decimals
            assert b.energy == pytest.approx(a.energy, abs=1e-12)
    frames = ase.io.read(tmp_path / "out.xyz", index=":", format="extxyz")  # ASE reads our comment lines
    assert [f.info["status"] for f in frames] == ["ok", "converged", "ok"]
    assert frames[1].info["golf_energy_hartree"] == pytest.approx(E_ETHANOL - 0.002, abs=1e-12)
    assert frames[0].info["name"] == "ethanol" and "name" not in frames[2].info

    # A conformation without an energy reads back without one.
    ds.conformers[1].energy = float("nan")
    write_sdf(tmp_path / "nan.sdf", ds)
    write_xyz(tmp_path / "nan.xyz", ds)
    for name in ("nan.sdf", "nan.xyz"):
        back = import_file(tmp_path / name)
        assert np.isnan(back.conformers[1].energy) and back.conformers[0].energy == ds.conformers[0].energy


def test_export_ani_loads_in_torchani(tmp_path):
    from torchani.datasets import ANIDataset

    ds = small_dataset()
    path = tmp_path / "ani.h5"
    assert export_ani(ds, path) == 2  # the "converged" conformation has no forces

    ani = ANIDataset(path)
    assert ani.num_conformers == 2
    assert sorted(ani.keys()) == ["C2H4O2", "C2H6O"]
    assert {"species", "coordinates", "energies", "forces"} <= set(ani.properties)
    group = ani.get("C2H6O")
    np.testing.assert_allclose(group["energies"].numpy(), [E_ETHANOL - 0.001])
    np.testing.assert_allclose(group["forces"].numpy()[0], 0.01 * ds.conformers[0].coordinates)

    with pytest.raises(FormatError, match="nothing to export"):
        export_ani(ds.subset([False, True, False]), tmp_path / "empty.h5")


def test_ase_db_calculator_results_are_ev(tmp_path):
    """A row written with an ASE calculator (no data.energy) follows ASE's eV convention."""
    import ase.db
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    z, xyz = embed("CCO")
    atoms = Atoms(numbers=z, positions=xyz)
    atoms.calc = SinglePointCalculator(atoms, energy=E_ETHANOL * HARTREE_TO_EV, forces=0.5 * np.ones_like(xyz))
    with ase.db.connect(str(tmp_path / "calc.db")) as db:
        db.write(atoms, smiles="CCO")
    (c,) = read_ase_db(tmp_path / "calc.db").conformers
    assert c.status == "ok"
    assert c.energy == pytest.approx(E_ETHANOL, rel=1e-12)
    np.testing.assert_allclose(c.forces, 0.5 / HARTREE_TO_EV, rtol=1e-12)


def test_write_sdf_keeps_the_atom_order_of_a_non_canonical_smiles(tmp_path):
    """A generated dataset stores the user's SMILES as typed ("OCC", atoms O C C H..); the SDF
    bonds come from that SMILES's own AddHs order, not the canonical one's (C C O H..)."""
    mol = Chem.AddHs(Chem.MolFromSmiles("OCC"))
    AllChem.EmbedMolecule(mol, randomSeed=7)
    species = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    assert species[:3].tolist() == [8, 6, 6]
    ds = golf_data.Dataset(
        {0: golf_data.Molecule(molecule_id=0, smiles="OCC", name="ethanol")},
        [golf_data.Conformer(0, 0, species, mol.GetConformer().GetPositions())],
    )
    write_sdf(tmp_path / "out.sdf", ds)
    back = import_file(tmp_path / "out.sdf")
    assert [m.smiles for m in back.molecules.values()] == ["CCO"]
    # the same atoms at the same places, whatever order the import puts them in
    got, want = back.conformers[0], ds.conformers[0]
    for z, xyz in zip(want.species, want.coordinates, strict=True):
        assert np.linalg.norm(got.coordinates[got.species == z] - xyz, axis=1).min() < 1e-3  # SDF: 4 decimals
