"""The paper's run, simulated: a dry run of config/paper.yaml on a synthetic paper-sized input.

Builds, in a temporary folder, a D0 of 10 000 labelled conformations of 4 000 molecules and a
test set of 19 477 conformations of 10 000 molecules (golf-paper.md §5), written with
``golf.data.dataset`` in the project's format and named under ``data.d0`` / ``data.test`` (imported by
rules/import.smk, as a user brings the authors' D-0.db and D-test.db). The conformations are
copies of the 60 nablaDFT conformations (``/work/shared/reference/nabladft/nabladft-60.db``,
29-53 atoms, their ωB97X-D/def2-SVP labels) with 0.01 Å random displacements and distinct
molecule ids: valid drug-like geometries, no DFT. Then it runs the real Snakemake

    snakemake -n --snakefile Snakefile --configfile config/paper.yaml --replace-workflow-config
        --config data={d0: ..., test: ...} --directory TMP --quiet rules

and prints the jobs per rule, the wall time and peak memory (``os.wait4`` of the child) of the
dry run, next to the peer measured in the same run: the same Snakemake asked for one file
(``results/imported/d0.h5``, a one-job DAG), which is start-up, parsing and config validation
without the full DAG. Then the oracle calls the config implies and their core-hours at the cost
of one DFT call at the paper's level: 590 CPU-s (golf-paper.md §8, paper §4; ``--dft-cpu-s``
for a measured figure).

The rules open no data file while the DAG is built (input functions only name paths), so the
data's size matters to the jobs, not to the dry run; the DAG grows with golf.rounds x
oracle.chunks. ``snakemake`` applies the workflow's profile (profiles/default) as it would for a
user. ``--traj-steps`` and ``--ref-steps`` (mean DFT optimisation length, default the paper's
~100 Cartesian steps, §4) and ``--train-rate`` (steps/s from bench/train_resume.py) size the
per-job work printed last: the figures that SLURM runtimes must cover.

``--scale s`` simulates a fraction s of the paper's run: data sizes, golf.rounds,
oracle.chunks and traj.budget times s (rounded up), so the job count grows about as s^2
(rounds x chunks). Several values measure how the dry run scales:

    .venv/bin/python bench/paper_dryrun.py                      # the paper's size
    .venv/bin/python bench/paper_dryrun.py --scale 0.1 0.3 1.0  # scaling
    .venv/bin/python bench/paper_dryrun.py --dft-cpu-s 590 --train-rate 0.07
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import yaml

from golf.cli import config as golf_config
from golf.data.dataset import Conformer, Dataset, Molecule, write
from golf.data.formats import import_file

ROOT = Path(__file__).resolve().parents[1]
NABLADFT = Path("/work/shared/reference/nabladft/nabladft-60.db")

# The paper's data (golf-paper.md §5): D0 4 000 molecules / ~10 000 conformations; D_test
# 19 477 conformations of ~10 000 molecules.
D0_MOLECULES, D0_CONFORMATIONS = 4_000, 10_000
TEST_MOLECULES, TEST_CONFORMATIONS = 10_000, 19_477
# Paper §4: one ωB97X-D/def2-SVP gradient of a D0 conformation, 590 CPU-s on average.
PAPER_DFT_CPU_S = 590.0
# Paper §4: a Cartesian DFT optimisation of a D0 conformation takes about 100 steps on average.
PAPER_TRAJ_STEPS = 100


def synthetic(source: Dataset, n_molecules: int, n_conformations: int, first_id: int, split: str, rng) -> Dataset:
    """n_conformations copies of the source's conformations over n_molecules new molecules.

    Molecule m takes source conformation m mod len(source) (its SMILES, atom order and label);
    its conformations are that geometry displaced by N(0, 0.01 Å) per coordinate, so geometries
    stay valid (bonds change by ~1%) and no two rows are equal. Conformations are shared out as
    evenly as the counts allow (D0: 2 or 3 per molecule, as nablaDFT's 2.5).
    """
    if n_conformations < n_molecules:
        raise ValueError(f"{n_conformations} conformations cannot cover {n_molecules} molecules")
    base = source.conformers
    per, extra = divmod(n_conformations, n_molecules)
    molecules, conformers = {}, []
    for m in range(n_molecules):
        src = base[m % len(base)]
        mid = first_id + m
        molecules[mid] = Molecule(mid, source.smiles(src), name=f"synthetic-{split}-{m}", split=split)
        for cid in range(per + (m < extra)):
            xyz = src.coordinates + rng.normal(0.0, 0.01, src.coordinates.shape)
            conformers.append(Conformer(mid, cid, src.species, xyz, src.energy, src.forces, status="ok"))
    attrs = {k: v for k, v in source.attrs.items() if k in ("energy_convention", "atomrefs")}
    attrs |= {"source": f"synthetic copies of {NABLADFT.name} (bench/paper_dryrun.py)"}
    return Dataset(molecules, conformers, attrs)


def write_input(folder: Path, scale: float, seed: int) -> dict[str, str]:
    """The synthetic D0 and test set at ``scale`` of the paper's size; returns the data: keys."""
    source = import_file(NABLADFT)
    rng = np.random.default_rng(seed)
    sizes = {
        "d0": (math.ceil(D0_MOLECULES * scale), math.ceil(D0_CONFORMATIONS * scale), 0, "train"),
        "test": (math.ceil(TEST_MOLECULES * scale), math.ceil(TEST_CONFORMATIONS * scale), 10**6, "test"),
    }
    paths = {}
    for name, (n_mol, n_conf, first_id, split) in sizes.items():
        paths[name] = str(folder / "data" / f"{name}.h5")
        write(paths[name], synthetic(source, n_mol, n_conf, first_id, split, rng))
    return paths


def scaled_overrides(paper: dict, scale: float) -> dict:
    """Config values that make a fraction ``scale`` of the paper's run (nothing at 1)."""
    if scale == 1:
        return {}
    return {
        "golf": {**paper["golf"], "rounds": math.ceil(paper["golf"]["rounds"] * scale)},
        "oracle": {**paper["oracle"], "chunks": math.ceil(paper["oracle"]["chunks"] * scale)},
        "traj": {**paper["traj"], "budget": math.ceil(paper["traj"]["budget"] * scale)},
    }


def snakemake(workdir: Path, configfiles: list[Path], data: dict, targets: list[str]) -> tuple[str, dict]:
    """Run a Snakemake dry run; its output and cost: wall and CPU seconds, peak memory (MiB, maxrss).

    CPU time is what the DAG costs on an idle login node; wall time also counts waiting for a
    core on a shared machine."""
    cmd = [
        str(Path(sys.executable).parent / "snakemake"),
        *targets,
        "-n",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--configfile",
        *map(str, configfiles),
        "--replace-workflow-config",
        "--directory",
        str(workdir),
        "--quiet",
        "rules",  # the job stats table only: 4x10^4 jobs' details would time the terminal
        # Snakemake reads --config values as strings (fine for paths); numbers go in a configfile.
        "--config",
        f"data={yaml.safe_dump(data, default_flow_style=True, width=10**6).strip()}",
    ]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        # Snakemake resolves the Snakefile's relative paths (configfile:, molecules) from the
        # working directory; the checkout's config/ is linked into it.
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
        _, status, usage = os.wait4(proc.pid, 0)  # rusage of this child alone
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        raise SystemExit(f"snakemake failed ({proc.returncode}):\n{' '.join(cmd)}\n{text[-4000:]}")
    return text, {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "mib": usage.ru_maxrss / 1024}


def job_counts(text: str) -> Counter:
    """The first "Job stats" table of a Snakemake run's output, as rule -> jobs."""
    counts, inside = Counter(), False
    for line in text.splitlines():
        if line.startswith("Job stats:"):
            inside = True
            continue
        if inside:
            m = re.match(r"^(\S+)\s+(\d+)\s*$", line)
            if m and m.group(1) == "total":
                return counts
            if m:
                counts[m.group(1)] = int(m.group(2))
    raise SystemExit(f"no job stats in Snakemake's output:\n{text[-4000:]}")


def oracle_calls(cfg: dict, n_d0: int, n_test: int, jobs: Counter, traj_steps: int, ref_steps: int) -> dict:
    """Oracle (DFT) calls the validated config implies, by purpose."""
    k, chunks = golf_config.traj_budget(cfg), cfg["oracle"]["chunks"]
    share = -(-k // chunks)  # rules/common.smk get_traj_params
    # A chunk starts whole trajectories until its share is spent (golf.oracle.trajectories), so it
    # runs ceil(share / length) of them; the gather keeps k. Frame 0 is D0's label (a cache hit).
    traj_run = chunks * math.ceil(share / traj_steps) * traj_steps
    # Each study seed repeats the rounds, the control and traj-k; D0 and the references are shared.
    seeds = len(cfg.get("study", {}).get("seeds", [0]))
    models = jobs["eval_optimize"]  # every model the report compares (all seeds, MMFF included)
    calls = {
        "D0 labels": 0 if cfg["data"]["d0"] else n_d0,
        f"GOLF rounds (K) x {seeds} seed(s)": seeds * golf_config.golf_budget(cfg),
    }
    if cfg.get("control", {}).get("random"):
        calls[f"random control x {seeds} seed(s)"] = seeds * golf_config.golf_budget(cfg)
    calls[f"traj-{k} trajectories run x {seeds} seed(s)"] = seeds * traj_run
    # imported test labels are not in the oracle's cache, so the start frame is a call too
    calls["reference optimisations"] = 0 if cfg["data"]["test_minima"] else n_test * (ref_steps + 1)
    steps = len(cfg["evaluation"]["steps"])
    calls[f"evaluation ({models} models x {steps} steps)"] = models * n_test * steps
    return calls


def final_models_evaluation(cfg: dict, n_test: int) -> int:
    """Evaluation calls if only the paper's models were evaluated: baseline, the last GOLF round,
    traj-k and MMFF (the workflow evaluates every round's model)."""
    models = 4 if cfg["golf"]["rounds"] else 2
    return models * n_test * len(cfg["evaluation"]["steps"])


def job_work(cfg: dict, n_d0: int, n_test: int, traj_steps: int, ref_steps: int) -> dict:
    """Work of one job of each oracle and training rule: DFT calls, or gradient steps."""
    chunks, golf = cfg["oracle"]["chunks"], cfg["golf"]
    k, steps = golf_config.traj_budget(cfg), len(cfg["evaluation"]["steps"])
    work = {}
    if not cfg["data"]["d0"]:
        work["label_chunk, set d0 (calls)"] = -(-n_d0 // chunks)
    work["label_chunk, set round-r (calls)"] = -(-golf["per_round"] // chunks)
    work["label_chunk, set eval-model (calls)"] = -(-n_test * steps // chunks)
    if not cfg["data"]["test_minima"]:
        work["oracle_optimize, set reference (calls)"] = -(-n_test // chunks) * (ref_steps + 1)
    work["oracle_optimize, set traj (calls)"] = math.ceil(-(-k // chunks) / traj_steps) * traj_steps
    u = golf["utd_ratio"]
    work["train_baseline (steps)"] = cfg["train"]["baseline_steps"]
    work["golf_train (steps)"] = u * golf["per_round"]  # U per new label of the round
    work["train_traj (steps)"] = u * max(golf_config.golf_budget(cfg), 1)
    return work


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "config" / "paper.yaml"))
    ap.add_argument("--scale", type=float, nargs="+", default=[1.0], help="fractions of the paper's run")
    ap.add_argument("--dft-cpu-s", type=float, default=PAPER_DFT_CPU_S, help="CPU-s per DFT call (paper §4: 590)")
    ap.add_argument("--traj-steps", type=int, default=PAPER_TRAJ_STEPS, help="mean DFT trajectory length")
    ap.add_argument("--ref-steps", type=int, default=PAPER_TRAJ_STEPS, help="mean steps of a reference optimisation")
    ap.add_argument(
        "--train-rate", type=float, default=None, help="training steps/s (bench/train_resume.py) for job hours"
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if any(not 0 < s <= 1 for s in args.scale):
        ap.error("--scale values must lie in (0, 1]")
    paper = yaml.safe_load(Path(args.config).read_text())

    for scale in args.scale:
        with tempfile.TemporaryDirectory(prefix="paper-dryrun-") as tmp:
            tmp = Path(tmp)
            (tmp / "config").symlink_to(ROOT / "config")
            t0 = time.perf_counter()
            data = write_input(tmp, scale, args.seed)
            t_data = time.perf_counter() - t0
            data = {**(paper.get("data") or {}), **data}
            overrides = scaled_overrides(paper, scale)
            configs = [Path(args.config)]
            if overrides:
                configs.append(tmp / "scale.yaml")
                configs[-1].write_text(yaml.safe_dump(overrides))
            cfg = golf_config.validate(copy.deepcopy({**paper, **overrides, "data": data}))  # fills in defaults
            n_d0, n_test = math.ceil(D0_CONFORMATIONS * scale), math.ceil(TEST_CONFORMATIONS * scale)

            _, peer = snakemake(tmp, configs, data, ["results/imported/d0.h5"])
            text, full = snakemake(tmp, configs, data, [])
            jobs = job_counts(text)

            print(
                f"\n== scale {scale:g}: D0 {n_d0} conformations of {math.ceil(D0_MOLECULES * scale)} molecules,"
                f" test {n_test} of {math.ceil(TEST_MOLECULES * scale)} (written in {t_data:.1f} s);"
                f" golf.rounds {cfg['golf']['rounds']}, oracle.chunks {cfg['oracle']['chunks']},"
                f" traj.budget {golf_config.traj_budget(cfg)}"
            )
            print("jobs per rule:")
            for rule, n in sorted(jobs.items(), key=lambda item: (-item[1], item[0])):
                print(f"  {rule:<22}{n:>8}")
            total = sum(jobs.values())
            print(f"  {'total':<22}{total:>8}")
            for name, run in (("dry run, whole DAG", full), ("peer, one-job DAG", peer)):
                print(f"{name:<27}: {run['wall']:8.1f} s wall, {run['cpu']:6.1f} s CPU, {run['mib']:6.0f} MiB peak RSS")
            cost = {key: full[key] - peer[key] for key in full}
            print(
                f"DAG cost over the peer     : {cost['wall']:8.1f} s wall, {cost['cpu']:6.1f} s CPU,"
                f" {cost['mib']:6.0f} MiB; per job {cost['wall'] / total * 1e3:.2f} ms wall,"
                f" {cost['cpu'] / total * 1e3:.2f} ms CPU, {cost['mib'] / total * 1024:.1f} KiB"
            )
            print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

            calls = oracle_calls(cfg, n_d0, n_test, jobs, args.traj_steps, args.ref_steps)
            print(
                f"oracle calls and core-hours at {args.dft_cpu_s:g} CPU-s per DFT call"
                f" ({'paper §4' if args.dft_cpu_s == PAPER_DFT_CPU_S else '--dft-cpu-s'}):"
            )
            for what, n in calls.items():
                print(f"  {what:<38}{n:>11,} calls {n * args.dft_cpu_s / 3600:>13,.0f} core-h")
            n = sum(calls.values())
            years = n * args.dft_cpu_s / 3600 / 24 / 365
            print(f"  {'total':<38}{n:>11,} calls {n * args.dft_cpu_s / 3600:>13,.0f} core-h ({years:.1f} CPU-years)")
            final = final_models_evaluation(cfg, n_test)
            print(
                f"  {'(evaluation of the final models only)':<38}{final:>11,} calls"
                f" {final * args.dft_cpu_s / 3600:>13,.0f} core-h"
            )

            # A label's wall time is its CPU time over the worker's threads (paper: 4 threads, ~150 s).
            label_h = args.dft_cpu_s / cfg["oracle"]["threads"] / 3600
            print(
                f"work of one job (a label: {label_h * 3600:.0f} s wall at oracle.threads {cfg['oracle']['threads']};"
                f" training at {args.train_rate or 'no --train-rate'} steps/s):"
            )
            for what, n in job_work(cfg, n_d0, n_test, args.traj_steps, args.ref_steps).items():
                hours = (
                    n * label_h
                    if what.endswith("(calls)")
                    else (n / args.train_rate / 3600 if args.train_rate else None)
                )
                print(f"  {what:<38}{n:>11,} {'' if hours is None else f'{hours:10.1f} h'}")
            empty = max(0, cfg["oracle"]["chunks"] - cfg["golf"]["per_round"])
            print(f"  label_chunk jobs of a round with no row: {empty} of {cfg['oracle']['chunks']}")


if __name__ == "__main__":
    main()
