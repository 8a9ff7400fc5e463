"""Learning curve on unseen molecules: D0 molecules x conformers per molecule against the
baseline's force error and divergence on validation molecules it never saw (issue 21).

The study's test molecules are never touched: the config's molecule list (``molecules`` and
``molecule_filter``) is split as the study splits it (``conformers.test_fraction`` and
``conformers.seed``, by molecule), and the validation molecules are drawn (``--val-seed``) from the
study's *training* molecules. D0 of size (n, k) is the first n of the other training molecules (one
seeded order, so sizes are nested) with their first k conformers. Labels and the validation
minima (geomeTRIC) come from the config's oracle through the study's label cache.

    .venv/bin/python bench/unseen_curve.py --config config/my-unseen.yaml --molecules 50 100 200 --per-molecule 4 8

prints one row per (n, k): D0 labels, the force MAE on the unseen validation starts (kcal/mol/A),
and there pct_div, mean pct, mean E_res and success with the paper's protocol (L-BFGS, T steps);
MMFF's row for scale. Seconds per stage go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--molecules", type=int, nargs="+", default=[50, 100, 200], help="D0 molecules")
    ap.add_argument("--per-molecule", type=int, nargs="+", default=[4, 8], help="D0 conformers per molecule")
    ap.add_argument("--val-molecules", type=int, default=40)
    ap.add_argument("--val-per-molecule", type=int, default=2)
    ap.add_argument("--val-seed", type=int, default=1)
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: train.baseline_steps)")
    ap.add_argument("--timelimit", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    from golf.chem.conformers import (
        MoleculeFilter,
        filter_molecules,
        generate_conformers,
        molecule_list_path,
        read_molecule_list,
    )
    from golf.cli import config as golf_config
    from golf.oracle.labels import label_pending
    from golf.oracle.oracle import Oracle
    from golf.oracle.trajectories import oracle_trajectories
    from golf.study import evaluate, metrics
    from golf.study.jobs import new_model, oracle_settings, train_settings
    from golf.train.trainer import train
    from golf.train.validation import mark_validation
    from golf.units import HARTREE_TO_KCALPERMOL

    torch.set_num_threads(args.threads)
    cfg = golf_config.load(args.config)
    clock = time.perf_counter()

    def stage(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        print(f"[{name}] {now - clock:.0f} s", file=sys.stderr, flush=True)
        clock = now

    specs, skipped = read_molecule_list(molecule_list_path(cfg["molecules"]))
    specs, _ = filter_molecules(specs, cfg["elements"], MoleculeFilter(**cfg["molecule_filter"]))
    c = cfg["conformers"]
    k_max = max(args.per_molecule)
    conformers = generate_conformers(
        specs, elements=cfg["elements"], per_molecule=max(k_max, args.val_per_molecule), test_per_molecule=1,
        test_fraction=c["test_fraction"], attempts=c["attempts"], seed=c["seed"], mmff_relax=c["mmff_relax"],
        rmsd_threshold=c["rmsd_threshold"], split="molecule", skipped=list(skipped), noise=c["noise"],
    )  # fmt: skip
    train_ids = sorted({m.molecule_id for m in conformers.molecules.values() if m.split == "train"})
    order = np.random.default_rng(args.val_seed).permutation(train_ids).tolist()
    val_ids, pool = set(order[: args.val_molecules]), order[args.val_molecules :]
    if max(args.molecules) > len(pool):
        raise SystemExit(f"only {len(pool)} training molecules besides the validation ones")
    rank = {mid: i for i, mid in enumerate(pool)}
    stage(f"conformers ({len(train_ids)} training molecules, {len(val_ids)} for validation)")

    oracle_cfg = {
        k: v for k, v in cfg["oracle"].items() if k not in ("chunks", "max_force_norm", "allow_mixed_provenance")
    }
    with Oracle(oracle_settings(oracle_cfg, workers=args.workers)) as oracle:
        largest = conformers.subset([
            rank.get(x.molecule_id, np.inf) < max(args.molecules) and x.conformer_id < k_max
            for x in conformers.conformers
        ])  # fmt: skip
        labelled = oracle.label(largest, progress=False)
        val_starts = conformers.subset([
            x.molecule_id in val_ids and x.conformer_id < args.val_per_molecule for x in conformers.conformers
        ])  # fmt: skip
        val_labels = oracle.label(val_starts, progress=False)
        stage(f"labels (D0 {len(labelled)}, validation {len(val_labels)})")
        reference = oracle_trajectories(
            oracle, val_starts, fmax=cfg["optimisation"]["fmax"], max_steps=cfg["optimisation"]["max_steps"],
            optimiser="geometric", workers=args.workers,
        )  # fmt: skip
        starts = evaluate.evaluable(evaluate.reference_test_set(reference))
        stage(f"validation minima ({len(starts)} converged of {len(val_starts)})")

        rows = []
        mmff = label_pending(oracle, evaluate.mmff_frames(starts, args.timelimit))
        tables = {"mmff": evaluate.per_step_table("mmff", mmff, starts)}
        for n in sorted(args.molecules):
            for k in sorted(args.per_molecule):
                name = f"n={n} k={k}"
                d0 = labelled.subset([rank[x.molecule_id] < n and x.conformer_id < k for x in labelled.conformers])
                model_cfg = {"nnp": cfg["nnp"], "elements": cfg["elements"], "oracle": cfg["oracle"],
                             "train": cfg["train"] | {"seed": args.train_seed}}  # fmt: skip
                params = {"train": model_cfg["train"], "device": "cpu",
                          "initial_conf_pct": cfg["golf"]["initial_conf_pct"]}  # fmt: skip
                settings = train_settings(params, steps=args.steps or cfg["train"]["baseline_steps"])
                d0 = mark_validation(d0, cfg["train"]["val_fraction"], args.train_seed, "molecule")
                model = train(new_model(model_cfg, d0), d0, None, settings).model
                stage(f"train {name}")
                ok = val_labels.labelled()
                force_mae = _force_mae(model, ok) * HARTREE_TO_KCALPERMOL
                frames = evaluate.nnp_frames(model, starts, args.timelimit, [args.timelimit])
                frames = label_pending(oracle, frames.subset([f.props["step"] == args.timelimit for f in frames]))
                tables[name] = evaluate.per_step_table(name, frames, starts)
                stage(f"evaluate {name}")
                rows.append({"model": name, "d0_molecules": n, "per_molecule": k, "d0_labels": len(d0),
                             "unseen_force_mae": force_mae})  # fmt: skip
    summary = [metrics.last_step_summary(name, table, molecules=True) for name, table in tables.items()]
    out = pd.DataFrame(summary).merge(pd.DataFrame(rows), on="model", how="left")
    print(out.to_markdown(index=False, floatfmt=".3g"))


def _force_mae(model, labelled) -> float:
    """Mean absolute force error (Hartree/Angstrom, over atoms and components) of ``model`` on
    the labelled conformations."""
    errors = []
    for c in labelled:
        species = torch.as_tensor(c.species).unsqueeze(0)
        coords = torch.as_tensor(c.coordinates, dtype=torch.float32).unsqueeze(0)
        _, forces = model.energies_forces(species, coords)
        errors.append(np.abs(forces.detach().numpy()[0] - c.forces).ravel())
    return float(np.concatenate(errors).mean()) if errors else float("nan")


if __name__ == "__main__":
    main()
