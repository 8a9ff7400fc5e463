"""golf.study.evaluate: the test set from reference optimisations, MMFF rows, the per-step table."""

import numpy as np
import pytest

from golf import data
from golf.study import evaluate


def _frame(traj, step, energy, end=None, mid=0, status="ok"):
    xyz = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]]) * (1 + 0.01 * step)
    props = {"traj": traj, "step": step} | ({"end": end} if end else {})
    return data.Conformer(mid, traj, [8, 1, 1], xyz, energy=energy, forces=np.zeros((3, 3)), status=status,
                          props=props)  # fmt: skip


def _reference():
    ref = data.Dataset({0: data.Molecule(0, "O", "water", split="test")})
    # traj 0 converged, traj 1 stopped at the step limit, traj 2 ended on an oracle failure
    for traj, end in ((0, "converged"), (1, "step_limit"), (2, "failed")):
        ref.conformers += [_frame(traj, 0, -74.90), _frame(traj, 1, -74.95 - 0.01 * traj, end)]
    ref.conformers[-1].status = "scf_not_converged"  # the failed step has no label
    return ref


def _test_set():
    return evaluate.evaluable(evaluate.reference_test_set(_reference()))


def test_reference_test_set_has_one_row_per_start_with_its_minimum(tmp_path):
    data.write(tmp_path / "test_set.h5", evaluate.reference_test_set(_reference()))
    rows = data.read(tmp_path / "test_set.h5")  # the file evaluation and the report read
    assert [c.props["traj"] for c in rows] == [0, 1, 2]
    assert [c.props["end"] for c in rows] == ["converged", "step_limit", "failed"]
    assert [c.energy for c in rows] == pytest.approx([-74.90] * 3)  # E_start
    # e_opt: the last labelled frame (traj 2's failed step has none: its start is the last)
    assert [c.props["e_opt"] for c in rows] == pytest.approx([-74.95, -74.96, -74.90])
    np.testing.assert_allclose(rows.conformers[0].props["opt_coordinates"], _frame(0, 1, 0).coordinates)
    np.testing.assert_allclose(rows.conformers[0].coordinates, _frame(0, 0, 0).coordinates)  # the start
    assert [c.props["reference_frames"] for c in rows] == [2, 2, 2]


def test_train_rmsd_goes_from_the_reference_start_to_the_tables(tmp_path):
    ref = _reference()
    ref.conformers[0].props["train_rmsd"] = 0.42  # frame 0 of traj 0 (golf.oracle.trajectories keeps it there)
    ref.conformers[2].props["train_rmsd"] = 0.35  # traj 1, which does not converge
    data.write(tmp_path / "test_set.h5", evaluate.reference_test_set(ref))
    rows = data.read(tmp_path / "test_set.h5")
    assert [evaluate.train_rmsd(c) for c in rows] == pytest.approx([0.42, 0.35, np.nan], nan_ok=True)
    starts = evaluate.evaluable(rows)
    frames = data.Dataset(dict(starts.molecules), [_frame(0, 0, -74.90), _frame(0, 5, -74.93)])
    assert evaluate.per_step_table("golf-1", frames, starts)["train_rmsd"].tolist() == pytest.approx([0.42] * 2)
    assert evaluate.oracle_table(starts, 5)["train_rmsd"].tolist() == pytest.approx([0.42] * 2)
    # a test set without it (imported, or made before it was recorded): no column
    plain = _test_set()
    assert "train_rmsd" not in evaluate.per_step_table("golf-1", frames, plain).columns
    assert "train_rmsd" not in evaluate.oracle_table(plain, 5).columns
    known = data.Dataset({0: data.Molecule(0, "O", "water", split="test")}, [_frame(0, 0, -74.90)])
    known.conformers[0].props |= {"e_opt": -74.95, "train_rmsd": 0.5}
    assert evaluate.train_rmsd(evaluate.known_minima_test_set(known).conformers[0]) == 0.5


def test_only_converged_optimisations_are_evaluated():
    rows = _test_set()
    assert [c.props["traj"] for c in rows] == [0]
    assert rows.conformers[0].props["e_opt"] == pytest.approx(-74.95)


