"""golf.oracle.trajectories and golf.oracle.labels with the real Psi4 oracle at HF/STO-3G (water, methanol).

One oracle for the module with a label cache, so repeated geometries cost nothing; about 30 Psi4
gradients in all (~0.5 s each).
"""

import numpy as np
import pytest

from golf import data
from golf.data.dataset import Conformer, Dataset, Molecule
from golf.oracle.labels import ProvenanceError, common_provenance, gather, label_pending
from golf.oracle.oracle import Oracle, OracleSettings, OracleUnavailable, find_psi4_python
from golf.oracle.trajectories import (
    ENDS,
    extra_frames,
    gather_trajectories,
    oracle_trajectories,
    shuffled,
)

# Atom order of Chem.AddHs(Chem.MolFromSmiles(smiles)), Angstrom, off equilibrium.
WATER = ([8, 1, 1], [[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7672, -0.4592]])
METHANOL = (
    [6, 8, 1, 1, 1, 1],
    [[-0.0467, 0.6626, 0.0100], [-0.0467, -0.7574, 0.0000], [-1.0861, 0.9916, 0.0000], [0.4425, 1.0814, 0.8960],
     [0.4525, 1.0714, -0.8960], [0.8679, -1.0737, 0.0300]],
)  # fmt: skip
CLASHING_WATER = ([8, 1, 1], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.7, 0.0]])  # Psi4 refuses it at once
FMAX = 2e-3  # Hartree/Angstrom


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    try:
        find_psi4_python(None)
    except OracleUnavailable as err:
        pytest.skip(f"no Psi4 on this machine: {err}")
    settings = OracleSettings(
        method="hf", basis="sto-3g", threads=1, memory_mb=500, timeout_s=120, workers=1,
        cache_dir=str(tmp_path_factory.mktemp("label-cache")),
    )  # fmt: skip
    with Oracle(settings) as o:
        yield o


def _dataset(*systems) -> Dataset:
    smiles = {3: "O", 6: "CO"}
    ds = Dataset(attrs={"kind": "test"})
    for row, (species, coords) in enumerate(systems):
        mid = len(species)
        ds.molecules[mid] = Molecule(mid, smiles[len(species)])
        ds.conformers.append(Conformer(mid, row, species, coords))
    return ds


def _max_atom_force(forces) -> float:
    return float(np.linalg.norm(forces, axis=1).max())


@pytest.fixture(scope="module")
def converged(oracle):
    ds = _dataset(WATER, METHANOL)
    return oracle_trajectories(oracle, ds, fmax=FMAX, max_steps=40)


def test_optimisation_converges_and_lowers_the_energy(converged):
    by_traj = {}
    for c in converged:
        by_traj.setdefault(c.props["traj"], []).append(c)
    assert sorted(by_traj) == [0, 1]
    for frames in by_traj.values():
        assert [c.props["step"] for c in frames] == list(range(len(frames)))
        assert len(frames) >= 3
        assert all(c.status == "ok" for c in frames)
        last = frames[-1]
        assert last.props["end"] == "converged"
        assert all("end" not in c.props for c in frames[:-1])  # only the last frame says how it ended
        assert _max_atom_force(last.forces) < FMAX
        assert _max_atom_force(frames[0].forces) > FMAX
        energies = [c.energy for c in frames]
        assert energies[-1] < energies[0] - 1e-4
        assert energies[-1] <= min(energies) + 1e-6  # the minimum found is the last frame
        np.testing.assert_array_equal(frames[0].coordinates, np.array((WATER, METHANOL)[frames[0].props["traj"]][1]))


def test_extra_frames_are_the_paid_steps(converged):
    extra = extra_frames(converged)
    assert len(extra) == len(converged) - 2
    assert all(c.props["step"] >= 1 and c.labelled for c in extra)


def test_budget_caps_extra_frames_exactly(oracle, converged):
    water_extra = sum(1 for c in converged if c.props["traj"] == 0 and c.props["step"] >= 1)
    ds = _dataset(WATER, METHANOL)
    # Water (first in order) converges within the budget; methanol gets exactly what is left.
    budget = water_extra + 2
    out = oracle_trajectories(oracle, ds, fmax=FMAX, max_steps=40, budget=budget)
    assert len(extra_frames(out)) == budget
    methanol = [c for c in out if c.props["traj"] == 1]
    assert [c.props["step"] for c in methanol] == [0, 1, 2]
    assert methanol[-1].props["end"] == "step_limit"  # stopped by the budget, not converged, not failed
    # A budget spent inside the first trajectory: later trajectories do not start at all.
    out = oracle_trajectories(oracle, ds, fmax=FMAX, max_steps=40, budget=2, order=[1, 0])
    assert len(extra_frames(out)) == 2
    assert {c.props["traj"] for c in out} == {1}
    # The step limit also caps a trajectory.
    out = oracle_trajectories(oracle, ds.subset([1]), fmax=FMAX, max_steps=2)
    assert [c.props["step"] for c in out] == [0, 1, 2] and out.conformers[-1].props["end"] == "step_limit"


