"""Overhead of golf.oracle.oracle over bare psi4.gradient calls.

Labels the same ~20 RDKit ETKDG conformations (5 each of ethanol, acetic acid, ethylene glycol,
glycine) twice, alternating, ``--repeats`` times:

- peer: one Psi4 process running ``psi4.geometry`` + ``psi4.gradient`` + ``psi4.core.clean()`` in
  a loop (what a hand-written labelling script does),
- ours: ``Oracle.label`` with one worker and no cache (so every conformation is a real Psi4 call).

Both use the same interpreter, level of theory, threads and memory. The best time of each is
reported, without process start-up (psi4 import) and with it, and the CPU time of the Psi4
process(es), which a busy shared machine disturbs less than wall time. Target: overhead < 5%.

    .venv/bin/python bench/label_overhead.py [--basis 6-31g] [--threads 1] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from rdkit import Chem
from rdkit.Chem import AllChem

from golf import data
from golf.oracle.oracle import Oracle, OracleSettings, find_psi4_python

SMILES = ("CCO", "CC(=O)O", "OCCO", "NCC(=O)O")

# The peer: a plain Psi4 loop, timed inside its own process so start-up is reported apart.
PEER = """
import json, os, sys, time
t0 = time.perf_counter()
import psi4
t_import = time.perf_counter() - t0
job = json.load(open(sys.argv[1]))
symbols = {1: "H", 6: "C", 7: "N", 8: "O"}
psi4.set_output_file(os.devnull, False)
psi4.set_num_threads(job["threads"])
psi4.set_memory(job["memory_mb"] * 1024 * 1024)
energies = []
t1 = time.perf_counter()
for species, coords in job["conformations"]:
    lines = ["0 1"] + [f"{symbols[z]} {x:.12f} {y:.12f} {w:.12f}" for z, (x, y, w) in zip(species, coords)]
    mol = psi4.geometry("\\n".join(lines + ["units ang", "symmetry c1", "nocom", "noreorient"]))
    grad, wfn = psi4.gradient(job["method"], molecule=mol, return_wfn=True)
    energies.append(wfn.energy())
    psi4.core.clean()
