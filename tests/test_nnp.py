"""golf.nnp.model: model building, energies and forces, self energies, checkpoints, padding."""

import json

import numpy as np
import pytest
import torch

from golf.data.dataset import Conformer, Dataset, Molecule
from golf.nnp.model import (
    NNP,
    CheckpointError,
    NNPError,
    UnsupportedElement,
    build_model,
    fit_self_energies,
    load_model,
    padded_batch,
    resolve_device,
    save_model,
)

SAE = {"H": -0.5, "C": -38.0, "N": -54.6, "O": -75.1}

# Ethanol (atom order of AddHs(MolFromSmiles("CCO"))) and water, Angstrom.
ETHANOL_Z = [6, 6, 8, 1, 1, 1, 1, 1, 1]
ETHANOL_XYZ = [
    [-0.92, 0.02, 0.03],
    [0.51, -0.38, -0.21],
    [1.30, 0.77, 0.01],
    [-1.05, 0.93, -0.57],
    [-1.58, -0.78, -0.31],
    [-1.12, 0.24, 1.08],
    [0.62, -0.69, -1.26],
    [0.85, -1.21, 0.42],
    [2.22, 0.52, -0.15],
]
WATER_Z = [8, 1, 1]
WATER_XYZ = [[0.0, 0.0, 0.12], [0.0, 0.76, -0.47], [0.0, -0.76, -0.47]]


def _batch(dtype=torch.float64):
    pb = padded_batch(
        [
            Conformer(0, 0, ETHANOL_Z, ETHANOL_XYZ),
            Conformer(1, 0, WATER_Z, WATER_XYZ),
        ]
    )
    return pb.species, pb.coordinates.to(dtype)


def test_padded_batch_pads_with_minus_one_and_zeros():
    forces = np.ones((3, 3))
    pb = padded_batch([Conformer(0, 0, ETHANOL_Z, ETHANOL_XYZ), Conformer(1, 0, WATER_Z, WATER_XYZ, -76.0, forces)])
    assert pb.species.shape == (2, 9) and pb.species.dtype == torch.int64
    assert pb.species[1, 3:].eq(-1).all() and pb.species[1, :3].tolist() == WATER_Z
    assert pb.coordinates[1, 3:].eq(0).all()
    assert pb.n_atoms.tolist() == [9, 3]
    assert torch.isnan(pb.energies[0]) and pb.energies[1] == -76.0
    assert torch.isnan(pb.forces[0]).all()  # no label: NaN on real atoms
    assert pb.forces[1, :3].eq(1).all() and pb.forces[1, 3:].eq(0).all()


def test_energies_include_self_energies_and_padding_is_inert():
    model = build_model(["H", "C", "O"], self_energies=SAE, layer_dims="tiny", seed=0).double()
    species, coords = _batch()
    energies, forces = model.energies_forces(species, coords)
    assert energies.dtype == torch.float64 and energies.shape == (2,)
    # water alone (no padding) gives the same energy as water padded inside the batch
    alone = model(species[1:, :3], coords[1:, :3])
    assert torch.allclose(alone, energies[1:], atol=1e-12, rtol=0)
    # total = network part + self energies, so the energy is close to the self-energy sum
    assert abs(float(energies[1]) - (-75.1 - 2 * 0.5)) < 1.0
    assert forces[1, 3:].eq(0).all()
    assert model.elements == ("H", "C", "O")


def test_forces_equal_central_finite_difference_float64():
    model = build_model(["H", "C", "O"], self_energies=SAE, layer_dims=(16, 8), seed=3).double()
    species, coords = _batch()
    _, forces = model.energies_forces(species, coords)
    assert forces.dtype == torch.float64
    h = 1e-5
    for b, atom, axis in [(0, 0, 0), (0, 2, 1), (0, 8, 2), (1, 0, 2), (1, 2, 0)]:
        plus, minus = coords.clone(), coords.clone()
        plus[b, atom, axis] += h
        minus[b, atom, axis] -= h
        with torch.no_grad():
            fd = -(model(species, plus)[b] - model(species, minus)[b]) / (2 * h)
        assert float(forces[b, atom, axis]) == pytest.approx(float(fd), rel=1e-5, abs=1e-8)


def test_float32_input_gives_float32_forces():
    model = build_model(["H", "C", "O"], self_energies=SAE, layer_dims="tiny", seed=0)
    species, coords = _batch(torch.float32)
    energies, forces = model.energies_forces(species, coords)
    assert energies.dtype == torch.float64 and forces.dtype == torch.float32
    assert torch.isfinite(forces).all()


def test_ensemble_members_average_to_the_energy():
    model = build_model(["H", "C", "O"], self_energies=SAE, layer_dims="tiny", ensemble_size=3, seed=1).double()
    species, coords = _batch()
    members = model.member_energies(species, coords)
    assert members.shape == (3, 2)
    assert torch.allclose(members.mean(0), model(species, coords), atol=1e-10, rtol=0)
    assert members[:, 0].std() > 0  # independently initialised members disagree
    single = build_model(["H", "C", "O"], self_energies=SAE, layer_dims="tiny")
    assert single.member_energies(species, coords.float()).shape == (1, 2)


