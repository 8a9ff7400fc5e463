"""PaiNN against schnetpack 2.0.4: the GOLF authors' six checkpoints on 60 real nablaDFT conformations.

The reference (../shared/reference/nabladft/painn-reference.npz, see its README) was computed with
schnetpack 2.0.4 itself. Our PaiNN must reproduce it: float64 energies and forces to 1e-8, float32
to 1e-5, and 20 steps of torch.optim.LBFGS(lr=1, max_iter=5, history_size=100) to 1e-6 Angstrom and
1e-8 Hartree per step.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from golf import nnp
from golf.data.dataset import Conformer
from golf.data.molecule import SYMBOLS
from golf.nnp.model import CheckpointError, build_painn, import_schnetpack_painn, load_model, padded_batch, save_model

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "nabladft"
MODELS = ["baseline-NNP", "traj-10k", "traj-100k", "traj-500k", "GOLF-1k", "GOLF-10k"]
ase_db = pytest.importorskip("ase.db")
pytestmark = pytest.mark.skipif(not REFERENCE.is_dir(), reason="no shared nablaDFT reference here")


@pytest.fixture(scope="module")
def reference():
    ref = np.load(REFERENCE / "painn-reference.npz")
    db = ase_db.connect(REFERENCE / "nabladft-60.db")
    rows = [db.get(id=int(i)) for i in ref["db_ids"]]
    atomrefs_by_z = db.metadata["atomrefs"]["energy"]
    atomrefs = {s: float(atomrefs_by_z[z]) for s, z in nnp.SUPPORTED_ELEMENTS.items()}
    conformers = [Conformer(i, 0, species=r.numbers, coordinates=r.positions) for i, r in enumerate(rows)]
    return ref, rows, atomrefs, conformers


def _split(flat: np.ndarray, natoms) -> list[np.ndarray]:
    return np.split(flat, np.cumsum(natoms)[:-1])


@pytest.mark.parametrize("name", MODELS)
def test_energies_and_forces_match_schnetpack(reference, name):
    ref, rows, atomrefs, conformers = reference
    model = import_schnetpack_painn(REFERENCE / "golf-checkpoints" / name / "NNP_checkpoint_actor", atomrefs)
    batch = padded_batch(conformers)
    # The authors' energies are relative to the atomrefs; ours are totals: compare both ways.
    atomref_sums = np.array([sum(atomrefs[SYMBOLS[int(z)]] for z in r.numbers) for r in rows])
    for dtype, tol in ((torch.float64, 1e-8), (torch.float32, 1e-5)):
        m = model.to(dtype)
        energies, forces = m.energies_forces(batch.species, batch.coordinates.to(dtype))
        tag = "f64" if dtype == torch.float64 else "f32"
        np.testing.assert_allclose(energies.numpy() - atomref_sums, ref[f"{name}/energies_{tag}"], rtol=0, atol=tol)
        ours = np.concatenate([forces[i, : len(r.numbers)].double().numpy() for i, r in enumerate(rows)])
        np.testing.assert_allclose(ours, ref[f"{name}/forces_{tag}"], rtol=0, atol=tol)


def _lbfgs_deviations(model, rows, energies_ref, final_ref):
    """Largest |energy - reference| per step and |position - reference| over the conformations."""
    de, dx = 0.0, 0.0
    for i, expected in enumerate(energies_ref):
        elem_idxs = model.element_indices(torch.as_tensor(rows[i].numbers).unsqueeze(0))
        positions = torch.tensor(rows[i].positions, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([positions], lr=1, max_iter=5, history_size=100)

        def closure(opt=opt, elem_idxs=elem_idxs, positions=positions):
            opt.zero_grad()
            energy = model.network_energies(elem_idxs, positions.unsqueeze(0)).sum()  # atomrefs subtracted
            energy.backward()
            return energy

        got = [float(opt.step(closure).detach()) for _ in range(expected.shape[0])]
        de = max(de, float(np.abs(np.array(got) - expected).max()))
        dx = max(dx, float(np.abs(positions.detach().numpy() - final_ref[i]).max()))
    return de, dx


def _lbfgs_reference(ref, name):
    energies = ref[f"{name}/lbfgs_energies_f64"]
    return energies, _split(ref[f"{name}/lbfgs_final_positions_f64"], ref["natoms"][: len(energies)])


@pytest.mark.parametrize("name", MODELS)
def test_lbfgs_steps_match_schnetpack(reference, name):
    """Per conformation, the energy returned by each of 20 torch.optim.LBFGS steps and the final
    positions; with every atom pair as neighbours, as the authors run it."""
    ref, rows, atomrefs, _ = reference
    model = import_schnetpack_painn(REFERENCE / "golf-checkpoints" / name / "NNP_checkpoint_actor", atomrefs).double()
    model.network.pairs = "all"
    de, dx = _lbfgs_deviations(model, rows, *_lbfgs_reference(ref, name))
    assert de < 1e-8 and dx < 1e-6, (de, dx)


def test_lbfgs_with_cutoff_pairs_stays_on_the_reference_path(reference):
    """Our default (pairs inside the cutoff only) differs from all pairs by ~1e-15 per force; 100
    L-BFGS iterations grow that to a few 1e-6 Angstrom on the ill-conditioned second conformation
    (max force still 0.017 Ha/A after 20 steps), and stay below 1e-8 on most."""
    ref, rows, atomrefs, _ = reference
    name = "baseline-NNP"
    model = import_schnetpack_painn(REFERENCE / "golf-checkpoints" / name / "NNP_checkpoint_actor", atomrefs).double()
    de, dx = _lbfgs_deviations(model, rows, *_lbfgs_reference(ref, name))
    assert de < 1e-8 and dx < 5e-6, (de, dx)


def test_imported_model_round_trips_and_gives_total_energies(reference, tmp_path):
    ref, rows, atomrefs, conformers = reference
    model = import_schnetpack_painn(REFERENCE / "golf-checkpoints" / "GOLF-10k" / "NNP_checkpoint_actor", atomrefs)
    assert model.architecture == "painn"
    authors = torch.load(
        REFERENCE / "golf-checkpoints" / "GOLF-10k" / "NNP_checkpoint_actor", map_location="cpu", weights_only=True
    )
    assert set(model.state_dict()) == set(authors)  # one to one, the authors' own names
    save_model(tmp_path / "golf10k.pt", model)
    again = load_model(tmp_path / "golf10k.pt")
    batch = padded_batch(conformers[:4])
    e1, f1 = model.energies_forces(batch.species, batch.coordinates)
    e2, f2 = again.energies_forces(batch.species, batch.coordinates)
    assert torch.equal(e1, e2) and torch.equal(f1, f2)
    # Total energies: the network part plus the atomrefs; for 29-53-atom molecules hundreds of Hartree.
    dft_total = ref["dft_energies"][:4] + [sum(atomrefs[SYMBOLS[int(z)]] for z in r.numbers) for r in rows[:4]]
    assert np.abs(e1.numpy() - dft_total).max() < 0.05  # within ~30 kcal/mol of the DFT total; scale check
    assert (e1.numpy() < -500).all()


def test_not_a_painn_checkpoint_is_a_clear_error(tmp_path, reference):
    _, _, atomrefs, _ = reference
    bad = tmp_path / "bad"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        import_schnetpack_painn(bad, atomrefs)
    torch.save({"weight": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a schnetpack PaiNN"):
        import_schnetpack_painn(tmp_path / "foreign.pt", atomrefs)
    with pytest.raises(CheckpointError, match="no such file"):
        import_schnetpack_painn(tmp_path / "missing", atomrefs)


def test_painn_is_batch_independent_and_translation_invariant():
    model = build_painn(["H", "C", "O"], self_energies="zero", n_atom_basis=16, n_interactions=2, seed=0).double()
    rng = np.random.default_rng(0)
    a = Conformer(0, 0, species=np.array([6, 8, 1, 1]), coordinates=rng.normal(size=(4, 3)))
    b = Conformer(1, 0, species=np.array([6, 6, 1, 1, 1, 1, 8]), coordinates=3 * rng.normal(size=(7, 3)))
    alone = padded_batch([a])
    together = padded_batch([b, a])
    e_alone, f_alone = model.energies_forces(alone.species, alone.coordinates)
    e_both, f_both = model.energies_forces(together.species, together.coordinates)
    assert torch.allclose(e_alone[0], e_both[1], rtol=0, atol=1e-12)
    assert torch.allclose(f_alone[0], f_both[1, :4], rtol=0, atol=1e-12)
    shifted = model.energies_forces(alone.species, alone.coordinates + 10.0)[0]
    assert torch.allclose(shifted, e_alone, rtol=0, atol=1e-12)
    # Forces sum to zero (no external field) and are minus the gradient (finite difference).
    assert f_alone.sum(dim=1).abs().max() < 1e-10
    delta = torch.zeros_like(alone.coordinates)
    delta[0, 1, 2] = 1e-6
    plus = model.energies_forces(alone.species, alone.coordinates + delta)[0]
    minus = model.energies_forces(alone.species, alone.coordinates - delta)[0]
    assert float((plus - minus) / 2e-6) == pytest.approx(-float(f_alone[0, 1, 2]), abs=1e-6)


def test_the_fast_layout_computes_schnetpack_order_results_and_training_gradients():
    """The per-layer, per-part filters and contiguous messages (pairs within the cutoff) against
    schnetpack's own order of operations (every pair): energies, forces and the gradient of a force
    loss (the double backward training takes) agree to rounding."""
    model = build_painn(["H", "C", "O"], self_energies="zero", n_atom_basis=16, n_interactions=3, seed=1).double()
    rng = np.random.default_rng(1)
    mols = [Conformer(i, 0, species=np.array([6, 6, 8, 1, 1, 1, 1]), coordinates=2.5 * rng.normal(size=(7, 3)))
            for i in range(3)]  # fmt: skip
    batch = padded_batch(mols)
    results = {}
    for pairs in ("cutoff", "all"):
        model.network.pairs = pairs
        model.zero_grad()
        energies, forces = model.energies_forces(batch.species, batch.coordinates, create_graph=True)
        (forces**2).sum().backward()
        grads = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
        results[pairs] = (energies.detach(), forces.detach(), grads)
    for fast, reference in zip(results["cutoff"], results["all"], strict=True):
        assert fast.shape == reference.shape
        assert torch.allclose(fast, reference, rtol=1e-10, atol=1e-12)
    assert results["all"][2].abs().max() > 0  # the loss reaches the weights


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_building_a_painn_keeps_freed_memory_for_reuse():
    """After a PaiNN is built, a freed 76 MB tensor's pages are reused, not faulted in again (glibc
    unmaps such blocks on free by default: about 55 000 faults per cycle, measured)."""
    script = """
