"""Evaluation of a model against the oracle's minima (paper §6; golf-paper.md §6.1).

The test set is one file, one row per test conformation: the start (geometry, E_start, forces)
with its minimum as properties (``e_opt``, ``opt_coordinates``) and how the reference ended
(``end``). :func:`reference_test_set` makes it from the oracle's reference optimisations,
:func:`known_minima_test_set` from an imported test set that carries its minima energies.

Each test conformation is optimised with the model and the batched L-BFGS for exactly T steps
(the paper's protocol: torch.optim.LBFGS, lr 1, max_iter 5, history 100, no cap, no early stop);
the geometries at the configured steps get oracle single points (through the label cache). A
capped evaluation (``max_displacement``) is a second protocol, named by :func:`golf.study.names.protocol_name`
("capped-0.02"), and every row of its table says so in the ``protocol`` column. The non-neural
row "mmff" optimises with RDKit MMFF instead and is evaluated at its final geometry only.

The result is a long table, one row per (model, protocol, molecule_id, conformer_id, step), in the
column contract of :mod:`golf.study.metrics`, and the evaluated frames as a dataset. Where the test set
records a conformation's distance from training (property ``train_rmsd``, Angstrom: RMSD after
superposition to the nearest training conformation of its molecule, see golf.chem.conformers), the
table has a ``train_rmsd`` column; imported test sets do not record it.

Test conformations whose reference optimisation gave no minimum (not converged, or an unlabelled
start) are excluded from every evaluation by :func:`evaluable`; the report lists them and counts
them.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pandas as pd

from golf.chem.mmff import SurrogateError, SurrogatePool
from golf.data.dataset import Conformer, Dataset
from golf.study.metrics import REQUIRED_COLUMNS
from golf.study.names import PAPER_PROTOCOL, protocol_name

log = logging.getLogger(__name__)

COLUMNS = [*REQUIRED_COLUMNS, "protocol"]  # the per-step table is golf.study.metrics' input
TRAIN_RMSD = "train_rmsd"  # optional test-set property and table column (Angstrom)


def train_rmsd(conformer: Conformer) -> float:
    """The test conformation's distance from training (Angstrom), NaN where not recorded."""
    value = conformer.props.get(TRAIN_RMSD)
    return float(value) if value is not None and np.isfinite(value) else np.nan


def _with_train_rmsd(props: dict, conformer: Conformer) -> dict:
    """``props`` plus the conformer's ``train_rmsd`` when it has a finite one."""
    value = train_rmsd(conformer)
    return props | ({TRAIN_RMSD: value} if np.isfinite(value) else {})


def _columns(test_set: Dataset) -> list[str]:
    """The per-step table's columns: ``train_rmsd`` too when the test set records it."""
    known = any(np.isfinite(train_rmsd(c)) for c in test_set)
    return [*COLUMNS, TRAIN_RMSD] if known else COLUMNS


def reference_test_set(references: Dataset) -> Dataset:
    """The test set from the oracle's reference optimisations (:mod:`golf.oracle.trajectories`): one
    row per trajectory, the start (geometry, label, status) with its reference's result as props.

    Props: ``traj``; ``end`` ("converged", "step_limit", "failed", as the trajectory ended);
    ``e_opt`` (Hartree) and ``opt_coordinates`` (Angstrom) of its last labelled frame, NaN
    without one; ``reference_frames``, the oracle calls the optimisation made; ``train_rmsd``
    where the start (frame 0) records it.
    """
    by_traj: dict[int, list[Conformer]] = {}
    for c in references.conformers:
        by_traj.setdefault(int(c.props["traj"]), []).append(c)
    rows = []
    for traj, frames in sorted(by_traj.items()):
        frames.sort(key=lambda c: c.props["step"])
        start, labelled = frames[0], [c for c in frames if c.labelled]
        final = labelled[-1] if labelled else None
        props = {
            "traj": traj,
            "end": frames[-1].props.get("end") or "failed",
            "e_opt": final.energy if final else np.nan,
            "reference_frames": len(frames),
        }
        props = _with_train_rmsd(props, start)
        if final is not None:
            props["opt_coordinates"] = final.coordinates
        rows.append(replace(start, props=props))
    attrs = dict(references.attrs) | {"kind": "test_set", "minima": "oracle_optimisation"}
    return Dataset(dict(references.molecules), rows, attrs)