def test_round_trip_is_bit_identical(tmp_path):
    model = build_model(
        ["H", "C", "N", "O"],
        self_energies=SAE,
        layer_dims=(24, 12),
        ensemble_size=2,
        seed=7,
        level_of_theory="hf/sto-3g",
    )
    path = tmp_path / "models" / "m.pt"
    save_model(path, model)
    assert path.exists() and not list(path.parent.glob(".*tmp"))
    loaded = load_model(path)
    species, coords = _batch(torch.float32)
    e0, f0 = model.energies_forces(species, coords)
    e1, f1 = loaded.energies_forces(species, coords)
    assert torch.equal(e0, e1) and torch.equal(f0, f1)
    assert loaded.meta == model.meta
    assert loaded.self_energies == {k: SAE[k] for k in ["H", "C", "N", "O"]}
    json.dumps(loaded.meta)  # JSON-able
    blob = torch.load(path, weights_only=True)
    assert set(blob) == {"state_dict", "meta"}


def test_load_rejects_foreign_files(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_model(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="state_dict"):
        load_model(other)
    with pytest.raises(CheckpointError, match="no such file"):
        load_model(tmp_path / "missing.pt")


def test_unsupported_elements_raise_one_line_error():
    with pytest.raises(UnsupportedElement) as err:
        build_model(["H", "C", "Br", "Si"], self_energies="zero")
    assert "Br, Si" in str(err.value) and "\n" not in str(err.value)
    model = build_model(["H", "C"], self_energies="zero", layer_dims="tiny")
    species, coords = _batch(torch.float32)  # contains O
    with pytest.raises(UnsupportedElement, match="element\\(s\\) O"):
        model(species, coords)


def test_bad_settings_raise():
    with pytest.raises(NNPError, match="unknown network size"):
        build_model(["H"], self_energies="zero", layer_dims="huge")
    with pytest.raises(NNPError, match="lack element"):
        build_model(["H", "C"], self_energies={"H": -0.5})
    with pytest.raises(NNPError, match="shape|must be"):
        build_model(["H"], self_energies="zero", layer_dims="tiny")(torch.tensor([1, 1]), torch.zeros(2, 3))


def test_elements_are_canonical_and_seed_is_reproducible():
    a = build_model(["O", "H", "C", "H"], self_energies="zero", layer_dims="tiny", seed=5)
    b = build_model(["C", "H", "O"], self_energies="zero", layer_dims="tiny", seed=5)
    c = build_model(["C", "H", "O"], self_energies="zero", layer_dims="tiny", seed=6)
    assert a.elements == ("H", "C", "O")
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_fit_self_energies_recovers_known_values():
    rng = np.random.default_rng(0)
    truth = {"H": -0.51, "C": -37.9, "N": -54.4, "O": -75.0}
    zs = {"H": 1, "C": 6, "N": 7, "O": 8}
    conformers = []
    for i in range(40):
        counts = {"H": rng.integers(2, 12), "C": rng.integers(1, 8), "N": rng.integers(0, 3), "O": rng.integers(0, 4)}
        species = np.concatenate([[zs[s]] * n for s, n in counts.items()]).astype(int)
        energy = sum(truth[s] * n for s, n in counts.items()) + rng.normal(0, 1e-3)
        conformers.append(Conformer(i, 0, species, np.zeros((len(species), 3)), energy, status="ok"))
    # failed labels must not enter the fit
    conformers.append(Conformer(99, 0, [6, 1], np.zeros((2, 3)), 123.0, status="scf_not_converged"))
    ds = Dataset({i: Molecule(i, "C") for i in range(100)}, conformers)
    fitted = fit_self_energies(ds, ["H", "C", "N", "O", "F"])
    for s, e in truth.items():
        assert fitted[s] == pytest.approx(e, abs=5e-3)
    assert fitted["F"] == 0.0  # absent from the data
    with pytest.raises(UnsupportedElement):
        fit_self_energies(ds, ["H", "C"])
    with pytest.raises(NNPError, match="no labelled"):
        fit_self_energies(Dataset(conformers=conformers[-1:]), ["H", "C"])


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(NNPError, match="unknown device|unsupported device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(NNPError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_nnp_is_a_module_with_device():
    model = build_model(["H"], self_energies="zero", layer_dims="tiny")
    assert isinstance(model, NNP) and isinstance(model, torch.nn.Module)
    assert model.device == torch.device("cpu")


def test_energies_forces_work_under_no_grad():
    model = build_model(["H", "C", "O"], self_energies=SAE, layer_dims="tiny", seed=0)
    species, coords = _batch(torch.float32)
    expected = model.energies_forces(species, coords)[1]
    with torch.no_grad():
        energies, forces = model.energies_forces(species, coords)
    assert torch.equal(forces, expected) and not energies.requires_grad