def test_failed_oracle_step_ends_the_trajectory_with_its_status(oracle):
    ds = _dataset(CLASHING_WATER, WATER)
    out = oracle_trajectories(oracle, ds, fmax=0.5, max_steps=3, order=[0])
    assert len(out) == 1
    (frame,) = out.conformers
    assert frame.status == "oracle_error" and frame.props["end"] == "failed"
    assert len(extra_frames(out)) == 0


def test_geometric_reaches_the_cartesian_minimum_in_fewer_oracle_calls(oracle, converged):
    """The reference optimiser: geomeTRIC's internal coordinates on the same oracle find the same
    minimum as the Cartesian LBFGS (to its tolerance) with fewer gradients, and record every
    call as a frame with the same conventions."""
    ds = _dataset(WATER, METHANOL)
    out = oracle_trajectories(oracle, ds, fmax=FMAX, max_steps=40, optimiser="geometric")
    lbfgs = {c.props["traj"]: c for c in converged if "end" in c.props}  # last frames
    for traj in (0, 1):
        frames = [c for c in out if c.props["traj"] == traj]
        last = frames[-1]
        assert [c.props["step"] for c in frames] == list(range(len(frames)))
        assert last.props["end"] == "converged" and all("end" not in c.props for c in frames[:-1])
        np.testing.assert_array_equal(frames[0].coordinates, np.array((WATER, METHANOL)[traj][1]))
        assert last.energy <= lbfgs[traj].energy + 2e-6  # Hartree: no higher than the Cartesian minimum
        assert _max_atom_force(last.forces) < 4.5e-4 * 1.8897 * np.sqrt(3) + 1e-9  # GAU gmax, per atom
        assert len(frames) < len([c for c in converged if c.props["traj"] == traj])
    # its step limit ends a trajectory as "stopped", and a failed call as failed
    limited = oracle_trajectories(oracle, ds.subset([1]), fmax=FMAX, max_steps=2, optimiser="geometric")
    assert limited.conformers[-1].props["end"] == "step_limit"
    failed = oracle_trajectories(oracle, _dataset(CLASHING_WATER), fmax=FMAX, max_steps=3, optimiser="geometric")
    assert [c.props["end"] for c in failed] == ["failed"]
    assert {c.props["end"] for c in (*out, *limited, *failed) if "end" in c.props} <= set(ENDS)
    with pytest.raises(ValueError, match="unknown optimiser"):
        oracle_trajectories(oracle, ds.subset([0]), fmax=FMAX, max_steps=3, optimiser="bfgs")


def test_shuffled_is_a_seeded_permutation():
    assert sorted(shuffled(10, 3)) == list(range(10))
    assert shuffled(10, 3) == shuffled(10, 3) != shuffled(10, 4)


# ------------------------------------------------------------------------------------ golf.oracle.labels


def _chunk(rows, forces_scale, attrs):
    ds = Dataset({0: Molecule(0, "O", "water")}, [], attrs)
    for row, scale in zip(rows, forces_scale, strict=True):
        status = "ok" if scale is not None else "scf_not_converged"
        forces = None if scale is None else np.full((3, 3), scale)
        ds.conformers.append(
            Conformer(0, row, WATER[0], WATER[1], energy=-75.0 - row, forces=forces, status=status,
                      props={"source_row": row})
        )  # fmt: skip
    return ds


