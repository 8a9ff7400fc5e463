"""golf.select: where a GOLF trajectory ends and which frame goes to the oracle (paper Alg. 1, §1.2)."""

import numpy as np
import pytest

from golf import data
from golf.data import Conformer, Dataset, Molecule
from golf.select import (
    select_conformation,
    select_from_trajectories,
    select_random_from_trajectories,
    trajectory_end,
)

T = 5


def _run(mmff, timelimit=T, finite=True):
    """Feed E_0, E_1, ... step by step, as the round does; return the end reason and frames seen."""
    for n in range(1, len(mmff)):
        end = trajectory_end(list(mmff[: n + 1]), finite, timelimit)
        if end is not None:
            return end, n + 1
    return None, len(mmff)


def test_rise_at_first_step_selects_the_start():
    mmff = [10.0, 12.0]
    end, frames = _run(mmff)
    assert (end, frames) == ("mmff_rise", 2)
    sel = select_conformation(mmff, [False, False], end)
    assert sel.index == 0 and sel.status == "unlabelled" and sel.end_reason == "mmff_rise"


def test_mid_trajectory_rise_selects_the_frame_before_the_step():
    mmff = [10.0, 8.0, 7.5, 7.0, 7.2, 1.0]
    end, frames = _run(mmff)
    assert (end, frames) == ("mmff_rise", 5)  # ends at the first rise, s_4 > s_3
    sel = select_conformation(mmff[:frames], [False] * frames, end)
    assert sel.index == 3  # n - 1 with n = 4


def test_equal_energy_is_not_a_rise():
    assert trajectory_end([5.0, 5.0], True, T) is None


def test_no_rise_until_the_time_limit():
    mmff = [10.0 - k for k in range(T + 3)]
    end, frames = _run(mmff)
    assert (end, frames) == ("timelimit", T + 1)  # s_0 .. s_T
    sel = select_conformation(mmff[:frames], [False] * frames, end)
    assert sel.index == T - 1
    assert trajectory_end(mmff[:T], True, T) is None  # one step short of T goes on


def test_rise_at_the_time_limit_counts_as_a_rise():
    mmff = [10.0, 9.0, 8.0, 9.0]
    assert trajectory_end(mmff, True, timelimit=3) == "mmff_rise"


def test_nonfinite():
    assert trajectory_end([1.0, float("inf")], False, T) == "nonfinite"
    assert trajectory_end([1.0], False, T) == "nonfinite"
    sel = select_conformation([1.0, float("inf")], [False, False], "nonfinite")
    assert sel.index is None and sel.status == "skipped_nonfinite"


@pytest.mark.parametrize("last", [300.0, 1e6, float("nan"), float("inf")])
def test_post_step_mmff_at_or_above_threshold_is_skipped(last):
    sel = select_conformation([50.0, 40.0, last], [False] * 3, "mmff_rise", mmff_threshold=300.0)
    assert sel.index is None and sel.status == "skipped_mmff_high"


def test_only_the_post_step_energy_is_checked_against_the_threshold():
    # s_{n-1} itself is high but s_n is below the threshold: the code's rule (post-step check) accepts
    sel = select_conformation([500.0, 299.0, 299.5], [False] * 3, "mmff_rise", mmff_threshold=300.0)
    assert sel.index == 1


def test_repaired_chosen_frame_is_skipped_other_repairs_do_not_matter():
    mmff = [10.0, 9.0, 8.0, 9.0]
    sel = select_conformation(mmff, [False, False, True, False], "mmff_rise")
    assert sel.index is None and sel.status == "skipped_repaired"
    sel = select_conformation(mmff, [False, True, False, True], "mmff_rise")
    assert sel.index == 2 and sel.status == "unlabelled"


def _trajectories(specs=None) -> Dataset:
    """Three hand-made trajectories of water, as golf.explore stores them (frames interleaved)."""
    z = [8, 1, 1]
    base = np.array([[0.0, 0.0, 0.12], [0.0, 0.76, -0.47], [0.0, -0.76, -0.47]])
    specs = specs or [
        # traj, start_row, MMFF energies, repaired, end reason
        (0, 4, [5.0, 4.0, 3.0, 3.5], [0, 0, 0, 0], "mmff_rise"),  # chosen: step 2
        (1, 0, [5.0, 4.0, 400.0], [0, 0, 0], "mmff_rise"),  # skipped: post-step MMFF high
        (2, 2, [5.0, 4.0, 3.0, 2.0], [0, 0, 1, 0], "timelimit"),  # chosen frame repaired
    ]
    frames = []
    for traj, start_row, mmff, repaired, end in specs:
        for step, (e, r) in enumerate(zip(mmff, repaired, strict=True)):
            frames.append(
                Conformer(
                    0,
                    start_row,
                    z,
                    base + 0.01 * step + traj,
                    props={
                        "traj": traj,
                        "step": step,
                        "start_row": start_row,
                        "round": 2,
                        "nnp_energy": -76.0 - 0.001 * step,
                        "mmff_energy": e,
                        "repaired": r,
                        "end_reason": end,
                    },
                )
            )
    order = np.random.default_rng(0).permutation(len(frames))  # file order must not matter
    return Dataset({0: Molecule(0, "O", "water")}, [frames[i] for i in order], {"kind": "golf_trajectories"})


