"""golf.active.explore: a GOLF round's NNP trajectories with the MMFF stop (small random NNP, real MMFF)."""

import numpy as np
import pytest
import torch

from golf import data
from golf.active.explore import continue_trajectories, run_golf_trajectories
from golf.active.select import (
    random_control_trajectories,
    select_from_trajectories,
    select_random_from_trajectories,
    trajectory_end,
)
from golf.chem.conformers import MoleculeSpec, generate_conformers
from golf.chem.mmff import MMFF
from golf.nnp.model import build_model
from golf.optim.lbfgs import optimize

T = 4
ROUND = dict(parallel=3, timelimit=T, mmff_threshold=300.0, round_index=2, max_displacement=0.05, progress=False)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny batches on a shared 2-core machine: one thread is ~10x faster than torch's default."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    m = build_model(["H", "C", "N", "O"], self_energies="zero", layer_dims=(16,), seed=0)
    # Small output weights give gentle forces, so that some trajectories last several steps
    # (with the raw random weights nearly every trajectory rises at its first step).
    with torch.no_grad():
        for layer in m.modules():
            if isinstance(layer, torch.nn.Linear) and layer.out_features == 1:
                layer.weight.mul_(1e-3)
    return m


@pytest.fixture(scope="module")
def d0() -> data.Dataset:
    specs = [MoleculeSpec(s, s, i) for i, s in enumerate(["CCO", "CN", "C=O"])]
    ds = generate_conformers(
        specs, elements=["H", "C", "N", "O"], per_molecule=2, test_per_molecule=1, test_fraction=0.0, attempts=4, seed=3
    )
    rng = np.random.default_rng(0)
    for c in ds:  # fake but finite labels: only the geometries matter here
        c.energy = -100.0 + rng.normal()
        c.forces = rng.normal(0, 0.01, c.coordinates.shape)
        c.status = "ok"
    # one unlabelled conformation that must never be used as a start
    extra = ds.conformers[0]
    ds.conformers.append(data.Conformer(extra.molecule_id, 99, extra.species, extra.coordinates + 5.0))
    return ds


@pytest.fixture(scope="module")
def trajectories(model, d0):
    return run_golf_trajectories(model, d0, n_candidates=6, seed=5, **ROUND)


def _by_traj(ds):
    out = {}
    for c in ds:
        out.setdefault(c.props["traj"], []).append(c)
    return out


def test_enough_accepted_candidates(trajectories):
    selected = select_from_trajectories(trajectories, mmff_threshold=300.0)
    accepted = [c for c in selected if c.status == "unlabelled"]
    assert len(accepted) == 6 == trajectories.attrs["candidates"]
    assert len(selected) == len(_by_traj(trajectories))
    assert trajectories.attrs["round"] == 2 and trajectories.attrs["kind"] == "golf_trajectories"
    assert all(c.props["round"] == 2 for c in trajectories)


def test_frames_are_consecutive_steps_from_the_start(trajectories, d0):
    starts = d0.labelled()
    lengths = []
    for frames in _by_traj(trajectories).values():
        assert [c.props["step"] for c in frames] == list(range(len(frames)))
        assert 2 <= len(frames) <= T + 1
        lengths.append(len(frames))
        start = starts.conformers[frames[0].props["start_row"]]
        np.testing.assert_array_equal(frames[0].coordinates, start.coordinates)  # frame 0 is the D0 start
        for c in frames:
            assert (c.molecule_id, c.conformer_id) == (start.molecule_id, start.conformer_id)
            assert c.props["start_row"] == frames[0].props["start_row"]
            assert len({c.props["end_reason"] for c in frames}) == 1
            assert c.status == "unlabelled" and np.isnan(c.energy)
        assert np.isnan(frames[0].props["nnp_forces"]).sum() == 0  # start forces are filled in
    assert max(lengths) > 2  # the test data also exercise trajectories longer than one step


def test_mmff_energies_belong_to_the_stored_positions(trajectories):
    surrogates = {}
    for c in trajectories:
        ff = surrogates.setdefault(trajectories.smiles(c), MMFF(trajectories.smiles(c)))
        assert c.props["mmff_energy"] == pytest.approx(ff.energy(c.coordinates), rel=1e-12)


def test_nnp_energies_and_forces_belong_to_the_stored_positions(trajectories, model):
    for c in trajectories:
        species = torch.as_tensor(c.species)[None]
        xyz = torch.as_tensor(c.coordinates, dtype=torch.float32)[None]
        energy, forces = model.energies_forces(species, xyz)
        assert c.props["nnp_energy"] == pytest.approx(float(energy[0]), abs=1e-5)
        np.testing.assert_allclose(c.props["nnp_forces"], forces[0].numpy(), atol=1e-4)


def test_ends_follow_trajectory_end(trajectories):
    reasons = set()
    for frames in _by_traj(trajectories).values():
        mmff = [c.props["mmff_energy"] for c in frames]
        end = frames[0].props["end_reason"]
        reasons.add(end)
        for n in range(1, len(frames) - 1):  # it went on while trajectory_end said so
            assert trajectory_end(mmff[: n + 1], True, T) is None
        found = trajectory_end(mmff, True, T)
        # a trajectory whose L-BFGS converged ends as if it idled until T
        assert found == end or (found is None and end == "timelimit")
    assert reasons <= {"mmff_rise", "timelimit"}
    assert "mmff_rise" in reasons


