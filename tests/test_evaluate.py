"""golf.evaluate: the test set from reference optimisations, MMFF rows, the per-step table."""

import numpy as np
import pytest

from golf import data, evaluate
from golf.oracle_optimize import END_CONVERGED, END_FAILED, END_LIMIT


def _frame(traj, step, energy, end, mid=0, status="ok"):
    xyz = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]]) * (1 + 0.01 * step)
    return data.Conformer(mid, traj, [8, 1, 1], xyz, energy=energy, forces=np.zeros((3, 3)), status=status,
                          props={"traj": traj, "step": step, "end": end})  # fmt: skip


def _reference():
    ref = data.Dataset({0: data.Molecule(0, "O", "water", split="test")})
    # traj 0 converged, traj 1 stopped at the step limit, traj 2 ended on an oracle failure
    for traj, end in ((0, END_CONVERGED), (1, END_LIMIT), (2, END_FAILED)):
        ref.conformers += [_frame(traj, 0, -74.90, END_LIMIT), _frame(traj, 1, -74.95, end)]
    return ref


def test_only_converged_optimisations_are_references():
    starts, minima = evaluate.test_set(_reference())
    assert [c.props["traj"] for c in starts] == [0]
    assert set(minima) == {0} and minima[0].energy == pytest.approx(-74.95)
    assert all(c.props["step"] == 0 for c in starts)


def test_per_step_table_keeps_failed_labels():
    starts, minima = evaluate.test_set(_reference())
    frames = data.Dataset(dict(starts.molecules))
    frames.conformers = [_frame(0, 0, -74.90, 0), _frame(0, 5, -74.93, 0), _frame(0, 10, np.nan, 0, status="timeout")]
    for c in frames:
        c.props["nnp_energy"] = c.energy + 0.001 if np.isfinite(c.energy) else np.nan
        c.props["nnp_forces"] = np.full((3, 3), 0.01)
    table = evaluate.per_step_table("golf-1", frames, starts, minima)
    assert list(table["step"]) == [0, 5, 10]
    assert table["e_opt"].tolist() == pytest.approx([-74.95] * 3)
    assert table["dft_status"].tolist() == ["ok", "ok", "timeout"]
    assert np.isnan(table["e_dft"].iloc[2])  # failed, reported, not dropped
    assert table["force_err"].iloc[0] == pytest.approx(0.01)  # RMS of NNP - DFT forces
    assert np.isnan(table["force_err"].iloc[2])


def test_mmff_frames_start_and_minimum():
    starts, _ = evaluate.test_set(_reference())
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
    starts, minima = evaluate.test_set(_reference())
    frames = data.Dataset(dict(starts.molecules))
    frames.conformers = [_frame(0, 0, -74.90, 0), _frame(0, 5, -74.93, 0)]
    assert "protocol" in evaluate.COLUMNS
    assert set(evaluate.per_step_table("golf-1", frames, starts, minima)["protocol"]) == {"paper"}
    frames.attrs["protocol"] = "capped-0.02"  # as nnp_frames records it
    assert set(evaluate.per_step_table("golf-1", frames, starts, minima)["protocol"]) == {"capped-0.02"}
    assert set(evaluate.oracle_table(starts, minima, 10)["protocol"]) == {"paper"}


@pytest.fixture(scope="module")
def water_model():
    import torch

    from golf.nnp import build_model

    return build_model(["H", "O"], self_energies="zero", layer_dims=(8,), seed=0).to(torch.float32)


@pytest.mark.parametrize("max_displacement, protocol", [(None, "paper"), (0.01, "capped-0.01")])
def test_nnp_frames_run_exactly_t_steps(water_model, max_displacement, protocol):
    starts, _ = evaluate.test_set(_reference())
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
