"""Learning curve of the baseline: D0 size against validation force error and divergence.

Issue 13.6: where does a from-scratch NNP enter the paper's regime (diverges on some
conformations, not on most)? This measures it on *validation* conformations, never the study's
test set: the molecules of ``--molecules``, conformers drawn with ``--conformer-seed`` (not the
study's ``conformers.seed``), split by conformer as the default study, so each validation
conformation is at least ``rmsd_threshold`` from every training conformation of its molecule
(issue 19; the largest D0 size's, which holds every smaller one's). For each D0 size n (train
conformers per molecule, nested: size 4 holds size 2's) a baseline is trained with the study
config's settings and evaluated with the paper's protocol (L-BFGS lr 1, max_iter 5, no cap, T
steps) against geomeTRIC minima of the validation conformations; DFT is the study's oracle, so
labels land in (and come from) the study's label cache.

    .venv/bin/python bench/learning_curve.py --sizes 2 4 8 16 --workers 2

prints one row per size: D0 labels, the baseline's validation force MAE (training's own held-out
conformations, kcal/mol/A), and on the validation starts pct_div, mean pct, mean E_res, success;
plus MMFF's row for scale. Seconds per stage go to stderr.
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
    ap.add_argument("--config", default=str(ROOT / "config/config.yaml"))
    ap.add_argument("--molecules", default=None, help="molecule list (default: the config's)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8, 16])
    ap.add_argument("--val-per-molecule", type=int, default=1)
    ap.add_argument("--conformer-seed", type=int, default=7)
    ap.add_argument("--noise", type=float, default=None, help="conformers.noise (default: the config's)")
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: train.baseline_steps)")
    ap.add_argument("--timelimit", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    from golf.chem.conformers import generate_conformers, read_molecule_list
    from golf.cli import config as golf_config
    from golf.oracle.labels import label_pending
    from golf.oracle.oracle import Oracle
    from golf.oracle.trajectories import oracle_trajectories
    from golf.study import evaluate, metrics
    from golf.study.jobs import new_model, oracle_settings, train_settings
    from golf.train.trainer import train
    from golf.train.validation import mark_validation

    torch.set_num_threads(args.threads)
    cfg = golf_config.load(args.config)
    specs, skipped = read_molecule_list(args.molecules or str(ROOT / cfg["molecules"]))
    clock = time.perf_counter()

    def stage(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        print(f"[{name}] {now - clock:.0f} s", file=sys.stderr, flush=True)
        clock = now

    c = cfg["conformers"]
    conformers = generate_conformers(
        specs, elements=cfg["elements"], per_molecule=max(args.sizes), test_per_molecule=args.val_per_molecule,
        test_fraction=0.0, attempts=max(c["attempts"], 3 * (max(args.sizes) + args.val_per_molecule)),
        seed=args.conformer_seed, mmff_relax=c["mmff_relax"], rmsd_threshold=c["rmsd_threshold"],
        split="conformer", skipped=list(skipped),
        noise=c["noise"] if args.noise is None else args.noise,
    )  # fmt: skip
    oracle_cfg = {
        k: v for k, v in cfg["oracle"].items() if k not in ("chunks", "max_force_norm", "allow_mixed_provenance")
    }
    with Oracle(oracle_settings(oracle_cfg, workers=args.workers)) as oracle:
        train_set = oracle.label(conformers.split("train"), progress=False)
        stage(f"D0 labels ({len(train_set)})")
        reference = oracle_trajectories(
            oracle, conformers.split("test"), fmax=cfg["optimisation"]["fmax"],
            max_steps=cfg["optimisation"]["max_steps"], optimiser="geometric", workers=args.workers,
        )  # fmt: skip
        starts = evaluate.evaluable(evaluate.reference_test_set(reference))
        stage(f"references ({len(starts)} converged of {len(conformers.split('test'))}, {len(reference)} calls)")

        rows = []
        mmff = label_pending(oracle, evaluate.mmff_frames(starts, args.timelimit))
        tables = {"mmff": evaluate.per_step_table("mmff", mmff, starts)}
        for n in sorted(args.sizes):
            d0 = train_set.subset([c.conformer_id < n for c in train_set.conformers])
            model_cfg = {"nnp": cfg["nnp"], "elements": cfg["elements"], "oracle": cfg["oracle"],
                         "train": cfg["train"] | {"seed": args.train_seed}}  # fmt: skip
            params = {"train": model_cfg["train"], "device": "cpu", "initial_conf_pct": cfg["golf"]["initial_conf_pct"]}
            settings = train_settings(params, steps=args.steps or cfg["train"]["baseline_steps"])
            d0 = mark_validation(d0, cfg["train"]["val_fraction"], args.train_seed, "conformer")
            result = train(new_model(model_cfg, d0), d0, None, settings)
            best = result.history.loc[result.history["step"] == result.best_step].iloc[-1]
            stage(f"train n={n}")
            frames = evaluate.nnp_frames(result.model, starts, args.timelimit, [args.timelimit])
            frames = label_pending(oracle, frames.subset([f.props["step"] == args.timelimit for f in frames]))
            tables[f"n={n}"] = evaluate.per_step_table(f"n={n}", frames, starts)
            stage(f"evaluate n={n}")
            force_mae = float(best["val_force_mae_kcalmol_per_A"])
            golf = _golf_steps(result.model, d0)
            rows.append({"model": f"n={n}", "d0_labels": len(d0), "val_force_mae": force_mae, **golf})
    summary = [metrics.last_step_summary(name, table) for name, table in tables.items()]
    out = pd.DataFrame(summary).merge(pd.DataFrame(rows), on="model", how="left")
    print(out.to_markdown(index=False, floatfmt=".3g"))


def _golf_steps(model, d0) -> dict:
    """One GOLF round's selection from this baseline (NNP and MMFF only, no DFT), with and without
    the 0.02 A step cap: the median step of the selected frame and the share of step-0 picks (a
    rise at the first step re-labels a D0 conformation, which teaches the model nothing new)."""
    from golf.active.explore import run_golf_trajectories
    from golf.active.select import select_from_trajectories

    out = {}
    for name, cap in (("uncapped", None), ("capped", 0.02)):
        frames = run_golf_trajectories(
            model, d0, n_candidates=32, parallel=32, timelimit=100, mmff_threshold=300.0, seed=0,
            max_displacement=cap, progress=False,
        )  # fmt: skip
        picked = select_from_trajectories(frames, 300.0)
        steps = [int(c.props["step"]) for c in picked if c.status == "unlabelled"]
        out[f"golf_step_{name}"] = float(np.median(steps)) if steps else float("nan")
        out[f"golf_step0_{name}"] = float(np.mean(np.array(steps) == 0)) if steps else float("nan")
    return out


if __name__ == "__main__":
    main()
