"""A GOLF round's trajectories: NNP-driven L-BFGS from D0 conformations, MMFF checked every step
(paper Alg. 1, batched as in the authors' code; golf-paper.md §1.2).

``parallel`` trajectories run in one :class:`golf.optim.lbfgs.BatchedLBFGS` batch. After every step
the MMFF energy of each new geometry is computed; a trajectory ends at its first MMFF energy rise,
at the time limit T, or on non-finite positions (:func:`golf.active.select.trajectory_end`), and its slot
is refilled with a new start conformation at once. The round stops when ``n_candidates``
trajectories have ended with a conformation the selection rule accepts; trajectories still
running then are dropped (the authors' code carries them over to its next batch; file-level
rounds cannot).

Start conformations are drawn uniformly from D0's labelled conformations, without replacement
until D0 is used up (the code's behaviour; Alg. 1 says "s ~ D", the code samples D0 only).

:func:`continue_trajectories` runs trajectories of a finished round on past their end, for the
random-selection control (golf.active.select); the round's own file and GOLF's selection never see it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from golf.active.select import KNOWN_TOLERANCE, select_conformation, trajectory_end
from golf.chem.mmff import SurrogateError, SurrogatePool
from golf.data.dataset import Conformer, Dataset
from golf.optim.lbfgs import BatchedLBFGS, run_stream

log = logging.getLogger(__name__)


@dataclass
class _Running:
    traj: int
    start_row: int
    start: Conformer
    positions: list = field(default_factory=list)
    nnp_energies: list = field(default_factory=list)
    nnp_forces: list = field(default_factory=list)
    mmff: list = field(default_factory=list)
    repaired: list = field(default_factory=list)


def _start_order(n: int, rng: np.random.Generator):
    """Indices 0..n-1 in random order, again and again (no replacement within a pass)."""
    while True:
        yield from rng.permutation(n).tolist()


def start_pool(d0: Dataset, surrogates: SurrogatePool, exclude=None) -> Dataset:
    """Labelled D0 conformations that are not excluded (a predicate on conformers) of molecules
    MMFF can handle (a molecule without MMFF parameters is left out and logged, not a failed
    round)."""
    usable = {}
    for mid, mol in d0.molecules.items():
        try:
            surrogates[mol.smiles]
            usable[mid] = True
        except SurrogateError as err:
            log.warning("molecule %d (%s) is not used as a GOLF start: %s", mid, mol.smiles, err)
    starts = d0.subset([c.labelled and c.molecule_id in usable and not (exclude and exclude(c)) for c in d0.conformers])
    if not len(starts):
        raise ValueError("D0 has no labelled conformation to start GOLF trajectories from")
    return starts


def run_golf_trajectories(
    model,
    d0: Dataset,
    *,
    n_candidates: int,
    parallel: int,
    timelimit: int,
    mmff_threshold: float,
    seed: int,
    round_index: int = 0,
    max_displacement: float | None = None,
    max_trajectories: int | None = None,
    exclude=None,
    progress: bool = True,
) -> Dataset:
    """Trajectories of one GOLF round, every frame kept (positions, NNP energy/forces, MMFF).

    Args:
        model: a :class:`golf.nnp.model.NNP`; the optimiser runs on its device.
        d0: the initial dataset; labelled conformations are the start pool.
        n_candidates: accepted trajectories to collect (the round's oracle calls).
        parallel: trajectories in the batch at once (the paper's n_parallel).
        timelimit: steps T after which a trajectory ends (T_train = 100).
        mmff_threshold: kcal/mol, see :func:`golf.active.select.select_conformation`.
        seed: seeds the start-conformation sampling.
        max_trajectories: safety stop (default 50 x n_candidates) when almost nothing is accepted.
        exclude: a predicate on D0 conformers never started from (training's validation
            conformations: their labels would not be trained on, yet would count as oracle calls).

    Frames are conformers with props ``traj``, ``step`` (0 = start), ``start_row`` (row in the
    start pool), ``round``, ``nnp_energy`` (Hartree), ``nnp_forces`` (Hartree/Angstrom),
    ``mmff_energy`` (kcal/mol), ``repaired`` (0/1) and ``end_reason`` (one of END_REASONS).
    """
    surrogates = SurrogatePool()
    starts = start_pool(d0, surrogates, exclude)
    max_trajectories = max_trajectories or 50 * n_candidates
    order = _start_order(len(starts), np.random.default_rng(seed))

    # float64 optimiser state (the default): a trajectory must not depend on its batch (golf.optim.lbfgs)
    opt = BatchedLBFGS(
        model.energies_forces, batch_size=parallel, max_displacement=max_displacement, device=model.device
    )
    running: dict[int, _Running] = {}  # traj -> its frames so far
    out = Dataset(dict(starts.molecules), [], {"kind": "golf_trajectories"})
    counts = {"accepted": 0, "ended": 0, "started": 0}
    timing = {"nnp_s": 0.0, "mmff_s": 0.0}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_candidates, desc=f"round {round_index} candidates", unit="conf")

    def new_starts():
        # max_trajectories stops new starts only: trajectories already running still run to their end.
        while counts["started"] < max_trajectories:
            row = next(order)
            start = starts.conformers[row]
            t0 = time.perf_counter()
            e0 = surrogates[starts.smiles(start)].energy(start.coordinates)
            timing["mmff_s"] += time.perf_counter() - t0
            traj = counts["started"]
            running[traj] = _Running(traj, row, start, [start.coordinates], [np.nan], [None], [e0], [False])
            counts["started"] += 1
            yield traj, start.species, start.coordinates

    def on_step(result) -> list[bool]:
        ended = []
        for i, key in enumerate(result.keys):
            traj = running[key]
            if result.started[i]:
                traj.nnp_energies[0] = float(result.start_energies[i])
                traj.nnp_forces[0] = result.start_forces[i, : len(traj.start.species)].numpy().astype(np.float64)
            positions = result.positions_of(i).astype(np.float64)
            finite = result.status[i] != "skipped_nonfinite" and bool(np.isfinite(positions).all())
            t0 = time.perf_counter()
            mmff = surrogates[starts.smiles(traj.start)].energy(positions) if finite else float("inf")
            timing["mmff_s"] += time.perf_counter() - t0
            traj.positions.append(positions)
            traj.nnp_energies.append(float(result.energies[i]))
            traj.nnp_forces.append(result.forces_of(i).astype(np.float64))
            traj.mmff.append(mmff)
            traj.repaired.append(bool(result.repaired[i]))

            end = trajectory_end(traj.mmff, finite, timelimit)
            if end is None and result.status[i] == "converged":
                end = "timelimit"  # L-BFGS has nothing left to do: as if it idled until T
            ended.append(end is not None)
            if end is None:
                continue
            del running[key]
            counts["ended"] += 1
            if counts["accepted"] >= n_candidates:
                continue  # the quota filled earlier in this step; extra candidates are dropped
            selection = select_conformation(traj.mmff, traj.repaired, end, mmff_threshold)
            if selection.index is not None:
                counts["accepted"] += 1
                if bar is not None:
                    bar.update(1)
            out.conformers.extend(_frames(traj, end, round_index))
        return ended

    t_round = time.perf_counter()
    run_stream(opt, new_starts(), on_step, stop=lambda: counts["accepted"] >= n_candidates)
    timing["nnp_s"] = time.perf_counter() - t_round - timing["mmff_s"]  # the optimiser and its model calls
    accepted, ended, next_traj = counts["accepted"], counts["ended"], counts["started"]
    if bar is not None:
        bar.close()
    if accepted < n_candidates:
        log.warning(
            "round %d: only %d of %d candidates after %d trajectories", round_index, accepted, n_candidates, next_traj
        )
    out.attrs.update(
        round=round_index,
        candidates=accepted,
        trajectories_ended=ended,
        trajectories_dropped=len(running),
        nnp_seconds=timing["nnp_s"],
        mmff_seconds=timing["mmff_s"],
    )
    log.info(
        "round %d: %d candidates from %d ended trajectories; NNP %.1f s, MMFF %.2f s",
        round_index,
        accepted,
        ended,
        timing["nnp_s"],
        timing["mmff_s"],
    )
    return out


def _frames(
    traj: _Running, end: str, round_index: int, first_step: int = 0, marks: dict | None = None
) -> list[Conformer]:
    """The trajectory's frames as conformers, numbered from ``first_step``, with ``marks`` added
    to every frame's properties."""
    start = traj.start
    nan_forces = np.full((len(start.species), 3), np.nan)
    frames = []
    for step, positions in enumerate(traj.positions):
        forces = traj.nnp_forces[step]
        frames.append(
            Conformer(
                start.molecule_id,
                start.conformer_id,
                start.species,
                positions,
                status="unlabelled",
                props={
                    "traj": traj.traj,
                    "step": first_step + step,
                    "start_row": traj.start_row,
                    "round": round_index,
                    "nnp_energy": traj.nnp_energies[step],
                    "nnp_forces": nan_forces if forces is None else forces,
                    "mmff_energy": traj.mmff[step],
                    "repaired": int(traj.repaired[step]),
                    "end_reason": end,
                }
                | (marks or {}),
            )
        )
    return frames


def continue_trajectories(
    model,
    trajectories: Dataset,
    trajs,
    *,
    parallel: int,
    timelimit: int,
    max_displacement: float | None = None,
    progress: bool = True,
) -> Dataset:
    """The frames of GOLF trajectories past their end, for the random-selection control.

    A GOLF trajectory ends at its first MMFF rise; the control draws from the whole NNP
    trajectory instead, s_0..s_T as it would have run without the MMFF stop. Each trajectory in
    ``trajs`` (ids of ``trajectories``, the round's file) is run again from its start frame with
    GOLF's optimiser and the round's model, with no MMFF stop: to the time limit T, non-finite
    positions or L-BFGS convergence, as :func:`run_golf_trajectories` ends them otherwise, or
    when a step leaves the conformation where it was (no atom moves more than
    :data:`golf.active.select.KNOWN_TOLERANCE`): L-BFGS has stalled at the NNP's stationary point and
    every later frame would be that conformation again (measured: once stalled, no trajectory
    moved again), so the repeat is not kept and the trajectory ends as if it idled until T.

    Why a rerun from the start: the round keeps no L-BFGS state, and continuing trajectories inside
    the round would hold their slots, change which starts run together and so change GOLF's own
    trajectories. A rerun repeats the stored steps up to the model's float32 round-off in another
    batch (``attrs["rerun_max_deviation"]``, Angstrom, over the stored steps) and then continues
    with the same optimiser history, so the continuation is that of the same trajectory.

    Returns only the frames after each trajectory's last stored step, with the props of
    :func:`run_golf_trajectories` (``end_reason`` is the continuation's own end) and
    ``beyond_end`` = 1. Nothing of the round's file changes.
    """
    stored: dict[int, list[Conformer]] = {}
    for c in trajectories:
        stored.setdefault(int(c.props["traj"]), []).append(c)
    trajs = sorted(set(int(t) for t in trajs))
    missing = [t for t in trajs if t not in stored]
    if missing:
        raise ValueError(f"no trajectory {missing} in the round's trajectories")
    for t in trajs:
        stored[t].sort(key=lambda c: c.props["step"])

    surrogates = SurrogatePool()
    opt = BatchedLBFGS(
        model.energies_forces, batch_size=parallel, max_displacement=max_displacement, device=model.device
    )
    running: dict[int, _Running] = {}  # traj -> its frames past the stored end
    steps: dict[int, int] = {}  # traj -> steps the rerun has made
    previous: dict[int, np.ndarray] = {}  # traj -> the rerun's positions after its last step
    out = Dataset(dict(trajectories.molecules), [], {"kind": "golf_trajectories_beyond_end"})
    deviation = 0.0  # largest |x_rerun - x_stored| over the stored steps (Angstrom)
    mmff_s = 0.0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(trajs), desc="trajectories past their end", unit="traj")

    def starts():
        for t in trajs:
            start = stored[t][0]
            running[t], steps[t] = _Running(t, int(start.props["start_row"]), start), 0
            previous[t] = start.coordinates
            yield t, start.species, start.coordinates

    def on_step(result) -> list[bool]:
        nonlocal deviation, mmff_s
        ended = []
        for i, t in enumerate(result.keys):
            traj, frames = running[t], stored[t]
            steps[t] += 1
            step, last = steps[t], int(frames[-1].props["step"])
            positions = result.positions_of(i).astype(np.float64)
            finite = result.status[i] != "skipped_nonfinite" and bool(np.isfinite(positions).all())
            stalled = finite and step > last and float(np.abs(positions - previous[t]).max()) <= KNOWN_TOLERANCE
            previous[t] = positions
            if step <= last:  # a stored step: only compared, GOLF's own frame stays the record
                if finite:
                    deviation = max(deviation, float(np.abs(positions - frames[step].coordinates).max()))
            elif not stalled:
                t0 = time.perf_counter()
                mmff = surrogates[trajectories.smiles(traj.start)].energy(positions) if finite else float("inf")
                mmff_s += time.perf_counter() - t0
                traj.positions.append(positions)
                traj.nnp_energies.append(float(result.energies[i]))
                traj.nnp_forces.append(result.forces_of(i).astype(np.float64))
                traj.mmff.append(mmff)
                traj.repaired.append(bool(result.repaired[i]))
            end = None
            if not finite:
                end = "nonfinite"
            elif step >= timelimit or result.status[i] == "converged" or stalled:
                end = "timelimit"  # converged or stalled: as if it idled until T (run_golf_trajectories)
            ended.append(end is not None)
            if end is None:
                continue
            del running[t]
            out.conformers.extend(_frames_beyond(traj, end, last + 1, int(frames[0].props["round"])))
            if bar is not None:
                bar.update(1)
        return ended

    t_run = time.perf_counter()
    run_stream(opt, starts(), on_step)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t_run
    out.attrs.update(
        trajectories=len(trajs),
        frames=len(out),
        rerun_max_deviation=deviation,
        nnp_seconds=seconds - mmff_s,
        mmff_seconds=mmff_s,
    )
    # L-BFGS at lr 1 amplifies the model's float32 round-off: ~1e-3 Angstrom over a few steps is usual.
    if deviation > 1e-2:
        log.warning("the rerun left GOLF's stored steps by up to %.2g Angstrom", deviation)
    log.info(
        "%d trajectories continued past their end: %d frames; rerun deviation %.2g A; NNP %.1f s, MMFF %.2f s",
        len(trajs),
        len(out),
        deviation,
        seconds - mmff_s,
        mmff_s,
    )
    return out


def _frames_beyond(traj: _Running, end: str, first_step: int, round_index: int) -> list[Conformer]:
    """The continuation's frames (steps first_step, first_step + 1, ...), marked ``beyond_end``."""
    return _frames(traj, end, round_index, first_step, {"beyond_end": 1})
