"""Geometry optimisation with the oracle's forces: the DFT reference minima of the test set, and
the DFT optimisation trajectories of the trajectory baseline (paper §4; golf-paper.md §2).

The optimiser is ASE's LBFGS (max step 0.2 Angstrom, Cartesian) driving :class:`golf.oracle.Oracle`
through a small ASE calculator, not Psi4's own optking. Why: every step then goes through our
label cache (a rerun repeats no DFT call) and gets a result row with its status, a failed step
ends its trajectory with a recorded status instead of an exception inside optking, and the same
code serves the reference and the trajectory baseline. The paper used Psi4's optimiser in
Cartesian coordinates for D_traj; an L-BFGS with a step cap converges to the same minima.

Every frame of a trajectory is a conformer with props ``traj`` (index of the start conformation
in the input), ``step`` (0 = the start) and status "ok" or the oracle's failure status; the last
frame of a converged trajectory has status "converged" in the ``end`` property (1 = converged,
0 = stopped at the step or budget limit, -1 = oracle failure).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from golf.data import Conformer, Dataset
from golf.units import HARTREE_TO_EV

log = logging.getLogger(__name__)

END_CONVERGED, END_LIMIT, END_FAILED = 1, 0, -1


class _Stop(Exception):
    """Raised inside the optimiser to stop a trajectory (oracle failure or budget spent)."""


class _Budget:
    """Oracle calls a set of trajectories may still spend (None = unlimited). Thread-safe."""

    def __init__(self, total: int | None):
        self.left = total
        self._lock = threading.Lock()

    def take(self, strict: bool = True) -> bool:
        """Spend one call; False (nothing spent) when none is left and ``strict``. Not strict:
        the call is spent anyway, so a started trajectory can run to its end."""
        with self._lock:
            if self.left is None:
                return True
            if strict and self.left <= 0:
                return False
            self.left -= 1
            return True

    @property
    def spent(self) -> bool:
        with self._lock:
            return self.left is not None and self.left <= 0


def optimise_one(
    oracle,
    conformer: Conformer,
    charge: int,
    multiplicity: int,
    *,
    traj: int,
    fmax: float,
    max_steps: int,
    max_displacement: float,
    budget: _Budget,
    whole: bool = False,
) -> list[Conformer]:
    """Frames of one oracle optimisation. ``fmax`` in Hartree/Angstrom; frame 0 is the start."""
    from ase import Atoms
    from ase.calculators.calculator import Calculator, all_changes
    from ase.optimize import LBFGS

    frames: list[Conformer] = []

    class OracleCalculator(Calculator):
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            step = len(frames)
            # Frame 0 repeats a label D0 or the reference already has (a cache hit): it is free.
            if step > 0 and not budget.take(strict=not whole):
                raise _Stop("budget")
            positions = self.atoms.get_positions()
            result = oracle.gradient(conformer.species, positions, charge, multiplicity)
            frames.append(
                Conformer(
                    conformer.molecule_id,
                    conformer.conformer_id,
                    conformer.species,
                    positions,
                    energy=result.energy,
                    forces=result.forces,
                    status=result.status,
                    props={"traj": traj, "step": step, "end": END_LIMIT},
                )
            )
            if not result.ok:
                log.warning("trajectory %d step %d: %s (%s)", traj, step, result.status, result.message)
                raise _Stop(result.status)
            self.results["energy"] = result.energy * HARTREE_TO_EV
            self.results["forces"] = result.forces * HARTREE_TO_EV

    atoms = Atoms(numbers=conformer.species, positions=conformer.coordinates, calculator=OracleCalculator())
    optimiser = LBFGS(atoms, maxstep=max_displacement, logfile=None)
    try:
        converged = optimiser.run(fmax=fmax * HARTREE_TO_EV, steps=max_steps)
        if frames and converged:
            frames[-1].props["end"] = END_CONVERGED
    except _Stop as stop:
        if frames and str(stop) != "budget":
            frames[-1].props["end"] = END_FAILED
    # ASE evaluates the final geometry again after convergence checks only when it moved, so the
    # last frame is the last geometry the oracle saw.
    return frames


def optimise_dataset(
    oracle,
    dataset: Dataset,
    *,
    fmax: float,
    max_steps: int,
    max_displacement: float = 0.2,
    budget: int | None = None,
    whole_trajectories: bool = False,
    workers: int = 1,
    order: list[int] | None = None,
) -> Dataset:
    """Oracle optimisations of the conformers of ``dataset`` (in ``order``), all frames kept.

    ``budget`` caps the oracle calls of steps >= 1 over all trajectories (the trajectory
    baseline's k); trajectories are started in ``order`` until it is spent. With
    ``whole_trajectories`` a started trajectory runs to its end (the budget only stops new
    starts), so a scattered chunk never cuts one; :func:`gather_trajectories` then trims the
    gathered set to the budget. ``workers`` trajectories run at once (the oracle needs as many
    workers). Each frame's ``rank`` property is its trajectory's position in ``order``.
    """
    order = list(range(len(dataset))) if order is None else list(order)
    shared = _Budget(budget)

    def run(row: int) -> list[Conformer]:
        if shared.spent:
            return []
        c = dataset.conformers[row]
        mol = dataset.molecules[c.molecule_id]
        return optimise_one(
            oracle,
            c,
            mol.charge,
            mol.multiplicity,
            traj=row,
            fmax=fmax,
            max_steps=max_steps,
            max_displacement=max_displacement,
            budget=shared,
            whole=whole_trajectories,
        )

    out = Dataset(dict(dataset.molecules), [], dict(dataset.attrs))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, frames in enumerate(pool.map(run, order)):
            for frame in frames:
                frame.props["rank"] = i
            out.conformers.extend(frames)
            if frames:
                end = frames[-1].props["end"]
                log.info(
                    "trajectory %d/%d: %d frames, end=%d, E=%.8f",
                    i + 1,
                    len(order),
                    len(frames),
                    end,
                    frames[-1].energy,
                )
    return out


def gather_trajectories(chunks: list[Dataset], budget: int | None = None, allow_mixed: bool = False) -> Dataset:
    """One set of trajectories from scattered chunks, ordered by (traj, step).

    With ``budget`` (the trajectory baseline's k, counted once over all chunks): whole
    trajectories are kept in the order of their ``rank`` property (the position in the seeded
    start order) while fewer than ``budget`` calls are used, the last kept one trimmed so that
    exactly ``budget`` oracle calls (steps >= 1) remain, unless the chunks made fewer.
    ``oracle_calls`` stays what the chunks paid; ``budget_calls`` is what is kept. Chunks of
    different oracles are refused (:func:`golf.labels.common_provenance`).
    """
    from golf.data import concat
    from golf.labels import common_provenance

    provenance = common_provenance({f"chunk {i + 1}": c for i, c in enumerate(chunks)}, allow_mixed)
    attrs = dict(chunks[0].attrs) if chunks else {}
    if provenance is not None:
        attrs["oracle"] = provenance
    attrs["oracle_calls"] = sum(int(c.attrs.get("oracle_calls", 0)) for c in chunks)
    merged = concat(chunks, attrs=attrs)
    by_traj: dict[int, list[Conformer]] = {}
    for c in merged.conformers:
        by_traj.setdefault(int(c.props["traj"]), []).append(c)
    kept: list[Conformer] = []
    used = 0
    for traj in sorted(by_traj, key=lambda t: (by_traj[t][0].props.get("rank", t), t)):
        frames = sorted(by_traj[traj], key=lambda c: c.props["step"])
        if budget is not None:
            if used >= budget:
                break
            calls = sum(1 for c in frames if c.props["step"] >= 1)
            if used + calls > budget:
                frames = frames[: budget - used + 1]  # frame 0 is free
                frames[-1].props["end"] = END_LIMIT
                calls = budget - used
            used += calls
        kept.extend(frames)
    kept.sort(key=lambda c: (c.props["traj"], c.props["step"]))
    merged.conformers = kept
    if budget is not None:
        merged.attrs["budget_calls"] = used
        log.info(
            "kept %d trajectories, %d of the budget's %d calls (%d paid)", len({c.props["traj"] for c in kept}),
            used, budget, attrs["oracle_calls"],
        )  # fmt: skip
    return merged


def extra_frames(trajectories: Dataset) -> Dataset:
    """Labelled frames that cost an extra oracle call (step >= 1): the trajectory baseline's data."""
    return trajectories.subset([c.labelled and c.props["step"] >= 1 for c in trajectories.conformers])


def final_frames(trajectories: Dataset) -> dict[int, Conformer]:
    """The last labelled frame of each trajectory, keyed by ``traj``: the oracle's minimum."""
    last: dict[int, Conformer] = {}
    for c in trajectories.conformers:
        if c.labelled:
            last[c.props["traj"]] = c
    return last


def start_frames(trajectories: Dataset) -> dict[int, Conformer]:
    return {c.props["traj"]: c for c in trajectories.conformers if c.props["step"] == 0}


def shuffled(n: int, seed: int) -> list[int]:
    return list(np.random.default_rng(seed).permutation(n))


def reference_from_known_minima(test: Dataset) -> Dataset:
    """Reference "trajectories" from a test set that carries its minima energies (property
    ``e_opt``, Hartree; the authors' D-test ``optimal_energy``): frame 0 is the labelled test
    conformation, frame 1 has the minimum's energy and unknown (NaN) coordinates."""
    out = Dataset(dict(test.molecules), [], dict(test.attrs) | {"kind": "reference_from_file"})
    for row, c in enumerate(test.conformers):
        e_opt = c.props.get("e_opt", float("nan"))
        if not (c.labelled and np.isfinite(e_opt)):
            raise ValueError(f"test conformation {row} lacks a label or e_opt; set data.test_minima: false")
        out.conformers.append(
            Conformer(
                c.molecule_id,
                c.conformer_id,
                c.species,
                c.coordinates,
                energy=c.energy,
                forces=c.forces,
                status="ok",
                props={"traj": row, "step": 0, "end": END_CONVERGED},
            )
        )
        out.conformers.append(
            Conformer(
                c.molecule_id,
                c.conformer_id,
                c.species,
                np.full(c.coordinates.shape, np.nan),
                energy=float(e_opt),
                status="ok",
                props={"traj": row, "step": 1, "end": END_CONVERGED},
            )
        )
    return out
