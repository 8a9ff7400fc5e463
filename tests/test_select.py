"""golf.active.select: where a GOLF trajectory ends and which frame goes to the oracle (paper Alg. 1, §1.2)."""

import numpy as np
import pytest

from golf import data
from golf.active.select import (
    KnownConformations,
    SelectionError,
    select_conformation,
    select_from_trajectories,
    select_random_from_trajectories,
    trajectory_end,
)
from golf.data.dataset import Conformer, Dataset, Molecule

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
    """Three hand-made trajectories of water, as golf.active.explore stores them (frames interleaved)."""
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


def _beyond_end(trajectories: Dataset, steps: int = 3, skip=()) -> Dataset:
    """Frames past each trajectory's end, as golf.active.explore.continue_trajectories marks them."""
    frames = []
    for traj, traj_frames in _by_traj(trajectories).items():
        if traj in skip:
            continue
        last = max(traj_frames, key=lambda c: c.props["step"])
        for k in range(1, steps + 1):
            props = dict(last.props, step=last.props["step"] + k, mmff_energy=10.0, repaired=0, beyond_end=1)
            frames.append(Conformer(0, last.conformer_id, last.species, last.coordinates + 0.1 * k, props=props))
    return Dataset(dict(trajectories.molecules), frames, {"kind": "golf_trajectories_beyond_end"})


def _by_traj(ds) -> dict:
    out = {}
    for c in ds:
        out.setdefault(int(c.props["traj"]), []).append(c)
    return {t: sorted(v, key=lambda c: c.props["step"]) for t, v in out.items()}


def _picked(selection):
    return [c for c in selection if c.status == "unlabelled"]


def test_random_control_selects_from_the_same_trajectories_with_the_same_budget(tmp_path):
    data.write(tmp_path / "traj.h5", _long_trajectories())
    trajectories = data.read(tmp_path / "traj.h5")
    beyond = _beyond_end(trajectories)
    golf = select_from_trajectories(trajectories, mmff_threshold=300.0)
    control = select_random_from_trajectories(trajectories, seed=7, mmff_threshold=300.0, beyond_end=beyond)

    # Same budget: one row per trajectory, exactly GOLF's selected rows go to the oracle.
    assert len(control) == len(golf) == 30
    assert [c.status for c in control] == [c.status for c in golf]
    assert len(_picked(control)) == len(_picked(golf)) == 22
    # Each row is a frame of its own trajectory, GOLF's (beyond_end 0) or past its end (beyond_end 1).
    frames = {(c.props["traj"], c.props["step"]): c for c in [*trajectories, *beyond]}
    for row in control:
        frame = frames[row.props["traj"], row.props["step"]]
        assert row.props["start_row"] == frame.props["start_row"]
        np.testing.assert_array_equal(row.coordinates, frame.coordinates)
        assert row.props["beyond_end"] == int(row.props["step"] > 8)
        assert set(row.props) == {"traj", "step", "start_row", "round", "end_reason", "mmff_energy", "beyond_end"}
    steps = [c.props["step"] for c in _picked(control)]
    # Candidates: s_1..s_8 less the repaired (3) and threshold (5) frames, and s_9..s_11 past the end.
    assert set(steps) <= {1, 2, 4, 6, 7, 8, 9, 10, 11} and len(set(steps)) >= 5
    assert max(steps) > 8  # frames past GOLF's end are drawn
    assert steps != [c.props["step"] for c in _picked(golf)]
    assert control.attrs["kind"] == "random_selection"
    a = control.attrs
    assert (a["trajectories_selected"], a["candidates"], a["candidates_beyond_end"], a["picks"]) == (22, 198, 66, 22)
    assert a["picks_beyond_end"] == sum(s > 8 for s in steps)
    assert a["picks_start_frames"] == a["picks_known"] == a["fallback_picks"] == 0
    data.write(tmp_path / "random.h5", control)  # a valid dataset, attrs included
    assert data.read(tmp_path / "random.h5").attrs["candidates"] == 198


