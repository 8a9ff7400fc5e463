"""The ``golf`` command: inspect, import, export, optimize; bad input ends with one line and exit 2."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from golf import data
from golf.cli.main import main
from golf.data.dataset import Conformer, Dataset, Molecule
from golf.nnp.model import build_model, save_model
from golf.units import HARTREE_TO_EV

SAE = {"H": -0.5, "C": -37.8, "N": -54.5, "O": -75.0}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)  # `golf optimize --threads 1` sets it for the whole process


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    model = build_model(["H", "C", "N", "O"], self_energies=SAE, layer_dims=(16,), seed=0)
    path = tmp_path_factory.mktemp("model") / "small.pt"
    save_model(path, model)
    return path


def _embedded(smiles, n=1, seed=5):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    assert len(AllChem.EmbedMultipleConfs(mol, numConfs=n, params=params)) == n
    return mol


def _write_sdf(path, items):
    writer = Chem.SDWriter(str(path))
    for smiles, name, n in items:
        mol = _embedded(smiles, n)
        mol.SetProp("_Name", name)
        for conf in mol.GetConformers():
            writer.write(mol, confId=conf.GetId())
    writer.close()
    return path


def _dataset() -> Dataset:
    rng = np.random.default_rng(1)
    ds = Dataset({0: Molecule(0, "O", "water"), 1: Molecule(1, "CO", "methanol", split="test")}, [], {"kind": "labels"})
    water = _embedded("O").GetConformer().GetPositions()
    methanol = _embedded("CO").GetConformer().GetPositions()
    ds.conformers += [
        Conformer(0, 0, [8, 1, 1], water, energy=-75.01, forces=rng.normal(0, 0.02, (3, 3)), status="ok"),
        Conformer(0, 1, [8, 1, 1], water + 0.01, status="scf_not_converged"),
        Conformer(1, 0, [6, 8, 1, 1, 1, 1], methanol, energy=-113.5, forces=rng.normal(0, 0.02, (6, 3)), status="ok"),
        Conformer(1, 1, [6, 8, 1, 1, 1, 1], methanol + 0.01),
    ]
    return ds


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"golf {argv[0]}: ")
    return err


def test_inspect_prints_molecules_conformations_and_status(tmp_path, capsys):
    path = tmp_path / "labels.h5"
    data.write(path, _dataset())
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "molecules: 2 (train 1, test 1)" in out
    assert "conformations: 4" in out
    assert "status: ok 2, scf_not_converged 1, unlabelled 1" in out
    assert "energies: -113.500000 .. -75.010000 Hartree" in out
    assert "kind: labels" in out
    assert "energy convention: total" in out
    assert "water" in out and "methanol" in out


def test_inspect_labelled_rows_without_forces(tmp_path, capsys):
    test = _dataset().split("test").labelled()
    for c in test.conformers:
        c.forces = None
    path = tmp_path / "test.h5"
    data.write(path, test)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "conformations: 1" in out and "status: ok 1" in out


def test_inspect_non_hdf5_file_exits_2_with_one_line_and_no_traceback(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("this is not HDF5\n")
    env = dict(os.environ, TORCHANI_NO_WARN_EXTENSIONS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "golf.cli", "inspect", str(path)], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not an HDF5 file" in lines[0] and str(path) in lines[0]


def test_inspect_missing_file(tmp_path, capsys):
    assert "no such file" in _one_line_error(capsys, ["inspect", str(tmp_path / "missing.h5")])


def _check_optimised(result: Dataset, n: int):
    assert len(result) == n
    for c in result:
        # an untrained model may break bonds: that is reported, never called converged
        assert c.status in ("converged", "step_limit", "broken", "fragmented")
        assert np.isfinite(c.energy) and np.isfinite(c.coordinates).all()
        assert 1 <= c.props["steps"] <= 5
        if c.status == "converged":
            assert c.props["fmax"] <= 1e-3
        if c.status == "step_limit":
            assert c.props["fmax"] > 1e-3 and c.props["steps"] == 5
    assert result.attrs["kind"] == "nnp_optimised" and result.attrs["model"]["elements"] == ["H", "C", "N", "O"]


def test_optimize_sdf(tmp_path, model_path, capsys):
    sdf = _write_sdf(tmp_path / "in.sdf", [("CCO", "ethanol", 2), ("CN", "methylamine", 1)])
    out = tmp_path / "out.h5"
    argv = ["optimize", str(sdf), "-o", str(out), "--model", str(model_path), "--steps", "5", "--threads", "1"]
    assert main(argv) == 0
    assert "out.h5: 3 conformations" in capsys.readouterr().out
    result = data.read(out)
    _check_optimised(result, 3)
    assert [m.smiles for m in result.molecules.values()] == ["CCO", "CN"]
    assert [m.name for m in result.molecules.values()] == ["ethanol", "methylamine"]

    # SDF output carries energies and statuses that read back
    from golf.data.formats import import_file

    out_sdf = tmp_path / "out.sdf"
    assert main([*argv[:2], "-o", str(out_sdf), *argv[4:]]) == 0
    back = import_file(out_sdf)
    np.testing.assert_allclose([c.energy for c in back], [c.energy for c in result], rtol=0, atol=1e-9)
    statuses = [m.GetProp("golf_status") for m in Chem.SDMolSupplier(str(out_sdf), removeHs=False)]
    assert statuses == [c.status for c in result]


def test_optimize_smiles_file(tmp_path, model_path, capsys):
    smi = tmp_path / "in.smi"
    smi.write_text("# two molecules and one the model cannot do\nCCO ethanol\nCC#N acetonitrile\nBrCC bromoethane\n")
    out = tmp_path / "out.h5"
    argv = ["optimize", str(smi), "-o", str(out), "--model", str(model_path), "--steps", "5", "--conformers", "2"]
    assert main([*argv, "--threads", "1"]) == 0
    capsys.readouterr()
    result = data.read(out)
    _check_optimised(result, 3)  # rigid acetonitrile has one distinct conformer
    assert sorted(m.smiles for m in result.molecules.values()) == ["CC#N", "CCO"]
    assert [c.species.size for c in result] == [9, 9, 6]


def test_optimize_unsupported_element_exits_2(tmp_path, model_path, capsys):
    sdf = _write_sdf(tmp_path / "br.sdf", [("CCBr", "bromoethane", 1)])
    argv = ["optimize", str(sdf), "-o", str(tmp_path / "o.h5"), "--model", str(model_path), "--threads", "1"]
    err = _one_line_error(capsys, argv)
    assert "Br" in err
    assert not (tmp_path / "o.h5").exists()


def test_optimize_element_outside_the_model_exits_2(tmp_path, model_path, capsys):
    sdf = _write_sdf(tmp_path / "f.sdf", [("CF", "fluoromethane", 1)])  # F: readable, but not in the model
    argv = ["optimize", str(sdf), "-o", str(tmp_path / "o.h5"), "--model", str(model_path), "--threads", "1"]
    assert "model covers elements" in _one_line_error(capsys, argv)


def test_optimize_missing_model_exits_2(tmp_path, capsys):
    sdf = _write_sdf(tmp_path / "in.sdf", [("CO", "methanol", 1)])
    argv = ["optimize", str(sdf), "-o", str(tmp_path / "o.h5"), "--model", str(tmp_path / "none.pt")]
    assert "no such file" in _one_line_error(capsys, argv)


def test_import_extxyz_written_by_ase(tmp_path, capsys):
    import ase.io
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(0)
    frames, expected = [], []
    for smiles, e_hartree in (("CCO", -154.0), ("CCO", -154.01), ("O", -75.0)):
        mol = _embedded(smiles, seed=len(expected) + 1)
        atoms = Atoms(numbers=[a.GetAtomicNum() for a in mol.GetAtoms()], positions=mol.GetConformer().GetPositions())
        forces_ev = rng.normal(0, 0.5, (len(atoms), 3))
        atoms.calc = SinglePointCalculator(atoms, energy=e_hartree * HARTREE_TO_EV, forces=forces_ev)
        atoms.info["smiles"] = smiles
        frames.append(atoms)
        expected.append((e_hartree, forces_ev / HARTREE_TO_EV, atoms.positions.copy()))
    src = tmp_path / "frames.extxyz"
    ase.io.write(src, frames, format="extxyz")
    out = tmp_path / "imported.h5"
    assert main(["import", str(src), "-o", str(out)]) == 0
    assert "3 conformations of 2 molecules" in capsys.readouterr().out
    ds = data.read(out)
    assert [c.status for c in ds] == ["ok"] * 3
    assert [ds.smiles(c) for c in ds] == ["CCO", "CCO", "O"]
    for c, (energy, forces, positions) in zip(ds, expected, strict=True):
        assert c.energy == pytest.approx(energy, rel=1e-10)
        np.testing.assert_allclose(c.forces, forces, rtol=1e-6, atol=1e-9)  # same atom order (AddHs)
        np.testing.assert_allclose(c.coordinates, positions, atol=1e-6)

    # --split test marks the molecules as test molecules
    assert main(["import", str(src), "-o", str(tmp_path / "test.h5"), "--split", "test"]) == 0
    assert {m.split for m in data.read(tmp_path / "test.h5").molecules.values()} == {"test"}


def test_import_our_own_hdf5(tmp_path, capsys):
    src = tmp_path / "labels.h5"
    data.write(src, _dataset())
    assert main(["import", str(src), "-o", str(tmp_path / "copy.h5")]) == 0
    capsys.readouterr()
    assert len(data.read(tmp_path / "copy.h5")) == 4


def test_import_unreadable_file_exits_2(tmp_path, capsys):
    src = tmp_path / "bad.sdf"
    src.write_text("not an sdf\n")
    _one_line_error(capsys, ["import", str(src), "-o", str(tmp_path / "x.h5")])
    assert not (tmp_path / "x.h5").exists()


def test_export_ani(tmp_path, capsys):
    from torchani.datasets import ANIDataset

    src = tmp_path / "labels.h5"
    data.write(src, _dataset())
    out = tmp_path / "ani.h5"
    assert main(["export", "--ani", str(src), "-o", str(out)]) == 0
    assert "2 labelled conformations" in capsys.readouterr().out
    ani = ANIDataset(out)
    assert ani.num_conformers == 2 and sorted(ani.keys()) == ["CH4O", "H2O"]
    np.testing.assert_allclose(ani.get("H2O")["energies"].numpy(), [-75.01])
    capsys.readouterr()  # TorchANI's progress bar
    assert "unknown output format" in _one_line_error(capsys, ["export", str(src), "-o", str(tmp_path / "x.csv")])


def test_optimize_keeps_each_records_atom_order_and_title(tmp_path, model_path):
    """SDF records in a shuffled atom order and with their own titles come back as they went in."""
    mol = _embedded("CCO", n=2)
    perm = [3, 0, 8, 2, 5, 1, 7, 4, 6]  # the file's atom order is not AddHs(MolFromSmiles) order
    src = tmp_path / "in.sdf"
    writer = Chem.SDWriter(str(src))
    for conf, title in zip(mol.GetConformers(), ["ethanol A", "ethanol B"], strict=True):
        one = Chem.Mol(mol, confId=conf.GetId())
        shuffled = Chem.RenumberAtoms(one, perm)
        shuffled.SetProp("_Name", title)
        writer.write(shuffled)
    writer.close()
    records_in = list(Chem.SDMolSupplier(str(src), removeHs=False))

    for suffix in (".sdf", ".xyz"):
        out = tmp_path / f"out{suffix}"
        argv = ["optimize", str(src), "-o", str(out), "--model", str(model_path), "--steps", "3", "--threads", "1"]
        assert main([*argv, "--max-displacement", "0.05"]) == 0  # 3 steps move no atom more than 0.15 A
        if suffix == ".sdf":
            records = list(Chem.SDMolSupplier(str(out), removeHs=False))
            assert [m.GetProp("_Name") for m in records] == ["ethanol A", "ethanol B"]
            for before, after in zip(records_in, records, strict=True):
                assert [a.GetAtomicNum() for a in after.GetAtoms()] == [a.GetAtomicNum() for a in before.GetAtoms()]
                bonds = {tuple(sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx()))) for b in after.GetBonds()}
                assert bonds == {tuple(sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx()))) for b in before.GetBonds()}
                moved = np.linalg.norm(
                    after.GetConformer().GetPositions() - before.GetConformer().GetPositions(), axis=1
                )
                assert moved.max() < 0.16  # atom i of the output is atom i of the input, a little moved
        else:
            import ase.io

            frames = ase.io.read(out, index=":", format="extxyz")
            assert [f.info["name"] for f in frames] == ["ethanol A", "ethanol B"]
            for before, after in zip(records_in, frames, strict=True):
                assert after.numbers.tolist() == [a.GetAtomicNum() for a in before.GetAtoms()]
                assert np.linalg.norm(after.positions - before.GetConformer().GetPositions(), axis=1).max() < 0.16


NABLADFT = "/work/shared/reference/nabladft"


@pytest.mark.skipif(not os.path.isdir(NABLADFT), reason="the shared nablaDFT reference is not on this machine")
def test_import_model_golf10k_gives_total_energies(tmp_path, capsys):
    """The authors' GOLF-10k checkpoint plus the atomrefs of its database: total energies in Hartree."""
    from golf.data.formats import import_file, read_atomrefs
    from golf.nnp.model import load_model

    db = f"{NABLADFT}/nabladft-60.db"
    out = tmp_path / "golf10k.pt"
    argv = ["import-model", f"{NABLADFT}/golf-checkpoints/GOLF-10k/NNP_checkpoint_actor", "--atomrefs", db]
    assert main([*argv, "-o", str(out)]) == 0
    assert "golf10k.pt: painn model for H C N O F S Cl" in capsys.readouterr().out
    model = load_model(out)
    assert model.self_energies == read_atomrefs(db)

    reference = np.load(f"{NABLADFT}/painn-reference.npz")
    dataset = import_file(db)
    for i in range(3):  # schnetpack's own float32 numbers (atomrefs subtracted) plus the atomrefs
        c = dataset.conformers[i]
        energy, forces = model.energies_forces(
            torch.as_tensor(c.species)[None], torch.as_tensor(c.coordinates, dtype=torch.float32)[None]
        )
        offset = sum(model.self_energies[Chem.GetPeriodicTable().GetElementSymbol(int(z))] for z in c.species)
        assert float(energy[0]) == pytest.approx(reference["GOLF-10k/energies_f32"][i] + offset, abs=1e-4)
        assert abs(float(energy[0]) - c.energy) < 0.02  # within tens of mHa of the DFT total energy
        start = int(reference["natoms"][:i].sum())
        expected = reference["GOLF-10k/forces_f32"][start : start + len(c.species)]
        np.testing.assert_allclose(forces[0].numpy(), expected, atol=1e-4)

    # ... and `golf optimize` runs with it on the shipped conformations
    result = tmp_path / "opt.h5"
    small = dataset.subset([0, 3])
    data.write(tmp_path / "two.h5", small)
    argv = ["optimize", str(tmp_path / "two.h5"), "-o", str(result), "--model", str(out), "--steps", "5"]
    assert main([*argv, "--threads", "1"]) == 0
    optimised = data.read(result)
    steps = reference["GOLF-10k/lbfgs_energies_f64"]  # energy at each of 20 torch.optim.LBFGS steps
    for row, before, after in zip([0, 3], small, optimised, strict=True):
        offset = sum(model.self_energies[Chem.GetPeriodicTable().GetElementSymbol(int(z))] for z in before.species)
        drop = after.energy - (steps[row, 0] + offset)
        # 5 steps go about as far down as schnetpack's own L-BFGS does in 1..20 (tens of mHa: not minima)
        assert steps[row, -1] - steps[row, 0] - 1e-3 < drop < steps[row, 1] - steps[row, 0]


