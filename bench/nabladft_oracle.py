"""Our oracle (golf.oracle.oracle) against real nablaDFT labels at the paper's level, wB97X-D/def2-SVP.

The peer is data nobody here produced: ``nabladft-60.db`` (../shared/reference/nabladft, see its
README), 60 conformations labelled by the nablaDFT authors with Psi4 at wB97X-D/def2-SVP. We take
the ``--n`` smallest (fewest atoms; each call is minutes on 2 cores), compute them with
:class:`golf.oracle.oracle.Oracle` at its defaults (the paper's oracle: Psi4 defaults otherwise,
golf-paper.md §4.1) and print, per conformation and overall:

- energy: ours minus the atomrefs (the database's convention) against ``data.energy``, Hartree and
  kcal/mol; two codes at one level of theory differ by about 1e-5 Hartree from grid differences;
- forces: max and mean absolute difference against ``data.forces`` (Hartree/Angstrom).

The label cache is a temporary directory (never results/cache), so every run really calls Psi4.
Nothing is tuned to agree: differences are reported as they come.

    .venv/bin/python bench/nabladft_oracle.py                 # the smallest conformation, 1 thread
    .venv/bin/python bench/nabladft_oracle.py --n 3 --threads 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from golf.data.formats import read_atomrefs
from golf.oracle.oracle import Oracle, OracleSettings
from golf.units import HARTREE_TO_KCALPERMOL

DEFAULT_DB = Path(__file__).resolve().parents[2] / "shared" / "reference" / "nabladft" / "nabladft-60.db"


def smallest_rows(db_path: Path, n: int) -> list:
    """The n rows with the fewest atoms (ties by row id), read with ASE: the authors' own format."""
    import ase.db

    rows = list(ase.db.connect(str(db_path), type="db").select())
    if not rows:
        sys.exit(f"{db_path}: no rows")
    return sorted(rows, key=lambda r: (r.natoms, r.id))[:n]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", type=Path, default=DEFAULT_DB, help=f"ASE database (default {DEFAULT_DB})")
    p.add_argument("--n", type=int, default=1, help="how many of the smallest conformations (default 1)")
    p.add_argument("--threads", type=int, default=1, help="Psi4 threads (default 1)")
    p.add_argument("--memory-mb", type=int, default=2000, help="Psi4 memory (default 2000)")
    p.add_argument("--timeout-s", type=float, default=7200.0, help="per conformation (default 7200: a busy machine)")
    p.add_argument("--method", default="wb97x-d")
    p.add_argument("--basis", default="def2-svp")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be >= 1")
    if not args.db.is_file():
        p.error(f"no such database: {args.db}")

    atomrefs = read_atomrefs(args.db)  # Hartree per element symbol
    rows = smallest_rows(args.db, args.n)
    with tempfile.TemporaryDirectory(prefix="golf-nabladft-cache-") as cache:
        settings = OracleSettings(
            method=args.method,
            basis=args.basis,
            threads=args.threads,
            memory_mb=args.memory_mb,
            timeout_s=args.timeout_s,
            cache_dir=cache,
        )
        with Oracle(settings) as oracle:
            print(
                f"{args.db.name}: {len(rows)} smallest of the conformations ({', '.join(str(r.natoms) for r in rows)} "
                f"atoms); ours: Psi4 {oracle.psi4_version}, {settings.level_of_theory}, Psi4 defaults otherwise, "
                f"{args.threads} thread(s)",
                flush=True,
            )
            de, dfmax, dfmae = [], [], []
            for r in rows:
                t0 = time.perf_counter()
                res = oracle.gradient(r.numbers, r.positions)
                wall = time.perf_counter() - t0
                if not res.ok:
                    print(f"row id={r.id}: {res.status} after {wall:.0f} s: {res.message}", flush=True)
                    continue
                ref_e = float(np.asarray(r.data["energy"]).reshape(-1)[0])
                ref_f = np.asarray(r.data["forces"], dtype=np.float64)
                offset = sum(atomrefs[s] for s in r.symbols)
                ours = res.energy - offset  # the database's convention: atomrefs subtracted
                diff = ours - ref_e
                df = np.abs(res.forces - ref_f)
                de.append(diff)
                dfmax.append(float(df.max()))
                dfmae.append(float(df.mean()))
                print(
                    f"row id={r.id} ({r.natoms} atoms, {r.get('smiles')}): {wall:.0f} s\n"
                    f"  energy: ours total {res.energy:.8f} Ha, minus atomrefs {ours:.8f}; data.energy {ref_e:.8f}; "
                    f"ours - nablaDFT {diff:+.3e} Ha = {diff * HARTREE_TO_KCALPERMOL:+.4f} kcal/mol\n"
                    f"  forces: max |dF| {df.max():.3e}, MAE {df.mean():.3e} Ha/A "
                    f"(max |F| nablaDFT {np.abs(ref_f).max():.3e})",
                    flush=True,
                )
    if not de:
        print("no conformation was labelled")
        return 1
    de = np.array(de)
    print(
        f"over {len(de)} conformation(s): |dE| max {np.abs(de).max():.3e} Ha "
        f"({np.abs(de).max() * HARTREE_TO_KCALPERMOL:.4f} kcal/mol), mean dE {de.mean():+.3e} Ha; "
        f"forces max |dF| {max(dfmax):.3e}, MAE {np.mean(dfmae):.3e} Ha/A "
        f"(DFT grid differences: about 1e-5 Ha)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
