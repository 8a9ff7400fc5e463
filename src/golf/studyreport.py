"""The report rule's work: read every model's evaluation, compute the metrics, write the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from golf import data, evaluate, metrics, report


def extra_oracle_calls(round_labels, traj, traj_models) -> dict[str, float]:
    """Extra oracle calls (labels added beyond D0) behind each model: GOLF round r used the
    labels of rounds 1..r, traj-{k} its k trajectory frames."""
    from golf.oracle_optimize import extra_frames

    calls = {"oracle": float("nan"), "mmff": 0, "baseline": 0}
    total = 0
    for r, path in enumerate(round_labels, start=1):
        total += sum(c.labelled for c in data.read(path))
        calls[f"golf-{r}"] = total
    for path in traj:
        n_frames = len(extra_frames(data.read(path)))
        calls |= {name: n_frames for name in traj_models}
    return calls


def build_report(
    per_step_csvs, eval_labels, round_labels, traj, reference, evaluation: dict, settings: dict, outdir
) -> None:
    """summary.md, summary.csv, steps.csv and the plots in ``outdir``."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    final_step = evaluation["timelimit"]
    starts, minima = evaluate.test_set(data.read(reference))
    per_step = pd.concat(
        [pd.read_csv(path) for path in per_step_csvs] + [evaluate.oracle_table(starts, minima, final_step)],
        ignore_index=True,
    )
    final_geoms = {}
    for path in eval_labels:
        frames = data.read(path)
        model = frames.attrs["model"]
        for c in frames:
            if c.props["step"] == final_step and c.labelled:
                final_geoms[(model, c.molecule_id, c.conformer_id)] = (frames.smiles(c), c.coordinates)
    # Minima read from a test file have energies only (NaN coordinates): no COV/MAT for them.
    reference_geoms = {
        (c.molecule_id, c.conformer_id): (starts.smiles(c), c.coordinates)
        for c in minima.values()
        if np.isfinite(c.coordinates).all()
    }
    for (mid, cid), geom in reference_geoms.items():
        final_geoms[("oracle", mid, cid)] = geom

    traj_models = [m for m in per_step["model"].unique() if m.startswith("traj-")]
    extra_calls = extra_oracle_calls(round_labels, traj, traj_models)

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
    summary.to_csv(outdir / "summary.csv", index=False)
    steps.to_csv(outdir / "steps.csv", index=False)
    report.write_report(summary, steps, finals, outdir, settings)