def test_known_minima_test_set_needs_a_label_and_e_opt():
    test = data.Dataset({0: data.Molecule(0, "O", "water", split="test")}, [_frame(0, 0, -74.90), _frame(1, 0, -74.80)])
    test.conformers[0].props["e_opt"] = -74.95
    test.conformers[1].props["e_opt"] = -74.85
    rows = evaluate.known_minima_test_set(test)
    assert [(c.props["traj"], c.props["end"], c.props["e_opt"]) for c in rows] == [
        (0, "converged", -74.95), (1, "converged", -74.85)
    ]  # fmt: skip
    assert "opt_coordinates" not in rows.conformers[0].props  # an energy, no geometry
    test.conformers[1].props["e_opt"] = np.nan
    with pytest.raises(ValueError, match="row 1|conformation 1"):
        evaluate.known_minima_test_set(test)


def test_per_step_table_keeps_failed_labels():
    starts = _test_set()
    frames = data.Dataset(dict(starts.molecules))
    frames.conformers = [_frame(0, 0, -74.90), _frame(0, 5, -74.93), _frame(0, 10, np.nan, status="timeout")]
    for c in frames:
        c.props["nnp_energy"] = c.energy + 0.001 if np.isfinite(c.energy) else np.nan
        c.props["nnp_forces"] = np.full((3, 3), 0.01)
    table = evaluate.per_step_table("golf-1", frames, starts)
    assert list(table["step"]) == [0, 5, 10]
    assert table["e_opt"].tolist() == pytest.approx([-74.95] * 3)
    assert table["dft_status"].tolist() == ["ok", "ok", "timeout"]
    assert np.isnan(table["e_dft"].iloc[2])  # failed, reported, not dropped
    assert table["force_err"].iloc[0] == pytest.approx(0.01)  # RMS of NNP - DFT forces
    assert np.isnan(table["force_err"].iloc[2])


def test_mmff_frames_start_and_minimum():
    starts = _test_set()
    frames = evaluate.mmff_frames(starts, timelimit=100)
    assert [c.props["step"] for c in frames] == [0, 100]
    oh = np.linalg.norm(frames.conformers[1].coordinates[1] - frames.conformers[1].coordinates[0])
    assert 0.94 < oh < 0.99  # MMFF's O-H bond, not the start's


def test_protocol_names():
    assert evaluate.protocol_name(None) == "paper"
    assert evaluate.protocol_name(0.02) == "capped-0.02"
    with pytest.raises(ValueError, match="max_displacement"):
        evaluate.protocol_name(0.0)


def test_per_step_table_protocol_column():
    starts = _test_set()
    frames = data.Dataset(dict(starts.molecules))
    frames.conformers = [_frame(0, 0, -74.90), _frame(0, 5, -74.93)]
    assert "protocol" in evaluate.COLUMNS
    assert set(evaluate.per_step_table("golf-1", frames, starts)["protocol"]) == {"paper"}
    frames.attrs["protocol"] = "capped-0.02"  # as nnp_frames records it
    assert set(evaluate.per_step_table("golf-1", frames, starts)["protocol"]) == {"capped-0.02"}
    assert set(evaluate.oracle_table(starts, 10)["protocol"]) == {"paper"}


@pytest.fixture(scope="module")
def water_model():
    import torch

    from golf.nnp.model import build_model

    return build_model(["H", "O"], self_energies="zero", layer_dims=(8,), seed=0).to(torch.float32)


@pytest.mark.parametrize("max_displacement, protocol", [(None, "paper"), (0.01, "capped-0.01")])
def test_nnp_frames_run_exactly_t_steps(water_model, max_displacement, protocol):
    starts = _test_set()
    frames = evaluate.nnp_frames(water_model, starts, timelimit=6, steps=[3, 6], batch_size=4,
                                 max_displacement=max_displacement)  # fmt: skip
    assert frames.attrs["protocol"] == protocol
    assert [c.props["step"] for c in frames] == [0, 3, 6]
    assert [c.status for c in frames] == ["unlabelled"] * 3
    np.testing.assert_array_equal(frames.conformers[0].coordinates, starts.conformers[0].coordinates)
    moved = np.abs(frames.conformers[2].coordinates - starts.conformers[0].coordinates).max()
    assert moved > 0
    if max_displacement is not None:
        per_atom = np.linalg.norm(frames.conformers[2].coordinates - starts.conformers[0].coordinates, axis=1)
        assert per_atom.max() <= 6 * max_displacement + 1e-9