def known_minima_test_set(test: Dataset) -> Dataset:
    """The test set from labelled test conformations that carry their minimum's energy (property
    ``e_opt``, Hartree; the authors' D-test ``optimal_energy``); the minimum's geometry is unknown."""
    rows = []
    for row, c in enumerate(test.conformers):
        e_opt = c.props.get("e_opt", np.nan)
        if not (c.labelled and np.isfinite(e_opt)):
            raise ValueError(f"test conformation {row} lacks a label or e_opt; set data.test_minima: false")
        props = _with_train_rmsd({"traj": row, "end": "converged", "e_opt": float(e_opt)}, c)
        rows.append(replace(c, props=props))
    return Dataset(dict(test.molecules), rows, dict(test.attrs) | {"kind": "test_set", "minima": "known"})


def evaluable(test_set: Dataset) -> Dataset:
    """The rows an evaluation uses: a labelled start and a converged reference. A stopped or failed
    optimisation gives no minimum; as the reference it would make pct above 100 and E_res too small,
    so those rows are excluded from every metric (``golf.study.report.unconverged_references`` lists them)."""
    keep = [c.labelled and c.props["end"] == "converged" for c in test_set.conformers]
    left_out = [c.props["traj"] for c, k in zip(test_set.conformers, keep, strict=True) if not k]
    if left_out:
        log.warning(
            "%d test conformations have no converged oracle reference, excluded from the evaluation: %s",
            len(left_out), left_out,
        )  # fmt: skip
    return test_set.subset(keep)


def nnp_frames(
    model,
    starts: Dataset,
    timelimit: int,
    steps: list[int],
    batch_size: int = 64,
    max_displacement: float | None = None,
) -> Dataset:
    """Model-optimised geometries of every start at ``steps`` (and step 0), with NNP energies/forces.

    Every finite trajectory runs exactly ``timelimit`` steps (no stop on a force criterion, as
    in the paper's evaluation). ``max_displacement`` None is the paper's protocol; a cap gives the
    "capped-..." protocol, recorded in the returned dataset's ``attrs["protocol"]``.
    """
    from golf.optim.lbfgs import optimize

    protocol = protocol_name(max_displacement)
    trajectories = optimize(
        model.energies_forces,
        [c.species for c in starts],
        [c.coordinates for c in starts],
        steps=timelimit,
        batch_size=batch_size,
        exact_steps=True,
        progress=True,
        device=model.device,
        max_displacement=max_displacement,
    )
    out = Dataset(dict(starts.molecules), [], {"protocol": protocol})
    for start, trajectory in zip(starts, trajectories, strict=True):
        last = trajectory.positions.shape[0] - 1
        for step in [0, *steps]:
            # only a non-finite trajectory ends before timelimit: its later steps were never reached
            reached = step <= last
            at = min(step, last)
            positions = trajectory.positions[at]
            ok = reached and bool(np.isfinite(positions).all())
            out.conformers.append(
                Conformer(
                    start.molecule_id,
                    start.conformer_id,
                    start.species,
                    positions if ok else start.coordinates,  # placeholder geometry, never labelled
                    status="unlabelled" if ok else "skipped_nonfinite",
                    props={
                        "traj": start.props["traj"],
                        "step": step,
                        "nnp_energy": float(trajectory.energies[at]) if ok else np.nan,
                        "nnp_forces": trajectory.forces[at] if ok else np.full(start.coordinates.shape, np.nan),
                    },
                )
            )
    return out