def test_random_control_never_picks_a_start_frame_or_a_known_conformation():
    # Rises at the first step: GOLF re-labels the start s_0; the control has s_1 and the frames past the end.
    specs = [(t, t, [5.0, 6.0], [0, 0], "mmff_rise") for t in range(12)]
    trajectories = _trajectories(specs)
    beyond = _beyond_end(trajectories, steps=2)
    by_traj = _by_traj(trajectories)
    d0 = [frames[0] for frames in by_traj.values()]  # the starts: D0 conformations
    # Earlier rounds' labels hold s_1 of every even trajectory and s_2 of trajectory 1 (within 1e-7 A).
    earlier = [by_traj[t][1] for t in range(0, 12, 2)]
    shifted = next(c for c in beyond if c.props["traj"] == 1 and c.props["step"] == 2)
    earlier.append(Conformer(0, 0, shifted.species, shifted.coordinates + 1e-7))
    golf = select_from_trajectories(trajectories)
    assert {c.props["step"] for c in _picked(golf)} == {0}  # GOLF's rule picks the start frames
    known = KnownConformations([*d0, *earlier])
    for seed in range(20):
        control = select_random_from_trajectories(trajectories, seed=seed, beyond_end=beyond, known=[d0, earlier])
        picked = _picked(control)
        assert len(picked) == len(_picked(golf)) == 12  # same budget
        assert all(c.props["step"] >= 1 for c in picked)
        assert not any(c in known for c in picked)
        assert control.attrs["picks_start_frames"] == control.attrs["picks_known"] == 0
        assert control.attrs["candidates"] == 12 * 3 - 6 - 1
        assert control.attrs["known_conformations"] == 12 + 7


def test_known_conformations_match_within_the_cache_rounding():
    c = _trajectories().conformers[0]
    known = KnownConformations([c])
    assert Conformer(0, 0, c.species, c.coordinates + 0.9e-6) in known
    assert Conformer(0, 0, c.species, c.coordinates + 2e-6) not in known
    assert Conformer(0, 0, c.species[::-1], c.coordinates) not in known  # other species
    assert Conformer(0, 0, c.species, np.full_like(c.coordinates, np.nan)) not in known


def test_a_trajectory_without_candidates_draws_from_the_others_and_none_at_all_is_an_error():
    specs = [(t, t, [5.0, 6.0], [0, 0], "mmff_rise") for t in range(3)]
    trajectories = _trajectories(specs)
    beyond = _beyond_end(trajectories, steps=2, skip={1})
    known = [_by_traj(trajectories)[1][1]]  # trajectory 1's only candidate is known
    control = select_random_from_trajectories(trajectories, seed=0, beyond_end=beyond, known=[known])
    assert len(_picked(control)) == 3 and control.attrs["fallback_picks"] == 1
    assert control.attrs["picks_known"] == 0
    picked = [(c.props["traj"], c.props["step"]) for c in _picked(control)]
    assert len(set(picked)) == 3 and 1 not in {t for t, _ in picked}  # no conformation twice
    with pytest.raises(SelectionError, match="no frame"):
        select_random_from_trajectories(trajectories, seed=0, known=[[c for c in trajectories]])


def test_random_control_is_reproducible_and_seeded():
    trajectories = _long_trajectories()
    beyond = _beyond_end(trajectories)

    def steps(seed):
        return [c.props["step"] for c in select_random_from_trajectories(trajectories, seed=seed, beyond_end=beyond)]

    assert steps(1) == steps(1)
    assert steps(1) != steps(2)


def test_golf_selection_ignores_the_control_and_frames_past_the_end(tmp_path):
    trajectories = _long_trajectories()
    data.write(tmp_path / "traj.h5", trajectories)
    before = select_from_trajectories(data.read(tmp_path / "traj.h5"))
    select_random_from_trajectories(trajectories, seed=3, beyond_end=_beyond_end(trajectories))
    after = select_from_trajectories(trajectories)
    assert [(c.status, c.props) for c in before] == [(c.status, c.props) for c in after]
    assert all("beyond_end" not in c.props for c in after)
