"""golf.chem.conformers: molecule lists, skips with reasons, reproducible ETKDG, atom order, RMSD de-dup, split."""

from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import rdMolAlign

from golf.chem.conformers import MoleculeListError, MoleculeSpec, embed, generate_conformers, read_molecule_list

HCNO = ["H", "C", "N", "O"]


def _write(tmp_path, text, name="mols.smi"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _spec(smiles, name=None):
    return MoleculeSpec(Chem.MolToSmiles(Chem.MolFromSmiles(smiles)), name or smiles, 1)


def test_read_list_canonicalises_and_skips_bad_lines(tmp_path):
    path = _write(
        tmp_path,
        "# header comment\n"
        "CCO ethanol\n"
        "\n"
        "C1CC(  bad_ring   # a broken SMILES\n"
        "OCC ethanol_again\n"
        "CC#N acetonitrile  # '#' inside a SMILES is a triple bond, not a comment\n"
        "c1ccccc1\n",
    )
    specs, skipped = read_molecule_list(path)
    assert [(s.smiles, s.name, s.line) for s in specs] == [
        ("CCO", "ethanol", 2),
        ("CC#N", "acetonitrile", 6),
        ("c1ccccc1", "mol7", 7),
    ]
    assert [s["name"] for s in skipped] == ["bad_ring", "ethanol_again"]
    assert "line 4: invalid SMILES" in skipped[0]["reason"]
    assert skipped[1]["reason"] == "line 5: duplicate of ethanol"


def test_missing_and_comment_only_lists(tmp_path):
    with pytest.raises(MoleculeListError, match="no such molecule list"):
        read_molecule_list(tmp_path / "nothing.smi")
    path = _write(tmp_path, "# only comments\n\n   # and blanks\n")
    with pytest.raises(MoleculeListError, match="no molecules"):
        read_molecule_list(path)


def test_no_usable_molecule_is_an_error_with_reasons(tmp_path):
    specs, skipped = read_molecule_list(_write(tmp_path, "xyz bad\nBrCCBr dibromoethane\n"))
    with pytest.raises(MoleculeListError) as info:
        generate_conformers(
            specs, elements=HCNO, per_molecule=1, test_per_molecule=1, test_fraction=0.0, skipped=skipped
        )
    message = str(info.value)
    assert "bad: line 1: invalid SMILES" in message and "dibromoethane" in message and "Br" in message


def test_unsupported_element_and_unembeddable_molecule_are_skipped_with_reasons():
    specs = [_spec("CCO", "ethanol"), _spec("C[Si](C)(C)C", "tms"), _spec("C1#CC1", "cyclopropyne")]
    ds = generate_conformers(specs, elements=HCNO, per_molecule=2, test_per_molecule=1, test_fraction=0.0, seed=1)
    assert [m.name for m in ds.molecules.values()] == ["ethanol"]
    reasons = {s["name"]: s["reason"] for s in ds.attrs["skipped"]}
    assert set(reasons) == {"tms", "cyclopropyne"}
    assert "Si" in reasons["tms"] and "not supported" in reasons["tms"]
    assert "could not embed" in reasons["cyclopropyne"]


def test_embed_is_reproducible_and_in_addhs_atom_order():
    z1, xyz1, charge, mult = embed("OCC(N)=O", n_keep=3, attempts=10, seed=7, mmff_relax=False, rmsd_threshold=0.1)
    z2, xyz2, _, _ = embed("OCC(N)=O", n_keep=3, attempts=10, seed=7, mmff_relax=False, rmsd_threshold=0.1)
    ref = Chem.AddHs(Chem.MolFromSmiles("OCC(N)=O"))
    np.testing.assert_array_equal(z1, [a.GetAtomicNum() for a in ref.GetAtoms()])
    assert (charge, mult) == (0, 1)
    assert len(xyz1) == len(xyz2) >= 2
    for a, b in zip(xyz1, xyz2, strict=True):
        np.testing.assert_array_equal(a, b)
    # Another seed gives other geometries.
    _, xyz3, _, _ = embed("OCC(N)=O", n_keep=3, attempts=10, seed=8, mmff_relax=False, rmsd_threshold=0.1)
    assert not np.allclose(xyz1[0], xyz3[0])
    # Bonded neighbours in the coordinates are the bonds of the AddHs molecule: same atom order.
    for bond in ref.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        assert 0.9 < np.linalg.norm(xyz1[0][i] - xyz1[0][j]) < 1.6


def test_charge_and_multiplicity():
    _, _, charge, mult = embed("C[NH3+]", 1, 2, 0, False, 0.3)
    assert (charge, mult) == (1, 1)


def _best_rms(smiles, a, b):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    mol.RemoveAllConformers()
    for xyz in (a, b):
        conf = Chem.Conformer(mol.GetNumAtoms())
        for i, p in enumerate(xyz):
            conf.SetAtomPosition(i, p.tolist())
        mol.AddConformer(conf, assignId=True)
    return rdMolAlign.GetBestRMS(mol, mol, prbId=1, refId=0)


@pytest.mark.parametrize("threshold", [0.5, 1.0])
def test_rmsd_deduplication_keeps_pairwise_rmsd_above_threshold(threshold):
    smiles = "CCCCO"
    _, kept, _, _ = embed(smiles, n_keep=6, attempts=20, seed=3, mmff_relax=True, rmsd_threshold=threshold)
    assert 2 <= len(kept) <= 6
    for i in range(len(kept)):
        for j in range(i):
            assert _best_rms(smiles, kept[i], kept[j]) >= threshold - 1e-6


def test_mmff_relax_lowers_mmff_energy():
    from golf.chem.mmff import MMFF

    ff = MMFF("CCCO")
    _, raw, _, _ = embed("CCCO", 3, 6, 5, False, 0.0)
    _, relaxed, _, _ = embed("CCCO", 3, 6, 5, True, 0.0)
    assert max(ff.energy(x) for x in relaxed) < min(ff.energy(x) for x in raw)


def test_split_by_molecule_respects_test_fraction():
    smiles = ["C", "CC", "CCC", "CO", "CCO", "CN", "CCN", "O=CO"]
    specs = [_spec(s, f"m{i}") for i, s in enumerate(smiles)]
    ds = generate_conformers(
        specs, elements=HCNO, per_molecule=2, test_per_molecule=1, test_fraction=0.25, attempts=4, seed=11
    )
    splits = {m.molecule_id: m.split for m in ds.molecules.values()}
    assert sum(s == "test" for s in splits.values()) == 2  # 0.25 x 8
    assert {c.molecule_id for c in ds.split("train")}.isdisjoint({c.molecule_id for c in ds.split("test")})
    for c in ds:  # test molecules get test_per_molecule conformers
        assert c.conformer_id < (1 if splits[c.molecule_id] == "test" else 2)
    assert max(c.conformer_id for c in ds.split("train")) == 1
    # Seeded: the same split again; the SMILES of each molecule match its conformers' species.
    again = generate_conformers(
        specs, elements=HCNO, per_molecule=2, test_per_molecule=1, test_fraction=0.25, attempts=4, seed=11
    )
    assert {m.smiles: m.split for m in again.molecules.values()} == {m.smiles: m.split for m in ds.molecules.values()}
    for c in ds:
        ref = Chem.AddHs(Chem.MolFromSmiles(ds.smiles(c)))
        np.testing.assert_array_equal(c.species, [a.GetAtomicNum() for a in ref.GetAtoms()])


def test_split_by_conformer_tests_new_conformers_of_every_molecule():
    smiles = ["CCO", "CCCO", "CC(N)=O", "OCCO"]
    specs = [_spec(s, f"m{i}") for i, s in enumerate(smiles)]
    kw = dict(elements=HCNO, per_molecule=3, test_per_molecule=2, test_fraction=0.5, attempts=20, seed=3)
    ds = generate_conformers(specs, split="conformer", **kw)
    train, test = ds.split("train"), ds.split("test")
    assert len(train) == 12 and len(test) == 8  # test_fraction plays no part
    n = len(specs)
    for mid in range(n):  # the test entry of molecule i is molecule n + i, same SMILES and name
        assert ds.molecules[n + mid].split == "test" and ds.molecules[mid].split == "train"
        assert (ds.molecules[n + mid].smiles, ds.molecules[n + mid].name) == (smiles[mid], f"m{mid}")
    for t in test:  # none of them repeats a training conformer: aligned all-atom RMSD >= 0.3 A
        nearest = min(
            _best_rms(smiles[t.molecule_id - n], t.coordinates, c.coordinates)
            for c in train
            if c.molecule_id == t.molecule_id - n
        )
        assert nearest >= 0.3
        assert t.props["train_rmsd"] == pytest.approx(nearest, abs=1e-6)
    # the training conformers are exactly those of a split by molecule without test molecules
    same = generate_conformers(specs, **(kw | {"test_fraction": 0.0}))
    for a, b in zip(train, same.split("train"), strict=True):
        np.testing.assert_array_equal(a.coordinates, b.coordinates)
    with pytest.raises(ValueError, match="conformers.split"):
        generate_conformers(specs, split="scaffold", **kw)


def test_noise_gives_rigid_molecules_their_share_of_distorted_conformers():
    specs = [_spec("C=O", "formaldehyde"), _spec("CCO", "ethanol")]
    kw = dict(elements=HCNO, per_molecule=4, test_per_molecule=2, test_fraction=0.0, attempts=10, seed=3)
    plain = generate_conformers(specs, split="conformer", **kw)
    noisy = generate_conformers(specs, split="conformer", noise=0.05, **kw)
    assert sum(c.molecule_id == 0 for c in plain) < 4  # ETKDG finds fewer distinct formaldehydes
    # formaldehyde: 4 distorted copies of its one conformer, and no test conformer (a noisy copy
    # of a training conformer is not new); ethanol's test conformers come from other conformers
    assert [sum(c.molecule_id == m for c in noisy) for m in (0, 1, 2)] == [4, 4, 0]
    assert 1 <= sum(c.molecule_id == 3 for c in noisy) <= 2
    assert [s["name"] for s in noisy.attrs["test_shortfall"]] == ["formaldehyde"] + (
        ["ethanol"] if sum(c.molecule_id == 3 for c in noisy) < 2 else []
    )
    for t in noisy.split("test"):  # new after the noise, too
        nearest = min(
            _best_rms("CCO", t.coordinates, c.coordinates) for c in noisy.split("train") if c.molecule_id == 1
        )
        assert nearest >= 0.3 and t.props["train_rmsd"] == pytest.approx(nearest, abs=1e-6)
    again = generate_conformers(specs, split="conformer", noise=0.05, **kw)
    for a, b in zip(noisy, again, strict=True):  # seeded
        np.testing.assert_array_equal(a.coordinates, b.coordinates)
    # each is an ETKDG conformer plus noise of about the asked size
    base = next(c for c in plain if c.molecule_id == 1 and c.conformer_id == 0).coordinates
    first = next(c for c in noisy if c.molecule_id == 1 and c.conformer_id == 0).coordinates
    assert 0.03 < np.std(first - base) < 0.07


def _with_coordinates(smiles, xyz):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    conf = Chem.Conformer(mol.GetNumAtoms())
    for i, p in enumerate(xyz):
        conf.SetAtomPosition(i, p.tolist())
    mol.AddConformer(conf)
    return mol


def test_split_never_leaves_the_training_set_empty():
    specs = [_spec("C", "methane"), _spec("CC", "ethane")]
    ds = generate_conformers(specs, elements=HCNO, per_molecule=1, test_per_molecule=1, test_fraction=0.9, attempts=2)
    assert sorted(m.split for m in ds.molecules.values()) == ["test", "train"]
    single = generate_conformers(specs[:1], elements=HCNO, per_molecule=1, test_per_molecule=1, test_fraction=0.5)
    assert [m.split for m in single.molecules.values()] == ["train"]
    none = generate_conformers(specs, elements=HCNO, per_molecule=1, test_per_molecule=1, test_fraction=0.0)
    assert all(m.split == "train" for m in none.molecules.values())


def test_a_molecule_with_an_element_no_other_has_stays_in_training():
    """Testing an NNP on an element it never saw is meaningless: such molecules are never test."""
    specs = [_spec("CO", "methanol"), _spec("CCO", "ethanol"), _spec("CN", "methylamine"), _spec("CCC", "propane")]
    for seed in range(8):
        ds = generate_conformers(specs, elements=HCNO, per_molecule=1, test_per_molecule=1, test_fraction=0.5,
                                 attempts=2, seed=seed)  # fmt: skip
        split = {m.name: m.split for m in ds.molecules.values()}
        assert split["methylamine"] == "train"  # the only molecule with N
        assert list(split.values()).count("test") == 2


@pytest.mark.parametrize("seed", [0, -1, -7])
def test_every_integer_seed_gives_distinct_reproducible_conformers(seed):
    """RDKit makes all conformers identical for seed 0, random for -1, and fails below -1."""
    _, a, _, _ = embed("CCCCO", n_keep=4, attempts=10, seed=seed, mmff_relax=False, rmsd_threshold=0.3)
    _, b, _, _ = embed("CCCCO", n_keep=4, attempts=10, seed=seed, mmff_relax=False, rmsd_threshold=0.3)
    assert len(a) >= 2
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_the_written_test_set_holds_only_new_conformers(tmp_path):
    """Issue 19: every test conformation of the file is at least rmsd_threshold (all atoms, best
    superposition, after the noise) from every training conformation of its molecule, and says so."""
    from golf import data

    smiles = ["CCCO", "OCCO", "C=O", "CC(N)=O"]
    specs = [_spec(s, f"m{i}") for i, s in enumerate(smiles)]
    ds = generate_conformers(
        specs, elements=HCNO, per_molecule=6, test_per_molecule=3, test_fraction=0.0, attempts=30, seed=5,
        split="conformer", noise=0.05, rmsd_threshold=0.3,
    )  # fmt: skip
    data.write(tmp_path / "conformers.h5", ds)
    written = data.read(tmp_path / "conformers.h5")
    train, test = written.split("train"), written.split("test")
    assert len(test) >= 3 and len(train) == 24
    for t in test:
        own = [c for c in train if written.smiles(c) == written.smiles(t)]
        nearest = min(_best_rms(written.smiles(t), t.coordinates, c.coordinates) for c in own)
        assert nearest >= 0.3
        assert t.props["train_rmsd"] == pytest.approx(nearest, abs=1e-6)
    assert "m2" in {s["name"] for s in written.attrs["test_shortfall"]}  # formaldehyde is rigid


def test_molecule_filter_counts_what_it_leaves_out(tmp_path):
    from golf.chem.conformers import MoleculeFilter, filter_molecules

    path = tmp_path / "mix.smi"
    lines = ["CCO ethanol", "CCCCCCCCCCO decanol", "CC(=O)[O-].[Na+] salt", "C[NH3+] ion", "CCBr bromo"]
    lines += ["CCN amine", "CO m"]
    path.write_text("\n".join(lines) + "\n")
    specs, _ = read_molecule_list(path)
    rules = MoleculeFilter(max_heavy_atoms=9, neutral=True, single_fragment=True, max_molecules=2)
    kept, out = filter_molecules(specs, HCNO, rules)
    # bromoethane passes on (generate_conformers skips it with its reason) but does not count
    assert [s.name for s in kept] == ["ethanol", "bromo", "amine"]
    assert out == {"heavy_atoms": 1, "charged": 2, "beyond_max_molecules": 1}  # the salt is charged first
    assert filter_molecules(specs[2:3], HCNO, MoleculeFilter(single_fragment=True))[1] == {"fragments": 1}
    assert filter_molecules(specs, HCNO, MoleculeFilter()) == (specs, {})


def test_molecule_list_from_rdkits_data():
    from golf.chem.conformers import molecule_list_path

    nci = molecule_list_path("rdkit:NCI/first_5K.smi")
    assert nci.endswith("NCI/first_5K.smi") and Path(nci).is_file()
    assert molecule_list_path("config/molecules/default.smi") == "config/molecules/default.smi"
    specs, _ = read_molecule_list(nci)
    assert len(specs) > 4800
