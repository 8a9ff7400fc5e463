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


def select_from_trajectories(trajectories: Dataset, mmff_threshold: float = 300.0) -> Dataset:
    """One row per trajectory of a GOLF round: the chosen conformation (status "unlabelled", to be
    labelled) or the trajectory's last conformation with the skip status, so that every
    trajectory is accounted for. Rows carry ``traj``, ``step``, ``start_row``, ``round``,
    ``end_reason`` and ``mmff_energy``.
    """
    by_traj: dict[int, list[Conformer]] = defaultdict(list)
    for c in trajectories.conformers:
        by_traj[int(c.props["traj"])].append(c)
    out = Dataset(dict(trajectories.molecules), [], {"kind": "golf_selection"})
    for traj in sorted(by_traj):
        frames = sorted(by_traj[traj], key=lambda c: c.props["step"])
        end = END_REASONS[int(frames[-1].props["end_reason"])]
        mmff = [c.props["mmff_energy"] for c in frames]
        repaired = [bool(c.props["repaired"]) for c in frames]
        selection = select_conformation(mmff, repaired, end, mmff_threshold)
        chosen = frames[selection.index if selection.index is not None else -1]
        keep = ("traj", "step", "start_row", "round", "end_reason", "mmff_energy")
        out.conformers.append(
            Conformer(
                chosen.molecule_id,
                chosen.conformer_id,
                chosen.species,
                chosen.coordinates,
                status=selection.status,
                props={k: chosen.props[k] for k in keep},
            )
        )
    return out
