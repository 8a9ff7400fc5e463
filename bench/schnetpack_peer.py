"""The peer of bench/painn_throughput.py: schnetpack 2.0.4's own PaiNN, timed on the same conformations.

Runs in an environment of its own, never in the project's (schnetpack cannot be a dependency; see
golf/nnp/painn.py). Make it once:

    python3 -m venv .venv-schnetpack
    .venv-schnetpack/bin/pip install torch==2.13.0 schnetpack==2.0.4

and give its interpreter to the main bench, which runs this script and prints the ratios:

    .venv/bin/python bench/painn_throughput.py --schnetpack-python .venv-schnetpack/bin/python

schnetpack 2.0.4's package ``__init__`` imports its data loader, which imports a name torch removed
in 2.4 (``torch.utils.data.dataloader.T_co``); its model modules import nothing of the kind. So this
script loads ``schnetpack.representation``, ``.nn``, ``.atomistic`` and ``.model`` without running
the package ``__init__``: the model code is schnetpack's own, unchanged.

The model is the authors' (../shared/reference/nabladft/README.md): ``NeuralNetworkPotential`` with
``PairwiseDistances``, ``PaiNN(128, 3, BesselRBF(50, 5.0), CosineCutoff(5.0))``, ``Atomwise(128)``
and ``Forces``, the GOLF-10k weights, float32. Neighbour pairs are given two ways: every pair, as
the authors do, and the pairs within the cutoff (what schnetpack's own neighbour-list transforms
give), found inside every timed call as our model finds its own. Prints one JSON object: energies
(for the caller's check that both compute the same thing), energy+forces conformations/s per batch
size and layout, and training steps/s.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch


def _schnetpack_modules():
    spec = importlib.util.find_spec("schnetpack")
    if spec is None:
        sys.exit("schnetpack is not installed in this interpreter (see this script's docstring)")
    package = types.ModuleType("schnetpack")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["schnetpack"] = package  # the model modules, without the package __init__
    import schnetpack.atomistic as atomistic
    import schnetpack.model as model
    import schnetpack.nn as snn
    import schnetpack.properties as properties
    import schnetpack.representation as representation

    return atomistic, model, snn, properties, representation


def build_model(checkpoint: Path):
    atomistic, model, snn, properties, representation = _schnetpack_modules()
    net = model.NeuralNetworkPotential(
        representation=representation.PaiNN(
            n_atom_basis=128,
            n_interactions=3,
            radial_basis=snn.BesselRBF(n_rbf=50, cutoff=5.0),
            cutoff_fn=snn.CosineCutoff(5.0),
        ),
        input_modules=[atomistic.PairwiseDistances()],
        output_modules=[atomistic.Atomwise(n_in=128, output_key="energy"), atomistic.Forces()],
    )
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    net.load_state_dict({k.removeprefix("model."): v for k, v in state.items()}, strict=True)
    return net, properties


def batch_inputs(properties, rows: list, cutoff: float | None) -> dict:
    """schnetpack's input dictionary for ``rows`` (every pair, or those within ``cutoff``)."""
    z, r, idx_m, idx_i, idx_j, offset = [], [], [], [], [], 0
    for m, (numbers, positions) in enumerate(rows):
        n = len(numbers)
        i, j = np.nonzero(~np.eye(n, dtype=bool))
        if cutoff is not None:
            keep = np.linalg.norm(positions[j] - positions[i], axis=1) < cutoff
            i, j = i[keep], j[keep]
        z.append(numbers), r.append(positions), idx_m.append(np.full(n, m))
        idx_i.append(i + offset), idx_j.append(j + offset)
        offset += n
    n_pairs = sum(len(i) for i in idx_i)
    return {
        properties.Z: torch.as_tensor(np.concatenate(z), dtype=torch.long),
        properties.R: torch.as_tensor(np.concatenate(r), dtype=torch.float32),
        properties.idx_m: torch.as_tensor(np.concatenate(idx_m), dtype=torch.long),
        properties.idx_i: torch.as_tensor(np.concatenate(idx_i), dtype=torch.long),
        properties.idx_j: torch.as_tensor(np.concatenate(idx_j), dtype=torch.long),
        properties.offsets: torch.zeros((n_pairs, 3), dtype=torch.float32),
        properties.n_atoms: torch.as_tensor([len(x) for x, _ in rows], dtype=torch.long),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--batch-sizes", default="1,64")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--train-batch", type=int, default=64)
    p.add_argument("--train-steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the main bench and golf.train do
    import ase.db

    db = ase.db.connect(str(args.db))
    selected = list(db.select())
    rows = [(row.numbers, row.positions) for row in selected]
    net, properties = build_model(args.checkpoint)
    net.eval()
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "throughput": {}, "train": {}}
    # the energies of all rows in one batch (atomrefs subtracted), for the caller's check
    out["energies"] = net(batch_inputs(properties, rows, None))["energy"].detach().double().tolist()
    layouts = {"all pairs": None, "cutoff pairs": 5.0}
    # Each timed call finds its neighbour pairs (numpy, from the positions), as our model does
    # inside its call; schnetpack's own neighbour-list transforms (ASE, matscipy) are slower.
    for batch in (int(b) for b in args.batch_sizes.split(",") if b):
        chosen = [rows[k % len(rows)] for k in range(batch)]
        for name, cutoff in layouts.items():
            net(batch_inputs(properties, chosen, cutoff))  # untimed first call, as in the main bench
            best = float("inf")
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                net(batch_inputs(properties, chosen, cutoff))
                best = min(best, time.perf_counter() - t0)
            out["throughput"][f"{batch} {name}"] = batch / best
    # training: energy + force loss (a double backward), Adam, as golf.train.trainer does per step
    chosen = [rows[k % len(rows)] for k in range(args.train_batch)]
    labels = [selected[k % len(rows)].data for k in range(args.train_batch)]
    energies = torch.tensor([label["energy"] for label in labels])
    forces = torch.as_tensor(np.concatenate([label["forces"] for label in labels]))
    net.train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    for name, cutoff in layouts.items():
        times = []
        for _ in range(args.train_steps):
            t0 = time.perf_counter()
            result = net(batch_inputs(properties, chosen, cutoff))
            loss = (
                0.01 * ((result["energy"].double() - energies) ** 2).mean()
                + 0.99 * ((result["forces"].double() - forces) ** 2).mean()
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - t0)
        rest = times[1:] if len(times) > 1 else times
        out["train"][name] = 1.0 / float(np.median(rest))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
