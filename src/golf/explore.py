"""A GOLF round's trajectories: NNP-driven L-BFGS from D0 conformations, MMFF checked every step
(paper Alg. 1, batched as in the authors' code; golf-paper.md §1.2).

``parallel`` trajectories run in one :class:`golf.optimize.BatchedLBFGS` batch. After every step
the MMFF energy of each new geometry is computed; a trajectory ends at its first MMFF energy rise,
at the time limit T, or on non-finite positions (:func:`golf.select.trajectory_end`), and its slot
is refilled with a new start conformation at once. The round stops when ``n_candidates``
trajectories have ended with a conformation the selection rule accepts; trajectories still
running then are dropped (the authors' code carries them over to its next batch; file-level
rounds cannot).

Start conformations are drawn uniformly from D0's labelled conformations, without replacement
until D0 is used up (the code's behaviour; Alg. 1 says "s ~ D", the code samples D0 only).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from golf.data import Conformer, Dataset
from golf.optimize import BatchedLBFGS, run_stream
from golf.select import select_conformation, trajectory_end
from golf.surrogate import SurrogateError, SurrogatePool

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
        model: a :class:`golf.nnp.NNP`; the optimiser runs on its device.
        d0: the initial dataset; labelled conformations are the start pool.
        n_candidates: accepted trajectories to collect (the round's oracle calls).
        parallel: trajectories in the batch at once (the paper's n_parallel).
        timelimit: steps T after which a trajectory ends (T_train = 100).
        mmff_threshold: kcal/mol, see :func:`golf.select.select_conformation`.
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

    # float64 optimiser state (the default): a trajectory must not depend on its batch (golf.optimize)
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


def _frames(traj: _Running, end: str, round_index: int) -> list[Conformer]:
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
                    "step": step,
                    "start_row": traj.start_row,
                    "round": round_index,
                    "nnp_energy": traj.nnp_energies[step],
                    "nnp_forces": nan_forces if forces is None else forces,
                    "mmff_energy": traj.mmff[step],
                    "repaired": int(traj.repaired[step]),
                    "end_reason": end,
                },
            )
        )
    return frames