def test_reproducible_with_the_same_seed(model, d0, trajectories):
    again = run_golf_trajectories(model, d0, n_candidates=6, seed=5, **ROUND)
    assert len(again) == len(trajectories)
    for a, b in zip(trajectories, again, strict=True):
        np.testing.assert_array_equal(a.coordinates, b.coordinates)
        assert a.props["start_row"] == b.props["start_row"] and a.props["mmff_energy"] == b.props["mmff_energy"]
    other = run_golf_trajectories(model, d0, n_candidates=6, seed=6, **ROUND)
    assert [c.props["start_row"] for c in other if c.props["step"] == 0] != [
        c.props["start_row"] for c in trajectories if c.props["step"] == 0
    ]


def test_round_trip_through_hdf5(trajectories, tmp_path):
    data.write(tmp_path / "t.h5", trajectories)
    back = data.read(tmp_path / "t.h5")
    a = select_from_trajectories(trajectories)
    b = select_from_trajectories(back)
    assert [(c.status, c.props["traj"], c.props["step"]) for c in a] == [
        (c.status, c.props["traj"], c.props["step"]) for c in b
    ]


def test_max_trajectories_lets_running_trajectories_finish(model, d0):
    out = run_golf_trajectories(model, d0, n_candidates=10, seed=5, max_trajectories=3, **ROUND)
    assert out.attrs["trajectories_ended"] == 3 and out.attrs["trajectories_dropped"] == 0
    frames = _by_traj(out)
    assert sorted(frames) == [0, 1, 2]
    for fr in frames.values():
        mmff = [c.props["mmff_energy"] for c in fr]
        end = fr[0].props["end_reason"]
        assert trajectory_end(mmff, True, T) in (end, None)
    assert max(len(fr) for fr in frames.values()) > 2


def test_no_labelled_start_is_an_error(model, d0):
    unlabelled = d0.subset([c.status != "ok" for c in d0])
    with pytest.raises(ValueError, match="no labelled conformation"):
        run_golf_trajectories(model, unlabelled, n_candidates=1, seed=0, **ROUND)


def test_continued_trajectories_are_the_whole_nnp_trajectories(model, d0, trajectories):
    trajs = random_control_trajectories(trajectories)
    assert trajs and set(trajs) <= set(_by_traj(trajectories))
    golf_before = [(c.status, c.props) for c in select_from_trajectories(trajectories)]
    n_frames = len(trajectories)
    # A longer time limit than the round's (T = 4), so that some continuations stall before it.
    limit = 60
    beyond = continue_trajectories(
        model,
        trajectories,
        trajs,
        parallel=2,
        timelimit=limit,
        max_displacement=ROUND["max_displacement"],
        progress=False,
    )
    # GOLF's trajectories and selection are untouched: the continuation is a separate dataset.
    assert len(trajectories) == n_frames and all("beyond_end" not in c.props for c in trajectories)
    assert [(c.status, c.props) for c in select_from_trajectories(trajectories)] == golf_before
    assert beyond.attrs["rerun_max_deviation"] < 1e-3  # the rerun repeats GOLF's stored steps

    stored, extra = _by_traj(trajectories), _by_traj(beyond)
    assert set(extra) <= set(trajs)
    surrogates = {}
    for traj in trajs:
        frames = stored[traj] + extra.get(traj, [])
        assert [c.props["step"] for c in frames] == list(range(len(frames)))
        assert all(c.props["beyond_end"] == 1 for c in extra.get(traj, []))
        # Stored frames plus their continuation = one uninterrupted NNP L-BFGS run without the MMFF stop
        # (up to the model's float32 round-off in another batch, which L-BFGS at lr 1 amplifies over 60 steps).
        start = frames[0]
        (whole,) = optimize(
            model.energies_forces, [start.species], [start.coordinates], steps=limit, batch_size=1, check_bonds=False,
            max_displacement=ROUND["max_displacement"],
        )  # fmt: skip
        n = len(frames)
        np.testing.assert_allclose(np.stack([c.coordinates for c in frames]), whole.positions[:n], atol=1e-2)
        # A continuation that ended before T had stalled: the uninterrupted run stays where it was.
        np.testing.assert_allclose(
            whole.positions[n:], np.broadcast_to(frames[-1].coordinates, whole.positions[n:].shape), atol=1e-2
        )
        for c in extra.get(traj, []):
            ff = surrogates.setdefault(trajectories.smiles(c), MMFF(trajectories.smiles(c)))
            assert c.props["mmff_energy"] == pytest.approx(ff.energy(c.coordinates), rel=1e-12)
        assert len(frames) <= limit + 1
    lengths = [len(stored[t]) + len(extra.get(t, [])) for t in trajs]
    assert max(lengths) == limit + 1 and min(lengths) < limit + 1  # some ran to the limit, some stalled

    control = select_random_from_trajectories(trajectories, seed=0, beyond_end=beyond, known=[d0])
    assert len([c for c in control if c.status == "unlabelled"]) == 6  # GOLF's budget
    assert control.attrs["picks_start_frames"] == control.attrs["picks_known"] == 0
