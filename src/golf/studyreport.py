"""The report rule's work: read every model's evaluation, compute the metrics, write the report.

Contract with the evaluation (so the report can tell repeats and protocols apart):

- per-step CSVs: the columns of ``golf.metrics``; optional ``protocol`` ("paper", or e.g.
  "capped-0.02" for a step-capped row set; absent = "paper") and ``seed`` (absent = one seed).
- evaluation label files: file attributes ``model`` and, optionally, ``protocol`` and ``seed``,
  the same values as in the CSV rows, so final geometries (COV/MAT) match their rows.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from golf import data, evaluate, metrics, report
from golf.data import Dataset

log = logging.getLogger(__name__)


def extra_oracle_calls(round_labels, traj, traj_models, random_labels=()) -> dict[str, float]:
    """Extra oracle calls (labels added beyond D0) behind each model: GOLF round r used the
    labels of rounds 1..r, the random control's random-r its own rounds 1..r, traj-{k} its k
    trajectory frames."""
    from golf.oracle_optimize import extra_frames

    calls = {"oracle": float("nan"), "mmff": 0, "baseline": 0}
    for prefix, paths in (("golf", round_labels), ("random", random_labels)):
        total = 0
        for r, path in enumerate(paths, start=1):
            total += sum(c.labelled for c in data.read(path))
            calls[f"{prefix}-{r}"] = total
    for path in traj:
        n_frames = len(extra_frames(data.read(path)))
        calls |= {name: n_frames for name in traj_models}
    return calls


def validation_force_error(metrics_csv) -> float:
    """A model's force MAE (kcal/mol/A) on training's held-out validation conformations, at the
    step training returned (the lowest validation loss; golf.train)."""
    history = pd.read_csv(metrics_csv).dropna(subset=["val_loss"])
    if not len(history):
        return float("nan")
    return float(history.loc[history["val_loss"].idxmin(), "val_force_mae_kcalmol_per_A"])


def with_validation_error(summary: pd.DataFrame, model_metrics) -> pd.DataFrame:
    """``summary`` with column ``val_force_mae`` from each model's training metrics CSV
    (``.../seed-<s>/models/<model>.metrics.csv``, or ``.../models/<model>.metrics.csv`` with one
    seed); NaN for models without one (MMFF, the oracle, an imported baseline)."""
    import re

    rows = []
    for path in model_metrics:
        path = Path(path)
        seed = re.search(r"seed-(\d+)", str(path))
        rows.append({
            "model": path.name.removesuffix(".metrics.csv"),
            "seed_key": float(seed.group(1)) if seed else None,
            "val_force_mae": validation_force_error(path),
        })  # fmt: skip
    summary = summary.copy()
    errors = {(r["model"], r["seed_key"]): r["val_force_mae"] for r in rows}
    seeds = summary["seed"] if "seed" in summary else pd.Series(np.nan, index=summary.index)
    summary["val_force_mae"] = [
        errors.get((m, metrics.seed_key(s)), np.nan) for m, s in zip(summary["model"], seeds, strict=True)
    ]
    return summary


_END_REASON = {"step_limit": "stopped at the step limit", "failed": "oracle failure"}


def unconverged_references(test_set: Dataset) -> pd.DataFrame:
    """Test conformations whose reference optimisation gives no minimum: one row each with
    molecule_id, conformer_id, smiles, name, the reason and the number of frames.

    ``evaluate.evaluable`` leaves them out of every evaluation (a non-minimum reference would
    make pct too high and E_res too small); this lists them so the report can say which.
    """
    rows = []
    for c in test_set:
        if not c.labelled:
            reason = f"start not labelled ({c.status})"
        elif c.props["end"] != "converged":
            reason = _END_REASON.get(c.props["end"], f"ended {c.props['end']}")
        else:
            continue
        mol = test_set.molecules[c.molecule_id]
        rows.append(
            {
                "molecule_id": c.molecule_id,
                "conformer_id": c.conformer_id,
                "smiles": mol.smiles,
                "name": mol.name,
                "reason": reason,
                "frames": c.props.get("reference_frames", -1),
            }
        )
    return pd.DataFrame(rows, columns=["molecule_id", "conformer_id", "smiles", "name", "reason", "frames"])


def _group_of(frames: Dataset) -> tuple[str, str, float | None]:
    """(protocol, model, seed) of an evaluation label file, from its attributes."""
    seed = frames.attrs.get("seed")
    protocol = frames.attrs.get("protocol") or metrics.PAPER_PROTOCOL
    return str(protocol), str(frames.attrs["model"]), None if seed is None or pd.isna(seed) else float(seed)


def build_report(
    per_step_csvs,
    eval_labels,
    round_labels,
    traj,
    test_set,
    evaluation: dict,
    settings: dict,
    outdir,
    random_labels=(),
    model_metrics=(),
) -> None:
    """summary.md, summary.csv, steps.csv, paired.csv, unconverged_references.csv and the plots
    in ``outdir``."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    final_step = evaluation["timelimit"]
    all_rows = data.read(test_set)
    rows = evaluate.evaluable(all_rows)
    unconverged = unconverged_references(all_rows)
    per_step = pd.concat(
        [pd.read_csv(path) for path in per_step_csvs] + [evaluate.oracle_table(rows, final_step)],
        ignore_index=True,
    )
    final_geoms = {}
    for path in eval_labels:
        frames = data.read(path)
        group = _group_of(frames)
        for c in frames:
            if c.props["step"] == final_step and c.labelled:
                final_geoms[(*group, c.molecule_id, c.conformer_id)] = (frames.smiles(c), c.coordinates)
    # Minima read from a test file have energies only (no opt_coordinates): no COV/MAT for them.
    reference_geoms = {
        (c.molecule_id, c.conformer_id): (rows.smiles(c), c.props["opt_coordinates"])
        for c in rows
        if "opt_coordinates" in c.props and np.isfinite(c.props["opt_coordinates"]).all()
    }
    for (mid, cid), geom in reference_geoms.items():
        final_geoms[("oracle", mid, cid)] = geom  # every protocol: the oracle's rows do not depend on it

    traj_models = [m for m in per_step["model"].unique() if m.startswith("traj-")]
    extra_calls = extra_oracle_calls(round_labels, traj, traj_models, random_labels)

    # All atoms, not heavy atoms: the default study's molecules have 2-7 heavy atoms, where a
    # heavy-atom RMSD hardly distinguishes conformers (RDKit's GetBestRMS handles H symmetry).
    summary = metrics.summarise(
        per_step,
        final_geoms,
        reference_geoms,
        final_step=final_step,
        extra_oracle_calls=extra_calls,
        delta=evaluation["cov_delta"],
        heavy_atoms=False,
    )
    steps = metrics.step_metrics(per_step)
    finals = metrics.final_conformations(per_step, final_step)
    summary = with_validation_error(summary, model_metrics)
    summary.to_csv(outdir / "summary.csv", index=False)
    steps.to_csv(outdir / "steps.csv", index=False)
    unconverged.to_csv(outdir / "unconverged_references.csv", index=False)
    if len(unconverged):
        log.warning("%d test conformations have no converged reference (listed in the report)", len(unconverged))
    report.write_report(summary, steps, finals, outdir, settings, unconverged=unconverged)
