"""golf.optim.calculator: the ASE calculator gives the model's energies and forces in eV, and drives ASE."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.optimize import LBFGS

from golf.chem.conformers import embed
from golf.nnp.model import build_model, save_model
from golf.optim.calculator import NNPCalculator
from golf.units import HARTREE_TO_EV


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    return build_model(["H", "C", "N", "O"], self_energies={"H": -0.5, "C": -37.8, "N": -54.5, "O": -75.0},
                       layer_dims=(16,), seed=0)  # fmt: skip


def _atoms(smiles="CCO", seed=1):
    z, xyz, _, _ = embed(smiles, 1, 2, seed, False, 0.3)
    return Atoms(numbers=z, positions=xyz[0])


def test_energy_and_forces_are_the_models_in_ev(model):
    atoms = _atoms()
    atoms.calc = NNPCalculator(model)
    species = torch.as_tensor(atoms.numbers)[None]
    energies, forces = model.energies_forces(species, torch.as_tensor(atoms.positions, dtype=torch.float32)[None])
    assert atoms.get_potential_energy() == pytest.approx(float(energies[0]) * HARTREE_TO_EV, rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), forces[0].numpy() * HARTREE_TO_EV, rtol=1e-6, atol=1e-7)
    assert atoms.get_forces().dtype == np.float64 and atoms.get_forces().shape == (9, 3)
    # self energies dominate: about -2*37.8 - 6*0.5 - 75 Hartree, in eV
    assert atoms.get_potential_energy() == pytest.approx((-2 * 37.8 - 6 * 0.5 - 75.0) * HARTREE_TO_EV, rel=0.01)


def test_forces_are_minus_the_energy_gradient(model):
    atoms = _atoms("CN")
    atoms.calc = NNPCalculator(model)
    f = atoms.get_forces()
    h = 1e-3
    for atom, axis in [(0, 0), (1, 2), (3, 1)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.calc, minus.calc = NNPCalculator(model), NNPCalculator(model)
        plus.positions[atom, axis] += h
        minus.positions[atom, axis] -= h
        fd = -(plus.get_potential_energy() - minus.get_potential_energy()) / (2 * h)
        assert f[atom, axis] == pytest.approx(fd, rel=0.05, abs=2e-3)


def test_checkpoint_path_and_lbfgs_lowers_the_energy(model, tmp_path):
    save_model(tmp_path / "m.pt", model)
    atoms = _atoms("OCC=O", seed=2)
    atoms.calc = NNPCalculator(str(tmp_path / "m.pt"), device="cpu")
    e0 = atoms.get_potential_energy()
    f0 = np.linalg.norm(atoms.get_forces(), axis=1).max()
    LBFGS(atoms, logfile=None, maxstep=0.05).run(fmax=1e-3, steps=15)
    assert atoms.get_potential_energy() < e0 - 1e-4
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() < f0


def test_periodic_atoms_are_refused(model):
    atoms = _atoms()
    atoms.cell = [10, 10, 10]
    atoms.pbc = True
    atoms.calc = NNPCalculator(model)
    with pytest.raises(ValueError, match="periodic"):
        atoms.get_potential_energy()


def test_optimizer_settings_travel_in_the_checkpoint(model, tmp_path):
    """A cap recorded in meta["optimizer"] is what the calculator's optimiser uses unless told otherwise."""
    from golf.optim.lbfgs import optimizer_meta

    model.meta["optimizer"] = optimizer_meta(max_displacement=0.01)
    try:
        save_model(tmp_path / "capped.pt", model)
    finally:
        del model.meta["optimizer"]
    calc = NNPCalculator(str(tmp_path / "capped.pt"))
    assert calc.optimizer_settings["max_displacement"] == 0.01
    assert NNPCalculator(model).optimizer_settings == {}  # nothing recorded: the paper's L-BFGS
    atoms = _atoms("OCC=O", seed=2)
    start = atoms.positions.copy()
    trajectory = calc.optimize(atoms, steps=4, exact_steps=True)
    assert trajectory.n_steps == 4 and trajectory.status in {"converged", "step_limit", "broken", "fragmented"}
    steps = np.linalg.norm(np.diff(trajectory.positions, axis=0), axis=2).max(axis=1)
    assert steps.max() <= 0.01 + 1e-9  # the checkpoint's cap
    np.testing.assert_allclose(atoms.positions, trajectory.positions[-1])
    assert np.abs(atoms.positions - start).max() > 0
    free = atoms.copy()
    uncapped = calc.optimize(free, steps=4, exact_steps=True, max_displacement=None)  # told otherwise
    assert np.linalg.norm(np.diff(uncapped.positions, axis=0), axis=2).max() > 0.01