def test_select_from_trajectories_one_row_per_trajectory(tmp_path):
    path = tmp_path / "traj.h5"
    data.write(path, _trajectories())
    selected = select_from_trajectories(data.read(path), mmff_threshold=300.0)

    assert len(selected) == 3
    assert [c.props["traj"] for c in selected] == [0, 1, 2]
    assert [c.status for c in selected] == ["unlabelled", "skipped_mmff_high", "skipped_repaired"]
    # the chosen frame of trajectory 0 is step 2; skipped trajectories report their last frame
    assert [c.props["step"] for c in selected] == [2, 2, 3]
    assert [c.props["start_row"] for c in selected] == [4, 0, 2]
    assert [c.props["mmff_energy"] for c in selected] == [3.0, 400.0, 2.0]
    assert [c.props["end_reason"] for c in selected] == ["mmff_rise", "mmff_rise", "timelimit"]
    assert all(c.props["round"] == 2 for c in selected)
    assert set(selected.conformers[0].props) == {"traj", "step", "start_row", "round", "end_reason", "mmff_energy"}
    expected = np.array([[0.0, 0.0, 0.12], [0.0, 0.76, -0.47], [0.0, -0.76, -0.47]]) + 0.02
    np.testing.assert_allclose(selected.conformers[0].coordinates, expected)
    assert all(np.isnan(c.energy) and c.forces is None for c in selected)  # to be labelled
    assert selected.molecules == {0: Molecule(0, "O", "water")}
    data.write(tmp_path / "selected.h5", selected)  # a valid dataset


def _long_trajectories() -> Dataset:
    """Thirty trajectories of 9 frames: MMFF falls then rises at the last step (GOLF picks step 7),
    with a repaired frame (step 3) and a frame at the MMFF threshold (step 5) the control must not
    pick; every fourth trajectory ends above the threshold and is skipped by both rules."""
    specs = []
    for traj in range(30):
        mmff = [20.0 - k for k in range(8)] + [500.0 if traj % 4 == 0 else 30.0]
        mmff[5] = 300.0
        repaired = [0, 0, 0, 1, 0, 0, 0, 0, 0]
        specs.append((traj, traj, mmff, repaired, "mmff_rise"))
    return _trajectories(specs)


def test_random_control_selects_from_the_same_trajectories_with_the_same_budget(tmp_path):
    data.write(tmp_path / "traj.h5", _long_trajectories())
    trajectories = data.read(tmp_path / "traj.h5")
    golf = select_from_trajectories(trajectories, mmff_threshold=300.0)
    control = select_random_from_trajectories(trajectories, seed=7, mmff_threshold=300.0)

    # Same budget: one row per trajectory, exactly GOLF's selected rows go to the oracle.
    assert len(control) == len(golf) == 30
    assert [c.status for c in control] == [c.status for c in golf]
    assert sum(c.status == "unlabelled" for c in control) == 22
    # Each selected row is a frame of its own trajectory (same start row, coordinates of that step).
    frames = {(c.props["traj"], c.props["step"]): c for c in trajectories}
    for row in control:
        frame = frames[row.props["traj"], row.props["step"]]
        assert row.props["start_row"] == frame.props["start_row"]
        np.testing.assert_array_equal(row.coordinates, frame.coordinates)
    steps = [c.props["step"] for c in control if c.status == "unlabelled"]
    # Candidates s_0..s_{n-1} less the repaired and threshold frames; random, not GOLF's rule.
    assert set(steps) <= {0, 1, 2, 4, 6, 7} and len(set(steps)) >= 4
    assert steps != [c.props["step"] for c in golf if c.status == "unlabelled"]
    assert control.attrs["kind"] == "random_selection"


def test_random_control_is_reproducible_and_seeded():
    trajectories = _long_trajectories()
    steps = {
        seed: [c.props["step"] for c in select_random_from_trajectories(trajectories, seed=seed)] for seed in (1, 2)
    }
    assert steps[1] == [c.props["step"] for c in select_random_from_trajectories(trajectories, seed=1)]
    assert steps[1] != steps[2]
