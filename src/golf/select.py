"""Which conformation of a GOLF trajectory goes to the oracle (paper Alg. 1; golf-paper.md §1.2).

A trajectory s_0, s_1, ..., s_n ends at the first step whose MMFF energy rises (E_n > E_{n-1}),
at the time limit T (n = T), or when the NNP step gives non-finite positions. The conformation
sent to the oracle is the one *before* the last step, s_{n-1}: a pair (s_{n-1}, s_n) with an
energy rise means the NNP's forces were wrong at s_{n-1}. At the time limit the authors' code also
takes the conformation before the last step (s_99 for T = 100); so do we. A rise at the first step
re-labels the start conformation s_0.

Skips, recorded with their reason (the authors' code; not in the paper):
- MMFF energy of the post-step conformation s_n at or above the threshold (300 kcal/mol): the
  code tests s_n although s_{n-1} would be labelled; we follow the code.
- the chosen conformation had close atoms pushed apart by the optimiser's repair;
- non-finite positions or energies.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from golf.data import Conformer, Dataset

# Why a trajectory ended; stored as codes in HDF5 (position in this tuple).
END_REASONS = ("mmff_rise", "timelimit", "nonfinite")


@dataclass(frozen=True)
class Selection:
    index: int | None  # frame sent to the oracle, or None when skipped
    status: str  # "unlabelled" when selected, else a golf.data status naming the skip
    end_reason: str


def trajectory_end(mmff_energies: list[float], finite: bool, timelimit: int) -> str | None:
    """Why a trajectory with these MMFF energies (E_0..E_n) has ended, or None if it goes on."""
    if not finite:
        return "nonfinite"
    n = len(mmff_energies) - 1
    if n >= 1 and mmff_energies[n] > mmff_energies[n - 1]:
        return "mmff_rise"
    if n >= timelimit:
        return "timelimit"
    return None


def select_conformation(
    mmff_energies: list[float] | np.ndarray,
    repaired: list[bool] | np.ndarray,
    end_reason: str,
    mmff_threshold: float = 300.0,
) -> Selection:
    """The frame of an ended trajectory that goes to the oracle, or the reason it is skipped.

    Args:
        mmff_energies: E_MMFF(s_0..s_n) in kcal/mol (frames of the trajectory, start included).
        repaired: per frame, whether close atoms were pushed apart.
        end_reason: one of END_REASONS.
        mmff_threshold: kcal/mol; a post-step energy at or above it skips the trajectory.
    """
    n = len(mmff_energies) - 1
    if end_reason == "nonfinite" or n < 1:
        return Selection(None, "skipped_nonfinite", end_reason)
    last = float(mmff_energies[n])
    if not math.isfinite(last) or last >= mmff_threshold:
        return Selection(None, "skipped_mmff_high", end_reason)
    index = n - 1
    if repaired[index]:
        return Selection(None, "skipped_repaired", end_reason)
    return Selection(index, "unlabelled", end_reason)


_KEEP = ("traj", "step", "start_row", "round", "end_reason", "mmff_energy")


def _ended_trajectories(trajectories: Dataset):
    """(frames sorted by step, end reason) of every trajectory, in trajectory order."""
    by_traj: dict[int, list[Conformer]] = defaultdict(list)
    for c in trajectories.conformers:
        by_traj[int(c.props["traj"])].append(c)
    for traj in sorted(by_traj):
        frames = sorted(by_traj[traj], key=lambda c: c.props["step"])
        yield frames, frames[-1].props["end_reason"]


def _golf_selection(frames: list[Conformer], end: str, mmff_threshold: float) -> Selection:
    mmff = [c.props["mmff_energy"] for c in frames]
    repaired = [bool(c.props["repaired"]) for c in frames]
    return select_conformation(mmff, repaired, end, mmff_threshold)


def _row(chosen: Conformer, status: str) -> Conformer:
    return Conformer(
        chosen.molecule_id,
        chosen.conformer_id,
        chosen.species,
        chosen.coordinates,
        status=status,
        props={k: chosen.props[k] for k in _KEEP},
    )


def select_from_trajectories(trajectories: Dataset, mmff_threshold: float = 300.0) -> Dataset:
    """One row per trajectory of a GOLF round: the chosen conformation (status "unlabelled", to be
    labelled) or the trajectory's last conformation with the skip status, so that every
    trajectory is accounted for. Rows carry ``traj``, ``step``, ``start_row``, ``round``,
    ``end_reason`` and ``mmff_energy``.
    """
    out = Dataset(dict(trajectories.molecules), [], {"kind": "golf_selection"})
    for frames, end in _ended_trajectories(trajectories):
        selection = _golf_selection(frames, end, mmff_threshold)
        chosen = frames[selection.index if selection.index is not None else -1]
        out.conformers.append(_row(chosen, selection.status))
    return out


def select_random_from_trajectories(trajectories: Dataset, seed: int, mmff_threshold: float = 300.0) -> Dataset:
    """The random-selection control (a control the paper lacks): like
    :func:`select_from_trajectories`, but a selected trajectory sends a uniformly random frame of
    s_0..s_{n-1} to the oracle instead of the frame before the first MMFF rise.

    Same budget: exactly the trajectories GOLF's rule selects are selected (the others get GOLF's
    skip row), so both send as many conformations to the oracle. The random frame is drawn among
    the candidates GOLF's rule could pick, s_0..s_{n-1}, less those it would never label (close
    atoms repaired, non-finite positions, MMFF energy not below the threshold); GOLF's own pick
    is always a candidate. Rows carry the same properties; ``seed`` makes the draw reproducible.
    """
    rng = np.random.default_rng(seed)
    out = Dataset(dict(trajectories.molecules), [], {"kind": "random_selection", "seed": int(seed)})
    for frames, end in _ended_trajectories(trajectories):
        selection = _golf_selection(frames, end, mmff_threshold)
        if selection.index is None:
            out.conformers.append(_row(frames[-1], selection.status))
            continue
        candidates = [
            i
            for i, c in enumerate(frames[: len(frames) - 1])
            if i == selection.index
            or (
                not c.props["repaired"]
                and math.isfinite(c.props["mmff_energy"])
                and c.props["mmff_energy"] < mmff_threshold
                and np.isfinite(c.coordinates).all()
            )
        ]
        out.conformers.append(_row(frames[candidates[int(rng.integers(len(candidates)))]], "unlabelled"))
    return out