def test_gather_restores_order_and_marks_large_forces():
    limit = 10.5
    # Frobenius norm of a (3, 3) array filled with s is 3 s: 3.5 -> exactly the limit
    a = _chunk([0, 2, 4], [0.1, 3.5, None], {"oracle_calls": 2, "cache_hits": 1, "kind": "labels"})
    b = _chunk([1, 3], [3.49, 5.0], {"oracle_calls": 3, "cache_hits": 0, "kind": "labels"})
    merged = gather([b, a], max_force_norm=limit)
    assert [c.props["source_row"] for c in merged] == [0, 1, 2, 3, 4]
    assert [c.status for c in merged] == ["ok", "ok", "force_too_large", "force_too_large", "scf_not_converged"]
    assert [c.energy for c in merged] == [-75.0, -76.0, -77.0, -78.0, -79.0]
    assert merged.conformers[2].forces is not None  # the row and its label are kept
    assert merged.attrs["oracle_calls"] == 5 and merged.attrs["cache_hits"] == 1
    assert merged.attrs["kind"] == "labels"


def test_label_pending_sends_only_unlabelled_rows(oracle):
    ds = _dataset(WATER, WATER, WATER)
    shifted = np.array(WATER[1]) + [0.0, 0.0, 0.01]
    ds.conformers[1].coordinates = shifted
    ds.conformers[1].status = "skipped_mmff_high"  # must pass through untouched
    ds.conformers[2].coordinates = shifted + [0.0, 0.02, 0.0]
    for row, c in enumerate(ds.conformers):
        c.props["source_row"] = row
    calls, hits = oracle.calls, oracle.cache_hits
    out = label_pending(oracle, ds)
    # row 0 is in the cache from the optimisation tests; row 2 is new; row 1 is not sent
    assert (oracle.calls - calls) + (oracle.cache_hits - hits) == 2
    assert [c.status for c in out] == ["ok", "skipped_mmff_high", "ok"]
    assert out.conformers[1] is ds.conformers[1] and np.isnan(out.conformers[1].energy)
    assert [c.props["source_row"] for c in out] == [0, 1, 2]
    for row in (0, 2):
        ref = oracle.gradient(WATER[0], ds.conformers[row].coordinates)
        assert out.conformers[row].energy == ref.energy
        np.testing.assert_array_equal(out.conformers[row].forces, ref.forces)
        np.testing.assert_array_equal(out.conformers[row].coordinates, ds.conformers[row].coordinates)
    assert out.attrs["kind"] == "test" and out.attrs["oracle"]["method"] == "hf"

    # nothing pending: no oracle call at all
    calls, hits = oracle.calls, oracle.cache_hits
    skipped = ds.subset([1])
    again = label_pending(oracle, skipped)
    assert (oracle.calls, oracle.cache_hits) == (calls, hits)
    assert [c.status for c in again] == ["skipped_mmff_high"]


def test_labels_round_trip_through_hdf5(oracle, tmp_path):
    ds = _dataset(WATER)
    ds.conformers[0].props["source_row"] = 0
    out = gather([label_pending(oracle, ds)], max_force_norm=10.5)
    data.write(tmp_path / "labels.h5", out)
    back = data.read(tmp_path / "labels.h5")
    assert back.conformers[0].status == "ok" and back.conformers[0].energy == out.conformers[0].energy
    assert back.attrs["oracle"]["basis"] == "sto-3g"


# ------------------------------------------------------------------- one label provenance per set

PSI4_132 = {"program": "psi4", "version": "1.3.2", "method": "hf", "basis": "sto-3g", "options": {"scf_type": "pk"}}
PSI4_191 = PSI4_132 | {"version": "1.9.1"}


def test_gather_refuses_chunks_of_different_oracles_naming_both():
    a = _chunk([0], [0.1], {"oracle": PSI4_132})
    b = _chunk([1], [0.1], {"oracle": PSI4_191})
    with pytest.raises(ProvenanceError) as err:
        gather([a, b], max_force_norm=10.5)
    message = str(err.value)
    assert "psi4 1.3.2 hf/sto-3g (scf_type=pk)" in message and "psi4 1.9.1 hf/sto-3g" in message
    assert "chunk 1" in message and "chunk 2" in message and "oracle.allow_mixed_provenance" in message
    options = _chunk([1], [0.1], {"oracle": PSI4_132 | {"options": {"scf_type": "df"}}})
    with pytest.raises(ProvenanceError, match="scf_type=df"):
        gather([a, options], max_force_norm=10.5)
    # allowed explicitly: gathered, with the first chunk's provenance
    merged = gather([a, b], max_force_norm=10.5, allow_mixed=True)
    assert len(merged) == 2 and merged.attrs["oracle"] == PSI4_132


