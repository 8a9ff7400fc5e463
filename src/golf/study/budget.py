"""What each arm of the study spent and added: extra oracle calls behind each model, and per seed
and arm the real oracle calls (cache misses), cache hits, labels and new conformations."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from golf import data
from golf.study.names import model_name, model_sort_key, parse_label_file, seed_of_path

__all__ = ["BudgetError", "extra_oracle_calls", "arm_budgets"]

log = logging.getLogger(__name__)


class BudgetError(ValueError):
    """A label file whose name does not say its round."""


def extra_oracle_calls(round_labels, traj, traj_models, random_labels=()) -> dict[str, float]:
    """Extra oracle calls (labels added beyond D0) behind each model: GOLF round r used the
    labels of rounds 1..r, the random control's random-r its own rounds 1..r, traj-{k} its k
    trajectory frames. The files may be every seed's (``seed-<s>/labels/round-<r>.h5``): a
    model's calls are its first seed's (model names carry no seed; budget.csv has every seed's)."""
    from golf.oracle.trajectories import extra_frames

    calls = {"oracle": float("nan"), "mmff": 0, "baseline": 0}
    for arm, paths in (("golf", round_labels), ("random", random_labels)):
        total = 0
        for r, path in sorted((_round_of(p), p) for p in _first_seed(paths)):
            total += sum(c.labelled for c in data.read(path))
            calls[model_name(arm, r)] = total
    for path in _first_seed(traj):
        n_frames = len(extra_frames(data.read(path)))
        calls |= {name: n_frames for name in traj_models}
    return calls


def _first_seed(paths) -> list:
    """The files of the lowest seed among ``paths`` (all of them outside seed directories)."""
    paths = list(paths)
    seeds = [seed_of_path(p) for p in paths]
    first = min(seeds, key=lambda s: -1 if s is None else s, default=None)
    return [p for p, s in zip(paths, seeds, strict=True) if s == first]


def _round_of(path) -> int:
    found = parse_label_file(path)
    if found is None:
        raise BudgetError(f"{path}: not a round's label file (labels/round-<r>.h5 or labels/random-<r>.h5)")
    return found[2]


def _conformation_key(c) -> bytes:
    """A conformation's identity for "already labelled": elements and exact coordinates (+0.0
    makes -0.0 and 0.0 equal)."""
    return c.species.tobytes() + (np.asarray(c.coordinates, dtype=np.float64) + 0.0).tobytes()


def arm_budgets(label_files, traj_models=(), d0=None) -> pd.DataFrame:
    """Per seed and arm model (golf-r and random-r through round r, each traj-k and trajeq-k): the
    real oracle calls (``oracle_calls`` attributes: cache misses), ``cache_hits``, ``labelled``
    rows (status ok; for a trajectory file the frames after the start) and ``new_conformations``:
    distinct labelled geometries not in ``d0`` and not in an earlier round of the same arm and seed
    (NaN without ``d0``).

    ``label_files``: paths named as :func:`golf.study.names.parse_label_file` reads them (others
    are skipped with a warning);
    ``traj_models``: the names the trajectory file stands for (traj-k, trajeq-k: one set of
    trajectories, two training schemes).
    """
    from golf.oracle.trajectories import extra_frames

    known_d0 = {_conformation_key(c) for c in data.read(d0)} if d0 is not None else None
    files: dict[tuple, list[tuple[int, Path]]] = {}
    for path in label_files:
        parsed = parse_label_file(path)
        if parsed is None:
            log.warning("%s: not a round, random or traj label file by its name; left out of the budget", path)
            continue
        seed, arm, r = parsed
        files.setdefault((seed, arm), []).append((r, Path(path)))
    rows = []
    for (seed, arm), paths in files.items():
        seen = set(known_d0 or ())
        totals = {"oracle_calls": 0.0, "cache_hits": 0.0, "labelled": 0, "new_conformations": 0}
        for r, path in sorted(paths):
            labels = data.read(path)
            ok = extra_frames(labels) if arm == "traj" else labels.labelled()
            fresh = {_conformation_key(c) for c in ok} - seen
            seen |= fresh
            totals["oracle_calls"] += float(labels.attrs.get("oracle_calls", np.nan))
            totals["cache_hits"] += float(labels.attrs.get("cache_hits", np.nan))
            totals["labelled"] += len(ok)
            totals["new_conformations"] += len(fresh)
            names = list(traj_models) if arm == "traj" else [model_name(arm, r)]
            for name in names:
                kind = "trajeq" if name.startswith("trajeq-") else arm
                row = {"seed": seed, "model": name, "arm": kind, "rounds": r, **totals}
                if known_d0 is None:
                    row["new_conformations"] = np.nan
                rows.append(row)
    columns = ["seed", "model", "arm", "rounds", "oracle_calls", "cache_hits", "labelled", "new_conformations"]
    table = pd.DataFrame(rows, columns=columns)
    seeds = table["seed"].fillna(-1.0)  # no seed first
    order = sorted(range(len(table)), key=lambda i: (seeds.iat[i], model_sort_key(table["model"].iat[i])))
    return table.iloc[order].reset_index(drop=True)
