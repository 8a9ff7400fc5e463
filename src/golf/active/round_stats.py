"""Per-round statistics of GOLF: what the round explored, selected, labelled and how long it took."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from golf.active.select import END_REASONS
from golf.data.dataset import Dataset


def _wall_seconds(paths: list[str]) -> float:
    """Sum of the wall times (column ``s``) of Snakemake benchmark files; NaN if none exists yet."""
    found = [pd.read_csv(p, sep="\t")["s"].iloc[-1] for p in paths if Path(p).exists()]
    return float(sum(found)) if found else float("nan")


def round_stats(round_index: int, trajectories: Dataset, selected: Dataset, labels: Dataset, benchmarks: dict):
    """One-row DataFrame: candidates, selected, skips and label failures by reason, trajectory
    lengths, the step of the first MMFF rise, and time per stage: the wall times of the stage's
    jobs from their benchmark files, summed (labelling chunks may have run side by side)."""
    lengths, rises, ends = {}, [], Counter()
    for c in trajectories:
        traj = int(c.props["traj"])
        lengths[traj] = max(lengths.get(traj, 0), int(c.props["step"]))
    for c in selected:
        ends[c.props["end_reason"]] += 1
        if c.props["end_reason"] == "mmff_rise":
            rises.append(lengths[int(c.props["traj"])])
    row = {
        "round": round_index,
        "trajectories": len(selected),
        "selected": sum(c.status == "unlabelled" for c in selected),
        "labelled": sum(c.labelled for c in labels),
        "mean_trajectory_length": float(np.mean(list(lengths.values()))) if lengths else float("nan"),
        "mean_step_of_first_mmff_rise": float(np.mean(rises)) if rises else float("nan"),
    }
    row |= {f"ended_{reason}": ends.get(reason, 0) for reason in END_REASONS}
    skipped = Counter(c.status for c in selected if c.status != "unlabelled")
    row |= {f"skipped_{k.removeprefix('skipped_')}": v for k, v in sorted(skipped.items())}
    failed = Counter(c.status for c in labels if not c.labelled and c.status not in skipped)
    row |= {f"label_failed_{k}": v for k, v in sorted(failed.items())}
    row |= {f"job_seconds_{stage}": _wall_seconds(paths) for stage, paths in benchmarks.items()}
    return pd.DataFrame([row])