def test_same_provenance_passes_and_unknown_provenance_is_not_compared():
    a = _chunk([0], [0.1], {"oracle": dict(PSI4_132)})
    b = _chunk([1], [0.1], {"oracle": dict(PSI4_132)})
    assert gather([a, b], max_force_norm=10.5).attrs["oracle"] == PSI4_132
    imported = _chunk([2], [0.1], {"kind": "imported_d0"})  # labels brought by the user: no record
    assert common_provenance({"d0.h5": imported, "round-1.h5": a}) == PSI4_132
    assert common_provenance({"d0.h5": imported}) is None
    with pytest.raises(ProvenanceError, match="d0.h5 has psi4 1.3.2.*round-2.h5 has psi4 1.9.1"):
        common_provenance({"d0.h5": a, "round-1.h5": b, "round-2.h5": _chunk([3], [0.1], {"oracle": PSI4_191})})


def test_oracle_labels_and_trajectories_carry_their_provenance(oracle, converged):
    provenance = oracle.provenance
    assert provenance == {"program": "psi4", "version": oracle.psi4_version, "method": "hf", "basis": "sto-3g",
                          "options": {}}  # fmt: skip
    assert label_pending(oracle, _dataset(WATER)).attrs["oracle"] == provenance


# ------------------------------------------------------ trajectory baseline: whole trajectories


def _trajectory_chunk(trajs, provenance=PSI4_132):
    """Chunk of trajectories {traj: (rank, extra steps)}: frame 0 plus that many steps."""
    ds = Dataset({0: Molecule(0, "O", "water")}, [], {"oracle": provenance, "oracle_calls": 0})
    for traj, (rank, steps) in trajs.items():
        for step in range(steps + 1):
            ds.conformers.append(
                Conformer(0, traj, WATER[0], WATER[1], energy=-75.0, forces=np.zeros((3, 3)), status="ok",
                          props={"traj": traj, "step": step, "rank": rank})
            )  # fmt: skip
        ds.conformers[-1].props["end"] = "converged"
        ds.attrs["oracle_calls"] += steps
    return ds


def test_gathered_trajectories_are_whole_in_seeded_order_and_the_budget_counted_once():
    # Two chunks ran whole trajectories (each past its share); ranks interleave them.
    a = _trajectory_chunk({10: (0, 4), 11: (2, 3)})
    b = _trajectory_chunk({20: (1, 5), 21: (3, 6)})
    out = gather_trajectories([b, a], budget=11)
    # rank 0 (4 calls) + rank 1 (5) + rank 2 cut to the remaining 2; rank 3 is not used
    steps = {t: [c.props["step"] for c in out if c.props["traj"] == t] for t in (10, 11, 20, 21)}
    assert steps == {10: [0, 1, 2, 3, 4], 20: [0, 1, 2, 3, 4, 5], 11: [0, 1, 2], 21: []}
    assert len(extra_frames(out)) == 11 == out.attrs["budget_calls"]
    assert out.attrs["oracle_calls"] == 18  # what the chunks paid, reported apart from the budget
    ends = {t: [c for c in out if c.props["traj"] == t][-1].props["end"] for t in (10, 11, 20)}
    assert ends == {10: "converged", 20: "converged", 11: "step_limit"}
    # The same trajectories cut into any number of chunks gather to the same set.
    one = gather_trajectories([_trajectory_chunk({10: (0, 4), 20: (1, 5), 11: (2, 3), 21: (3, 6)})], budget=11)
    key = [(c.props["traj"], c.props["step"]) for c in out]
    assert [(c.props["traj"], c.props["step"]) for c in one] == key
    # Without a budget (the reference minima) everything is kept.
    assert len(gather_trajectories([a, b])) == 4 + 3 + 5 + 6 + 4
    with pytest.raises(ProvenanceError):
        gather_trajectories([a, _trajectory_chunk({30: (4, 1)}, PSI4_191)], budget=11)


def test_whole_trajectories_run_past_the_budget_but_start_no_new_one(oracle, converged):
    water_extra = sum(1 for c in converged if c.props["traj"] == 0 and c.props["step"] >= 1)
    ds = _dataset(WATER, METHANOL)
    out = oracle_trajectories(oracle, ds, fmax=FMAX, max_steps=40, budget=2, whole_trajectories=True)
    water = [c for c in out if c.props["traj"] == 0]
    assert len(water) == water_extra + 1 and water[-1].props["end"] == "converged"  # not cut at 2
    assert {c.props["traj"] for c in out} == {0}  # methanol never started: the share was spent
    assert {c.props["rank"] for c in out} == {0}