def test_import_model_errors_exit_2(tmp_path, capsys):
    db = tmp_path / "plain.db"
    import ase.db
    from ase import Atoms

    with ase.db.connect(str(db)) as handle:
        handle.write(Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]]))
    ckpt = tmp_path / "none"
    assert "no atomrefs" in _one_line_error(capsys, ["import-model", str(ckpt), "--atomrefs", str(db), "-o", "m.pt"])
    if os.path.isdir(NABLADFT):
        argv = ["import-model", str(ckpt), "--atomrefs", f"{NABLADFT}/nabladft-60.db", "-o", str(tmp_path / "m.pt")]
        assert "no such file" in _one_line_error(capsys, argv)
        assert not (tmp_path / "m.pt").exists()


def test_optimize_exact_steps_and_the_checkpoints_cap(tmp_path, model_path):
    """--exact-steps runs every conformation T steps; the cap recorded in a checkpoint applies unless overridden."""
    from golf.nnp.model import load_model
    from golf.optim.lbfgs import optimizer_meta

    capped = load_model(model_path)
    capped.meta["optimizer"] = optimizer_meta(max_displacement=0.01)
    capped_path = tmp_path / "capped.pt"
    save_model(capped_path, capped)
    sdf = _write_sdf(tmp_path / "in.sdf", [("CCO", "ethanol", 2), ("CN", "methylamine", 1)])
    start = [c.coordinates for c in data.read(_import(sdf, tmp_path))]

    def run(*extra):
        out = tmp_path / "out.h5"
        argv = ["optimize", str(sdf), "-o", str(out), "--model", str(capped_path), "--steps", "4", "--threads", "1"]
        assert main([*argv, *extra]) == 0
        result = data.read(out)
        moved = max(np.linalg.norm(c.coordinates - x, axis=1).max() for c, x in zip(result, start, strict=True))
        return result, moved

    result, moved = run("--exact-steps")
    assert [c.props["steps"] for c in result] == [4, 4, 4]
    assert moved <= 4 * 0.01 + 1e-9  # the checkpoint's 0.01 Angstrom per step
    _, moved = run("--exact-steps", "--max-displacement", "none")
    assert moved > 4 * 0.01  # the untrained model moves atoms further without the cap


def _import(sdf, tmp_path):
    out = tmp_path / "start.h5"
    assert main(["import", str(sdf), "-o", str(out)]) == 0
    return out
