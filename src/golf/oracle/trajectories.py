"""Geometry optimisation with the oracle's forces: the DFT reference minima of the test set, and
the DFT optimisation trajectories of the trajectory baseline (paper §4; golf-paper.md §2).

Two optimisers drive :class:`golf.oracle.oracle.Oracle`, so every step goes through our label cache (a
rerun repeats no DFT call), gets a result row with its status, and a failed step ends its
trajectory with a recorded status instead of an exception deep inside the optimiser:

- ``geometric``: geomeTRIC's internal-coordinate (TRIC) optimiser with Gaussian's default
  convergence criteria (max gradient 4.5e-4, RMS gradient 3e-4 Hartree/Bohr, energy change
  1e-6 Hartree, max/RMS step 1.8e-3/1.2e-3 Bohr): the reference minima. It reaches Psi4
  optking's minima (to 2e-4 kcal/mol) with as many gradients (19.5 vs 21.2 on 6 molecules),
  where a Cartesian L-BFGS at fmax 1e-3 Hartree/Angstrom takes 49 and can stop on flat torsions
  above the minimum (issue 13: methyl acetate +1.7 kcal/mol); ``bench/reference_optimiser.py``.
- ``lbfgs``: ASE's Cartesian LBFGS with a step cap, for the trajectory baseline (the paper's
  D_traj came from Psi4's optimiser in Cartesian coordinates).

Every frame of a trajectory is a conformer with props ``traj`` (index of the start conformation
in the input), ``step`` (0 = the start) and status "ok" or the oracle's failure status; the last
frame also says how the trajectory ended, in its ``end`` property: "converged", "step_limit"
(stopped at the step or budget limit) or "failed" (an oracle or optimiser failure).
"""

from __future__ import annotations

import logging
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from golf.data.dataset import Conformer, Dataset
from golf.units import BOHR_TO_ANGSTROM, HARTREE_TO_EV

log = logging.getLogger(__name__)

ENDS = ("converged", "step_limit", "failed")  # the values of a last frame's ``end``


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


def oracle_trajectory(
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
    optimiser: str = "lbfgs",
) -> list[Conformer]:
    """Frames of one oracle optimisation. ``fmax`` in Hartree/Angstrom (``lbfgs`` only; geomeTRIC
    uses its own criteria); frame 0 is the start."""
    if optimiser not in ("lbfgs", "geometric"):
        raise ValueError(f"unknown optimiser {optimiser!r} (lbfgs, geometric)")
    record = _Recorder(oracle, conformer, charge, multiplicity, traj, budget, whole)
    if optimiser == "geometric":
        return _geometric_trajectory(record, max_steps)
    return _lbfgs_trajectory(record, fmax, max_steps, max_displacement)


def _lbfgs_trajectory(record: _Recorder, fmax: float, max_steps: int, max_displacement: float) -> list[Conformer]:
    """ASE's Cartesian LBFGS on the oracle (the trajectory baseline's optimiser)."""
    from ase import Atoms
    from ase.calculators.calculator import Calculator, all_changes
    from ase.optimize import LBFGS

    conformer = record.conformer

    class OracleCalculator(Calculator):
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            result = record(self.atoms.get_positions())
            self.results["energy"] = result.energy * HARTREE_TO_EV
            self.results["forces"] = result.forces * HARTREE_TO_EV

    atoms = Atoms(numbers=conformer.species, positions=conformer.coordinates, calculator=OracleCalculator())
    optimiser = LBFGS(atoms, maxstep=max_displacement, logfile=None)
    try:
        record.finish(optimiser.run(fmax=fmax * HARTREE_TO_EV, steps=max_steps))
    except _Stop as stop:
        record.stopped(stop)
    # ASE evaluates the final geometry again after convergence checks only when it moved, so the
    # last frame is the last geometry the oracle saw.
    return record.frames


