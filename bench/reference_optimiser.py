"""Reference minima: geomeTRIC on our oracle against Psi4's own optking and ASE's Cartesian LBFGS.

Issue 13.3: the reference minimum must come from a real internal-coordinate optimiser. This runs
the three from the same starts (the default study's kind: ETKDG conformers plus 0.05 A noise of
a few of its molecules) at the config's level of theory, and prints per start the gradients each
spent and its final energy relative to the lowest of the three (kcal/mol):

    .venv/bin/python bench/reference_optimiser.py --n 6

- ``geometric``: golf.oracle.trajectories with optimiser="geometric" (TRIC, Gaussian criteria).
- ``lbfgs``: the same with ASE's LBFGS, fmax 1e-3 Hartree/A, step cap 0.2 A (the old reference).
- ``optking``: ``psi4.optimize`` in Psi4's own interpreter, Psi4's default criteria (QCHEM:
  max force 3e-4 Hartree/Bohr, energy change 1e-6, max displacement 1.2e-3), no cache.

geomeTRIC and LBFGS share the label cache of ``--cache`` (default: a fresh temporary folder, so
the gradient counts are real calls).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
KCAL = 627.509474

OPTKING = r"""
import json, sys, psi4
task = json.load(sys.stdin)
psi4.core.be_quiet()
psi4.set_memory(1000 * 1024 * 1024)
psi4.set_num_threads(1)
psi4.set_options(dict(task["options"], geom_maxiter=200))
lines = ["0 1"] + [f"{s} {x:.12f} {y:.12f} {z:.12f}" for s, (x, y, z) in zip(task["symbols"], task["xyz"])]
mol = psi4.geometry("\n".join(lines + ["units ang", "symmetry c1", "nocom", "noreorient"]))
energy, history = psi4.optimize(task["method"], molecule=mol, return_history=True)
print(json.dumps({"energy": float(energy), "gradients": len(history["energy"])}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "config/config.yaml"))
    ap.add_argument("--n", type=int, default=6, help="molecules (the largest of the config's list first)")
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--cache", default=None)
    args = ap.parse_args()

    from rdkit.Chem import GetPeriodicTable

    from golf.chem.conformers import generate_conformers, read_molecule_list
    from golf.cli import config as golf_config
    from golf.oracle.oracle import Oracle
    from golf.oracle.trajectories import oracle_trajectories
    from golf.oracle.worker_pool import find_psi4_python
    from golf.study.evaluate import reference_test_set
    from golf.study.jobs import oracle_settings

    cfg = golf_config.load(args.config)
    specs, _ = read_molecule_list(ROOT / cfg["molecules"])
    specs = sorted(specs, key=lambda s: -len(s.smiles))[: args.n]
    starts = generate_conformers(
        specs, elements=cfg["elements"], per_molecule=1, test_per_molecule=1, test_fraction=0.0,
        seed=11, noise=args.noise,
    )  # fmt: skip
    workflow_only = ("chunks", "max_force_norm", "allow_mixed_provenance")
    oracle_cfg = {k: v for k, v in cfg["oracle"].items() if k not in workflow_only}
    rows = {
        i: {"molecule": starts.molecules[c.molecule_id].name, "atoms": len(c.species)} for i, c in enumerate(starts)
    }
    with tempfile.TemporaryDirectory() as tmp:
        settings = oracle_settings(oracle_cfg)
        settings.cache_dir = args.cache or tmp
        with Oracle(settings) as oracle:
            for name in ("geometric", "lbfgs"):
                t0 = time.perf_counter()
                out = oracle_trajectories(
                    oracle, starts, fmax=1e-3, max_steps=200, max_displacement=0.2, optimiser=name
                )
                seconds = time.perf_counter() - t0
                for row in reference_test_set(out):
                    traj = row.props["traj"]
                    rows[traj][f"{name}_calls"] = row.props["reference_frames"]
                    rows[traj][f"{name}_E"] = row.props["e_opt"]
                    rows[traj][f"{name}_converged"] = row.props["end"] == "converged"
                print(f"[{name}] {seconds:.0f} s", file=sys.stderr, flush=True)
    argv = find_psi4_python(oracle_cfg.get("psi4_python"))
    table = GetPeriodicTable()
    t0 = time.perf_counter()
    for i, c in enumerate(starts):
        task = {
            "symbols": [table.GetElementSymbol(int(z)) for z in c.species],
            "xyz": np.asarray(c.coordinates).tolist(),
            "method": f"{oracle_cfg['method']}/{oracle_cfg['basis']}",
            "options": oracle_cfg.get("options", {}),
        }
        with tempfile.TemporaryDirectory() as scratch:
            done = subprocess.run(
                [*argv, "-c", OPTKING], input=json.dumps(task), capture_output=True, text=True, cwd=scratch
            )
        if done.returncode:
            print(f"optking failed on {rows[i]['molecule']}: {done.stderr[-500:]}", file=sys.stderr)
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        rows[i] |= {"optking_calls": result["gradients"], "optking_E": result["energy"]}
    print(f"[optking] {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

    df = pd.DataFrame(rows.values())
    energies = [f"{n}_E" for n in ("geometric", "lbfgs", "optking") if f"{n}_E" in df]
    lowest = df[energies].min(axis=1)
    for col in energies:
        df[col.replace("_E", "_dE_kcal")] = (df[col] - lowest) * KCAL
    df = df.drop(columns=energies)
    print(df.to_markdown(index=False, floatfmt=".3g"))
    calls = [c for c in df if c.endswith("_calls")]
    print("\nmean gradients: " + ", ".join(f"{c.removesuffix('_calls')} {df[c].mean():.1f}" for c in calls))


if __name__ == "__main__":
    main()
