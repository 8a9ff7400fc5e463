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

The random-selection control (:func:`select_random_from_trajectories`, not in the paper) labels a
random frame of each trajectory GOLF selects instead, drawn from the whole NNP trajectory (the
frames past GOLF's end come from :func:`golf.active.explore.continue_trajectories`), never the start
frame nor a conformation the control's training data already holds.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from golf.data.dataset import Conformer, Dataset

# Why a trajectory ended; stored as codes in HDF5 (position in this tuple).
END_REASONS = ("mmff_rise", "timelimit", "nonfinite")


@dataclass(frozen=True)
class Selection:
    index: int | None  # frame sent to the oracle, or None when skipped
    status: str  # "unlabelled" when selected, else a golf.data.dataset status naming the skip
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


def _by_traj(frames) -> dict[int, list[Conformer]]:
    out: dict[int, list[Conformer]] = defaultdict(list)
    for c in frames:
        out[int(c.props["traj"])].append(c)
    return out


def _ended_trajectories(trajectories: Dataset):
    """(frames sorted by step, end reason) of every trajectory, in trajectory order."""
    by_traj = _by_traj(trajectories.conformers)
    for traj in sorted(by_traj):
        frames = sorted(by_traj[traj], key=lambda c: c.props["step"])
        yield frames, frames[-1].props["end_reason"]


def _golf_selection(frames: list[Conformer], end: str, mmff_threshold: float) -> Selection:
    mmff = [c.props["mmff_energy"] for c in frames]
    repaired = [bool(c.props["repaired"]) for c in frames]
    return select_conformation(mmff, repaired, end, mmff_threshold)


def _row(chosen: Conformer, status: str, **extra) -> Conformer:
    return Conformer(
        chosen.molecule_id,
        chosen.conformer_id,
        chosen.species,
        chosen.coordinates,
        status=status,
        props={k: chosen.props[k] for k in _KEEP} | extra,
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


class SelectionError(ValueError):
    """A round the random-selection control cannot draw from (no candidate frame at all)."""


# Coordinates within this (Angstrom, every coordinate) are the same conformation. The oracle cache
# keys coordinates rounded to 1e-6 Angstrom, so two conformations it would take for one (a cache
# hit: a call that adds nothing new) always match here.
KNOWN_TOLERANCE = 1e-6


class KnownConformations:
    """Conformations already labelled for an arm: same species, every coordinate within
    :data:`KNOWN_TOLERANCE`."""

    def __init__(self, conformers: Iterable[Conformer] = ()):
        self._by_species: dict[bytes, np.ndarray] = {}  # species bytes -> (k, n_atoms, 3)
        self.size = 0
        for c in conformers:
            self.add(c)

    def add(self, c: Conformer) -> None:
        key = np.asarray(c.species, dtype=np.int64).tobytes()
        xyz = np.asarray(c.coordinates, dtype=np.float64)[None]
        known = self._by_species.get(key)
        self._by_species[key] = xyz if known is None else np.concatenate([known, xyz])
        self.size += 1

    def __contains__(self, c: Conformer) -> bool:
        known = self._by_species.get(np.asarray(c.species, dtype=np.int64).tobytes())
        if known is None:
            return False
        return bool((np.abs(known - c.coordinates) <= KNOWN_TOLERANCE).all(axis=(1, 2)).any())


def _drawable(c: Conformer, mmff_threshold: float) -> bool:
    """A frame the oracle may get: GOLF's own filters (no repaired frame, finite positions, MMFF
    below the threshold), applied to the frame itself."""
    e = c.props["mmff_energy"]
    finite = math.isfinite(e) and bool(np.isfinite(c.coordinates).all())
    return not c.props["repaired"] and finite and e < mmff_threshold


def random_control_trajectories(trajectories: Dataset, mmff_threshold: float = 300.0) -> list[int]:
    """Trajectories whose random frame may lie past their stored end: those GOLF selects that
    ended at an MMFF rise (one that ran to T or converged is already whole)."""
    out = []
    for frames, end in _ended_trajectories(trajectories):
        if end == "mmff_rise" and _golf_selection(frames, end, mmff_threshold).index is not None:
            out.append(int(frames[0].props["traj"]))
    return out


def select_random_from_trajectories(
    trajectories: Dataset,
    seed: int,
    mmff_threshold: float = 300.0,
    *,
    beyond_end: Dataset | None = None,
    known: Iterable[Iterable[Conformer]] = (),
) -> Dataset:
    """The random-selection control (a control the paper lacks): like
    :func:`select_from_trajectories`, but a selected trajectory sends a uniformly random frame of
    its whole NNP trajectory to the oracle instead of the frame before the first MMFF rise.

    Same budget: exactly the trajectories GOLF's rule selects are selected (the others get GOLF's
    skip row), so both send as many conformations to the oracle.

    Candidates of a selected trajectory: its frames s_1..s_n in ``trajectories`` and those past
    its end in ``beyond_end`` (:func:`golf.active.explore.continue_trajectories`), less
    - the start frame s_0 (of any of the round's trajectories), a D0 conformation: labelling it
      again adds nothing;
    - frames GOLF would never label (close atoms repaired, non-finite, MMFF not below the
      threshold);
    - conformations in ``known``, datasets (or lists of conformers) of the arm's training data:
      D0 and its earlier rounds' labels, and those picked earlier in this round
      (:class:`KnownConformations`).
    A trajectory with no candidate left draws from the unpicked candidates of the round's other
    selected trajectories (``attrs["fallback_picks"]``), so the budget stays GOLF's.

    Rows carry GOLF's properties plus ``beyond_end`` (1: the frame lies past GOLF's end); attrs
    count the candidates and the picks that were start frames or known (0 by construction,
    counted again on the result). ``seed`` makes the draw reproducible.
    """
    rng = np.random.default_rng(seed)
    known_before = KnownConformations(c for conformers in known for c in conformers)
    taken = KnownConformations()  # this round's picks: no conformation twice
    beyond = _by_traj(beyond_end or [])

    ended = list(_ended_trajectories(trajectories))
    starts = KnownConformations(frames[0] for frames, _ in ended)  # D0 conformations, known or not
    rows: list[Conformer | None] = []  # one per trajectory; None: a selected one, drawn below
    pools: dict[int, list[Conformer]] = {}  # row -> the trajectory's candidates
    for frames, end in ended:
        selection = _golf_selection(frames, end, mmff_threshold)
        if selection.index is None:
            rows.append(_row(frames[-1], selection.status, beyond_end=0))
            continue
        last = frames[-1].props["step"]
        whole = frames + [c for c in beyond.get(int(frames[0].props["traj"]), []) if c.props["step"] > last]
        pools[len(rows)] = [
            c
            for c in whole
            if c.props["step"] >= 1 and _drawable(c, mmff_threshold) and c not in starts and c not in known_before
        ]
        rows.append(None)

    def draw(candidates: list[Conformer]) -> Conformer | None:
        free = [c for c in candidates if c not in taken]
        if not free:
            return None
        pick = free[int(rng.integers(len(free)))]
        taken.add(pick)
        return pick

    picks = {row: draw(candidates) for row, candidates in pools.items()}  # in trajectory order
    fallback = [row for row, pick in picks.items() if pick is None]
    everything = [c for candidates in pools.values() for c in candidates]
    for row in fallback:
        picks[row] = draw(everything)
        if picks[row] is None:
            raise SelectionError(
                f"no frame of the round's {len(pools)} selected trajectories may go to the oracle: each is a "
                "start frame, known, repaired, non-finite or at or above the MMFF threshold"
            )

    out = Dataset(dict(trajectories.molecules), [], {"kind": "random_selection", "seed": int(seed)})
    for row, skip in enumerate(rows):
        pick = picks.get(row)
        out.conformers.append(skip or _row(pick, "unlabelled", beyond_end=int(pick.props.get("beyond_end", 0))))
    chosen = list(picks.values())
    out.attrs.update(
        trajectories_selected=len(pools),
        candidates=len(everything),
        candidates_beyond_end=sum(int(c.props.get("beyond_end", 0)) for c in everything),
        picks=len(chosen),
        picks_beyond_end=sum(int(c.props.get("beyond_end", 0)) for c in chosen),
        # Counted again on the result, not assumed from the rule above: both must be 0.
        picks_start_frames=sum(c.props["step"] == 0 or c in starts for c in chosen),
        picks_known=sum(c in known_before for c in chosen),
        fallback_picks=len(fallback),
        known_conformations=known_before.size,
        known_tolerance=KNOWN_TOLERANCE,
    )
    return out