class _Recorder:
    """One trajectory's oracle calls: spends the budget, keeps every call as a frame, and raises
    :class:`_Stop` on a failed call or a spent budget (frame 0 repeats a label D0 or the test set
    already has, a cache hit, so it is free)."""

    def __init__(
        self, oracle, conformer: Conformer, charge: int, multiplicity: int, traj: int, budget: _Budget, whole: bool
    ):
        self.oracle, self.conformer, self.charge, self.multiplicity = oracle, conformer, charge, multiplicity
        self.traj, self.budget, self.whole = traj, budget, whole
        self.frames: list[Conformer] = []

    def __call__(self, positions: np.ndarray):
        step = len(self.frames)
        if step > 0 and not self.budget.take(strict=not self.whole):
            raise _Stop("budget")
        c = self.conformer
        result = self.oracle.gradient(c.species, positions, self.charge, self.multiplicity)
        if self.frames:
            del self.frames[-1].props["end"]  # only the last frame says how the trajectory ended
        self.frames.append(
            Conformer(
                c.molecule_id,
                c.conformer_id,
                c.species,
                np.array(positions, dtype=float),
                energy=result.energy,
                forces=result.forces,
                status=result.status,
                props={"traj": self.traj, "step": step, "end": "step_limit"} | self._start_props(step),
            )
        )
        if not result.ok:
            log.warning("trajectory %d step %d: %s (%s)", self.traj, step, result.status, result.message)
            raise _Stop(result.status)
        return result

    def _start_props(self, step: int) -> dict:
        """The start's distance from training (a test conformation's ``train_rmsd``, see
        golf.chem.conformers) stays on frame 0, so the test set built from the references keeps it."""
        value = self.conformer.props.get("train_rmsd") if step == 0 else None
        return {} if value is None or not np.isfinite(value) else {"train_rmsd": float(value)}

    def finish(self, converged: bool) -> None:
        if self.frames and converged:
            self.frames[-1].props["end"] = "converged"

    def stopped(self, stop: _Stop) -> None:
        if self.frames and str(stop) != "budget":
            self.frames[-1].props["end"] = "failed"


def _geometric_trajectory(record: _Recorder, max_steps: int) -> list[Conformer]:
    """geomeTRIC (TRIC coordinates, Gaussian's default criteria) on the oracle; see the module doc."""
    from geometric.engine import Engine
    from geometric.errors import GeomOptNotConvergedError
    from geometric.internal import DelocalizedInternalCoordinates
    from geometric.molecule import Molecule as GeometricMolecule
    from geometric.optimize import Optimize
    from geometric.params import OptParams
    from rdkit.Chem import GetPeriodicTable

    # geomeTRIC logs every step at INFO on its module logger: keep our logs readable
    logging.getLogger("geometric.nifty").setLevel(logging.WARNING)
    conformer, traj = record.conformer, record.traj

    class OracleEngine(Engine):
        def calc_new(self, coords, dirname):  # coords: flat, Bohr; gradient: Hartree/Bohr
            result = record(np.asarray(coords, dtype=float).reshape(-1, 3) * BOHR_TO_ANGSTROM)
            return {"energy": result.energy, "gradient": -(result.forces * BOHR_TO_ANGSTROM).ravel()}

    table = GetPeriodicTable()
    molecule = GeometricMolecule()
    molecule.elem = [table.GetElementSymbol(int(z)) for z in conformer.species]
    molecule.xyzs = [np.asarray(conformer.coordinates, dtype=float)]
    params = OptParams(convergence_set="GAU", maxiter=max_steps, xyzout=None)
    coords = molecule.xyzs[0].ravel() / BOHR_TO_ANGSTROM
    with tempfile.TemporaryDirectory(prefix="golf-geometric-") as scratch:
        try:
            molecule.build_topology()
            internal = DelocalizedInternalCoordinates(molecule, build=True, connect=False, addcart=False)
            Optimize(coords, molecule, internal, OracleEngine(molecule), scratch, params)
            record.finish(True)
        except GeomOptNotConvergedError:
            pass  # the step limit: the last frame keeps "step_limit"
        except _Stop as stop:
            record.stopped(stop)
        except Exception as err:  # noqa: BLE001 - geomeTRIC's own failure is a recorded status, not a lost set
            log.warning("trajectory %d: geomeTRIC failed after %d calls: %r", traj, len(record.frames), err)
            if not record.frames:  # the start's label (or its failure) still belongs to the set
                try:
                    record(conformer.coordinates)
                except _Stop:
                    pass
            if record.frames:
                record.frames[-1].props["end"] = "failed"
    return record.frames


def oracle_trajectories(
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
    optimiser: str = "lbfgs",
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
        return oracle_trajectory(
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
            optimiser=optimiser,
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
                    "trajectory %d/%d: %d frames, end=%s, E=%.8f",
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
    different oracles are refused (:func:`golf.oracle.labels.common_provenance`).
    """
    from golf.data.dataset import concat
    from golf.oracle.labels import common_provenance

    provenance = common_provenance({f"chunk {i + 1}": c for i, c in enumerate(chunks)}, allow_mixed)
    attrs = dict(chunks[0].attrs) if chunks else {}
    if provenance is not None:
        attrs["oracle"] = provenance
    for key in ("oracle_calls", "cache_hits", "cached_failures"):  # every chunk's, not the first's
        attrs[key] = sum(int(c.attrs.get(key, 0)) for c in chunks)
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
                frames[-1].props["end"] = "step_limit"
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


def shuffled(n: int, seed: int) -> list[int]:
    return list(np.random.default_rng(seed).permutation(n))