def mmff_frames(starts: Dataset, timelimit: int, max_iters: int = 2000) -> Dataset:
    """RDKit MMFF-optimised geometry of every start, as step ``timelimit`` (plus the start, step 0)."""
    pool = SurrogatePool()
    out = Dataset(dict(starts.molecules), [], {})
    for start in starts:
        try:
            positions, _ = pool[starts.smiles(start)].minimize(start.coordinates, max_iters=max_iters)
            status = "unlabelled"
        except SurrogateError as err:  # recorded per conformation, not a failed evaluation
            log.warning("no MMFF optimisation of %s: %s", starts.smiles(start), err)
            positions, status = start.coordinates, "skipped_no_mmff"
        for step, xyz, step_status in ((0, start.coordinates, "unlabelled"), (timelimit, positions, status)):
            out.conformers.append(
                Conformer(
                    start.molecule_id,
                    start.conformer_id,
                    start.species,
                    xyz,
                    status=step_status,
                    props={"traj": start.props["traj"], "step": step},
                )
            )
    return out


def evaluation_frames(
    model, starts: Dataset, timelimit: int, steps, *, name: str, max_displacement: float | None = None, seed=None
) -> Dataset:
    """A model's evaluation frames (:func:`nnp_frames`; ``model`` None: MMFF's, :func:`mmff_frames`)
    with the attributes the labelling keeps, by which the report groups evaluations: ``model``
    (``name``), ``protocol`` and, for an NNP, the study ``seed`` (MMFF has none: it pairs with
    every seed of the NNPs). The protocol is the evaluation's, not the checkpoint's: the paper's
    L-BFGS, or a capped row set (``max_displacement``)."""
    if model is None:
        frames = mmff_frames(starts, timelimit)
    else:
        frames = nnp_frames(model, starts, timelimit, sorted(steps), max_displacement=max_displacement)
    frames.attrs.update(kind="evaluation_frames", model=name)
    if seed is not None:
        frames.attrs["seed"] = seed
    return frames


def per_step_table(model_name: str, frames: Dataset, test_set: Dataset, protocol: str | None = None) -> pd.DataFrame:
    """The long table of :mod:`golf.study.metrics` from labelled frames.

    ``protocol``: how the frames were optimised; default ``frames.attrs["protocol"]`` as written by
    :func:`nnp_frames`, else "paper" (MMFF rows, which do not depend on it).
    """
    protocol = protocol or frames.attrs.get("protocol") or PAPER_PROTOCOL
    rows_of = {c.props["traj"]: c for c in test_set}
    rows = []
    for c in frames:
        traj = c.props["traj"]
        nnp_forces = c.props.get("nnp_forces")
        force_err = np.nan
        if c.labelled and nnp_forces is not None and np.isfinite(nnp_forces).all():
            force_err = float(np.sqrt(np.mean((np.asarray(nnp_forces) - c.forces) ** 2)))
        rows.append(
            {
                "model": model_name,
                "molecule_id": c.molecule_id,
                "conformer_id": c.conformer_id,
                "step": int(c.props["step"]),
                "e_dft": c.energy if c.labelled else np.nan,
                "dft_status": c.status,
                "e_start": rows_of[traj].energy,
                "e_opt": rows_of[traj].props["e_opt"],
                "e_nnp": c.props.get("nnp_energy", np.nan),
                "force_err": force_err,
                "protocol": protocol,
                TRAIN_RMSD: train_rmsd(rows_of[traj]),
            }
        )
    return pd.DataFrame(rows, columns=_columns(test_set))


def oracle_table(test_set: Dataset, final_step: int) -> pd.DataFrame:
    """The oracle's own optimisation as a model row: pct 100 by definition."""
    rows = []
    for c in test_set:
        e_opt = c.props["e_opt"]
        for step, energy in ((0, c.energy), (final_step, e_opt)):
            rows.append(
                {
                    "model": "oracle",
                    "molecule_id": c.molecule_id,
                    "conformer_id": c.conformer_id,
                    "step": step,
                    "e_dft": energy,
                    "dft_status": "ok",
                    "e_start": c.energy,
                    "e_opt": e_opt,
                    "e_nnp": np.nan,
                    "force_err": np.nan,
                    "protocol": PAPER_PROTOCOL,  # the oracle's rows do not depend on the NNP's protocol
                    TRAIN_RMSD: train_rmsd(c),
                }
            )
    return pd.DataFrame(rows, columns=_columns(test_set))