t_loop = time.perf_counter() - t1
os.write(int(sys.argv[2]), json.dumps({"import_s": t_import, "loop_s": t_loop, "energies": energies}).encode())
"""


def conformations(per_molecule: int, seed: int) -> data.Dataset:
    ds = data.Dataset()
    for mid, smiles in enumerate(SMILES):
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        params = AllChem.ETKDGv3()
        params.randomSeed = seed
        ids = AllChem.EmbedMultipleConfs(mol, numConfs=per_molecule, params=params)
        ds.molecules[mid] = data.Molecule(mid, smiles)
        species = [a.GetAtomicNum() for a in mol.GetAtoms()]
        for cid in ids:
            ds.conformers.append(data.Conformer(mid, cid, species, mol.GetConformer(cid).GetPositions()))
    return ds


def children_cpu_s() -> float:
    """User + system CPU seconds of all finished child processes (robust to a busy machine)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_peer(argv: list[str], ds: data.Dataset, args) -> dict:
    job = {
        "method": f"{args.method}/{args.basis}",
        "threads": args.threads,
        "memory_mb": args.memory_mb,
        "conformations": [(c.species.tolist(), c.coordinates.tolist()) for c in ds],
    }
    env = dict(os.environ)  # the same thread settings the oracle gives its workers
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(args.threads)
    with tempfile.TemporaryDirectory(prefix="golf-bench-") as tmp:
        with open(os.path.join(tmp, "job.json"), "w") as f:
            json.dump(job, f)
        read, write = os.pipe()  # results on their own pipe: Psi4's prints cannot mix in
        cpu = children_cpu_s()
        start = time.perf_counter()
        proc = subprocess.Popen(
            [*argv, "-c", PEER, os.path.join(tmp, "job.json"), str(write)],
            cwd=tmp,
            env=env,
            pass_fds=(write,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        os.close(write)
        with os.fdopen(read) as f:
            text = f.read()
        _, err = proc.communicate()
        total = time.perf_counter() - start
    if proc.returncode != 0 or not text:
        sys.exit(f"peer Psi4 loop failed: {err.decode()[-2000:]}")
    out = json.loads(text)
    out["total_s"] = total
    out["cpu_s"] = children_cpu_s() - cpu
    return out


def run_ours(ds: data.Dataset, args) -> dict:
    settings = OracleSettings(
        method=args.method, basis=args.basis, threads=args.threads, memory_mb=args.memory_mb, workers=1
    )
    cpu = children_cpu_s()
    start = time.perf_counter()
    with Oracle(settings) as oracle:
        t1 = time.perf_counter()
        labelled = oracle.label(ds, progress=False)
        t2 = time.perf_counter()
    total = time.perf_counter() - start
    cpu = children_cpu_s() - cpu  # the worker's CPU time (our own process only waits on pipes)
    assert oracle.calls == len(ds), (oracle.calls, len(ds))
    return {
        "start_s": t1 - start,
        "loop_s": t2 - t1,
        "total_s": total,
        # our side's share of the wall time per task, measured in the same moments as the Psi4 work
        # (one worker: the label wall time minus the time the worker spent inside its tasks)
        "protocol_s": (t2 - t1 - oracle.worker_seconds) / len(ds),
        "cpu_s": cpu,
        "energies": [c.energy for c in labelled],
        "statuses": labelled.status_counts(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="hf")
    parser.add_argument("--basis", default="6-31g")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--memory-mb", type=int, default=1000)
    parser.add_argument("--per-molecule", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    ds = conformations(args.per_molecule, args.seed)
    argv = find_psi4_python(None)
    print(f"{len(ds)} conformations of {', '.join(SMILES)}; {args.method}/{args.basis}, {args.threads} thread(s)")
    peers, ours = [], []
    for r in range(args.repeats):
        peers.append(run_peer(argv, ds, args))
        ours.append(run_ours(ds, args))
        print(
            f"  repeat {r + 1}: peer loop {peers[-1]['loop_s']:.2f} s (total {peers[-1]['total_s']:.2f} s), "
            f"oracle label {ours[-1]['loop_s']:.2f} s (total {ours[-1]['total_s']:.2f} s); "
            f"Psi4 process CPU {peers[-1]['cpu_s']:.2f} s vs {ours[-1]['cpu_s']:.2f} s",
            flush=True,
        )
    de = np.max(np.abs(np.array(peers[0]["energies"]) - np.array(ours[0]["energies"])))
    assert ours[0]["statuses"] == {"ok": len(ds)}, ours[0]["statuses"]
    peer_loop = min(p["loop_s"] for p in peers)
    our_loop = min(o["loop_s"] for o in ours)
    peer_total = min(p["total_s"] for p in peers)
    our_total = min(o["total_s"] for o in ours)
    print(f"max |E_oracle - E_peer| = {de:.2e} Hartree")
    rows = [
        (f"labelling, best of {args.repeats}", peer_loop, our_loop),
        (f"with start-up, best of {args.repeats}", peer_total, our_total),
        (f"Psi4 process CPU, best of {args.repeats}", min(p["cpu_s"] for p in peers), min(o["cpu_s"] for o in ours)),
    ]
    print(f"{'':30s}{'peer (bare psi4)':>18s}{'golf.oracle.oracle':>14s}{'ratio':>8s}")
    for name, peer, our in rows:
        print(f"{name:30s}{peer:16.2f} s{our:12.2f} s{our / peer:8.3f}")
    overhead = [100 * (our / peer - 1) for _, peer, our in rows]
    protocol = min(o["protocol_s"] for o in ours)
    per_call = peer_loop / len(ds)
    print(
        f"golf.oracle's own time per task (pipes, JSON, threads): {1e3 * protocol:.1f} ms of {per_call:.2f} s per call"
    )
    print(
        f"overhead: {overhead[0]:+.1f}% labelling wall time, {overhead[1]:+.1f}% with start-up, "
        f"{overhead[2]:+.1f}% CPU time (target < 5%)"
    )


if __name__ == "__main__":
    main()