import resource, torch
from golf.nnp.model import build_painn
build_painn(["H", "C"], self_energies="zero", n_atom_basis=8, n_interactions=1, seed=0)
def cycle():
    for _ in range(3):
        a = torch.empty(19_000_000); a.fill_(1.0); del a
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert int(done.stdout.split()[-1]) < 1000, done.stdout


def test_painn_seed_and_bad_sizes():
    a = build_painn(["H", "C"], self_energies="zero", n_atom_basis=8, n_interactions=1, seed=3)
    b = build_painn(["H", "C"], self_energies="zero", n_atom_basis=8, n_interactions=1, seed=3)
    c = build_painn(["H", "C"], self_energies="zero", n_atom_basis=8, n_interactions=1, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values(), strict=True))
    with pytest.raises(nnp.NNPError, match="positive"):
        build_painn(["H"], self_energies="zero", n_atom_basis=0)


def test_training_a_small_painn_lowers_validation_loss_reproducibly():
    from test_train import synthetic_dataset  # harmonic bonds on RDKit geometries, no Psi4

    from golf.nnp.model import fit_self_energies
    from golf.train.trainer import TrainSettings, train

    d0 = synthetic_dataset(n_conf=4)
    elements = ["H", "C", "N", "O"]
    model = build_painn(
        elements, self_energies=fit_self_energies(d0, elements), n_atom_basis=16, n_interactions=2, n_rbf=8, seed=0
    )
    settings = TrainSettings(steps=30, batch_size=8, lr=3e-3, eval_every=15, val_fraction=0.2, seed=1, device="cpu")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = train(model, d0, None, settings, progress=False)
        b = train(model, d0, None, settings, progress=False)
    finally:
        torch.set_num_threads(n)
    val = a.history["val_loss"].to_numpy()
    assert val[1:].min() < 0.5 * val[0]
    assert a.model.architecture == "painn"
    assert all(
        torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True)
    )
