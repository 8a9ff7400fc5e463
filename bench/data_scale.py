"""golf.data.dataset at paper scale against plain h5py on the same arrays (issue 12, part 5).

Two synthetic files of nablaDFT-sized molecules (41 atoms, 50 formulas):
- a trajectory file of --rows conformations (traj-500k: 5x10^5 frames), with two per-conformer
  properties as the oracle optimisation writes them;
- an evaluation frames file of 19 477 test conformations x 11 steps (the paper's D_test and its
  evaluation steps), as eval_optimize writes it.

For each: golf.data.dataset.write from conformer rows (how the workflow produces them) and golf.data.dataset.read
(whole arrays per formula group, conformers made on demand), against h5py writing and reading the
same group arrays; rows per second, the ratio, and the peak traced memory of a read against the
size of the arrays it returns.

    .venv/bin/python bench/data_scale.py                 # 5x10^5 rows and the 19 477 x 11 table
    .venv/bin/python bench/data_scale.py --rows 100000   # smaller
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import h5py
import numpy as np

from golf import data

ATOMS, FORMULAS = 41, 50


def synthetic(n: int, seed: int = 0) -> data.Dataset:
    """n labelled conformations of FORMULAS distinct 41-atom formulas (H, C, N, O counts vary)."""
    rng = np.random.default_rng(seed)
    molecules = {m: data.Molecule(m, f"mol{m}") for m in range(FORMULAS)}
    species = []
    for m in range(FORMULAS):
        z = np.full(ATOMS, 6)
        z[: 10 + m % 20] = 1
        z[-1 - m // 20] = 8
        z[-5] = 7
        species.append(z)
    coords = rng.normal(scale=2.0, size=(n, ATOMS, 3))
    forces = rng.normal(scale=0.01, size=(n, ATOMS, 3))
    energies = -1000.0 + rng.normal(size=n)
    conformers = [
        data.Conformer(
            r % FORMULAS, r // FORMULAS, species[r % FORMULAS], coords[r], energies[r], forces[r], "ok",
            {"step": r % 100, "mmff_energy": float(energies[r])},
        )
        for r in range(n)
    ]  # fmt: skip
    return data.Dataset(molecules, conformers, {"kind": "bench"})


def h5py_arrays(path: Path) -> dict[str, dict[str, np.ndarray]]:
    with h5py.File(path, "r") as f:
        return {g: {k: f[g][k][()] for k in f[g]} for g in f}


def h5py_write(path: Path, arrays: dict[str, dict[str, np.ndarray]]) -> None:
    with h5py.File(path, "w") as f:
        for g, group in arrays.items():
            for k, a in group.items():
                f[f"{g}/{k}"] = a


def measure(name: str, n: int, workdir: Path) -> None:
    ds = synthetic(n)
    ours, peer = workdir / f"{name}.h5", workdir / f"{name}-h5py.h5"
    t = time.perf_counter()
    data.write(ours, ds)
    t_write = time.perf_counter() - t
    del ds

    tracemalloc.start()
    t = time.perf_counter()
    back = data.read(ours)
    t_read = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(back) == n
    t = time.perf_counter()
    energies = back.column("energies")
    t_column = time.perf_counter() - t
    del back

    t = time.perf_counter()
    arrays = h5py_arrays(ours)
    t_h5read = time.perf_counter() - t
    size = sum(a.nbytes for g in arrays.values() for a in g.values())
    t = time.perf_counter()
    h5py_write(peer, arrays)
    t_h5write = time.perf_counter() - t

    print(f"{name}: {n} rows, arrays {size / 1e6:.0f} MB")
    print(
        f"  read : golf.data.dataset {n / t_read:10.0f} rows/s   h5py {n / t_h5read:10.0f} rows/s"
        f"   h5py/golf {t_read / t_h5read:5.2f}x   peak memory {peak / 1e6:.0f} MB = {peak / size:.2f}x the arrays"
    )
    print(
        f"  write: golf.data.dataset {n / t_write:10.0f} rows/s   h5py {n / t_h5write:10.0f} rows/s"
        f"   h5py/golf {t_write / t_h5write:5.2f}x   (golf.data.dataset from conformer rows, h5py from finished arrays)"
    )
    print(f"  one column ({len(energies)} energies) of the read dataset: {t_column * 1e3:.1f} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=500_000, help="trajectory-file rows (traj-500k: 500000)")
    p.add_argument("--eval-rows", type=int, default=19_477 * 11, help="evaluation frames (19 477 x 11)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        measure("trajectories", args.rows, Path(tmp))
        measure("evaluation-frames", args.eval_rows, Path(tmp))


if __name__ == "__main__":
    main()
