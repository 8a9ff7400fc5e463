"""PaiNN speed on real nablaDFT molecules: energy+forces throughput, batched L-BFGS, training steps.

One process, the 60 conformations of ``nabladft-60.db`` (29-53 atoms, mean 41; see
../shared/reference/nabladft/README.md), tiled to each batch size. Every figure is printed next
to a named peer measured in the same run:

  (1) energy+forces throughput (conformations/s, forward + force backward, float32) at each
      ``--batch-sizes`` of
        - PaiNN, the paper's size (128 features, 3 interactions, 50 Bessel functions, 5 A), in our
          flat layout with the pairs inside the cutoff only,
        - the same model with ``network.pairs = "all"`` (every pair: the authors' layout),
        - the default study's ANI backbone (``golf.study.jobs.new_model`` with config/config.yaml);
  (2) geometry optimisation with PaiNN, in model evaluations per second (conformation-evaluations:
      one batched call of k conformations counts k), ``--opt-conf`` conformations, ``--steps``
      outer steps each:
        (a) ours: ``golf.optim.lbfgs.optimize``, all conformations in one batch or in batches of
            ``--opt-batch`` (exact steps, no close-atom repair: the same semantics as (b)),
        (b) ``torch.optim.LBFGS(lr=1, max_iter=5, history_size=100)`` molecule by molecule, float32
            positions, as the authors run it,
        (c) ASE's LBFGS molecule by molecule through ``golf.optim.calculator.NNPCalculator``
            (one ASE step = one evaluation);
  (3) training steps per second (``golf.train.trainer.train``: energy + force loss, so a double backward)
      at ``--train-batch`` for PaiNN and ANI on the conformations' DFT labels (total energies =
      data.energy + atomrefs, forces), the median of the per-step times after the first step.

(4) with ``--schnetpack-python``: the same figures for schnetpack 2.0.4's own PaiNN (the peer; it runs in
    an environment of its own, see bench/schnetpack_peer.py), every pair and pairs within the
    cutoff, after checking that it computes our energies to 1e-5 Hartree; then the ratios.

Memory: glibc's allocator, left alone, returns every large freed tensor to the kernel, and a PaiNN
step then spends most of its time in page faults; ``golf.nnp.painn.keep_freed_memory`` (called when
a PaiNN model is built) turns that off. ``--default-allocator`` measures without it, for us and the
peer alike; by default the peer runs under the same setting (glibc's ``MALLOC_MMAP_MAX_`` and
``MALLOC_TRIM_THRESHOLD_``), so the ratios compare the models' code, not the allocators.

PaiNN is the authors' trained GOLF-10k checkpoint (``golf.nnp.model.import_schnetpack_painn``): trained
weights keep L-BFGS trajectories molecule-shaped, and the cost of an evaluation does not depend
on the weights. ANI is untrained (its cost does not depend on the weights either).

Defaults fit about 5 minutes on 2 busy CPU cores (one torch thread: see ``--threads``); batch
1024 and longer runs are for a GPU:

    .venv/bin/python bench/painn_throughput.py
    .venv/bin/python bench/painn_throughput.py --threads 2 --skip throughput,optimize
    .venv/bin/python bench/painn_throughput.py --schnetpack-python .venv-schnetpack/bin/python
    .venv/bin/python bench/painn_throughput.py --device cuda --batch-sizes 1,64,1024 --steps 5 \\
        --train-steps 30 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "nabladft"
CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"


def _no_network(*args, **kwargs):
    raise RuntimeError("the benchmark tried to use the network (a download?)")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def tiled(conformers: list, n: int) -> list:
    """n conformations: the list repeated as often as needed (same molecules, same geometries)."""
    return [conformers[i % len(conformers)] for i in range(n)]


class Counted:
    """``model.energies_forces`` that counts conformation-evaluations and its own time."""

    def __init__(self, model, device: torch.device):
        self.model, self.device = model, device
        self.conformations = self.calls = 0
        self.seconds = 0.0

    def __call__(self, species, coordinates):
        t0 = time.perf_counter()
        out = self.model.energies_forces(species, coordinates)
        _sync(self.device)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        self.conformations += species.shape[0]
        return out


# ---------------------------------------------------------------- (1) raw throughput
def throughput(model, conformers: list, batch: int, repeats: int, device: torch.device) -> tuple[float, float]:
    """Conformations per wall second and per CPU second (this process, all threads) of energy+forces
    on ``batch`` tiled conformations, each the best of ``repeats`` calls. CPU time is disturbed
    less than wall time by other work on a shared machine."""
    from golf.nnp.model import padded_batch

    b = padded_batch(tiled(conformers, batch))
    species, coords = b.species.to(device), b.coordinates.to(device, torch.float32)
    # an untimed first call: on CPU the first calls at a new size cost up to 3x more (memory
    # first touched, kernels chosen; measured at batch 4 and 64)
    model.energies_forces(species, coords)
    best = best_cpu = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        model.energies_forces(species, coords)
        _sync(device)
        best, best_cpu = min(best, time.perf_counter() - t0), min(best_cpu, time.process_time() - c0)
    return batch / best, batch / best_cpu


# ---------------------------------------------------------------- (2) optimisers
def bench_ours(model, species, coords, steps: int, batch: int, device: torch.device) -> dict:
    from golf.optim.lbfgs import optimize

    ef = Counted(model, device)
    t0, c0 = time.perf_counter(), time.process_time()
    # no close-atom repair (torch.optim.LBFGS has none) and no bond check: (b)'s semantics, timed alone
    trajs = optimize(ef, species, coords, steps=steps, batch_size=batch, exact_steps=True, check_bonds=False,
                     min_distance=0.0, device=device)  # fmt: skip
    _sync(device)
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "cpu": time.process_time() - c0,
        "evaluations": sum(t.evaluations for t in trajs),
        "model_seconds": ef.seconds,
        "calls": ef.calls,
        "e_drop": float(np.median([t.energies[0] - t.energies[-1] for t in trajs])),
    }


def bench_torch(model, species, coords, steps: int, device: torch.device) -> dict:
    """torch.optim.LBFGS with GOLF's settings, one conformation at a time, float32 positions."""
    ef = Counted(model, device)
    t0, c0 = time.perf_counter(), time.process_time()
    for s, c in zip(species, coords, strict=True):
        sp = torch.as_tensor(s, device=device)[None]
        x = torch.tensor(c, dtype=torch.float32, device=device, requires_grad=True)
        opt = torch.optim.LBFGS([x], lr=1.0, max_iter=5, history_size=100)

        def closure(opt=opt, sp=sp, x=x):
            opt.zero_grad()
            e, f = ef(sp, x.detach()[None])
            x.grad = -f[0]
            return e[0]

        for _ in range(steps):
            opt.step(closure)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "cpu": time.process_time() - c0, "evaluations": ef.conformations}


def bench_ase(model, species, coords, steps: int, device: torch.device) -> dict:
    import ase
    from ase.optimize import LBFGS

    from golf.optim.calculator import NNPCalculator

    calc = NNPCalculator(model, device=str(device))
    t0, c0 = time.perf_counter(), time.process_time()
    evaluations = 0
    for s, c in zip(species, coords, strict=True):
        atoms = ase.Atoms(numbers=s, positions=c)
        atoms.calc = calc
        calls = calc.calculate  # count real evaluations (ASE caches repeated geometries)
        n = 0

        def counting(*a, calls=calls, **k):
            nonlocal n
            n += 1
            return calls(*a, **k)

        calc.calculate = counting
        LBFGS(atoms, logfile=None).run(fmax=1e-12, steps=steps)  # fmax unreachable: exactly `steps` steps
        calc.calculate = calls
        evaluations += n
    return {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0, "evaluations": evaluations}


# ---------------------------------------------------------------- (3) training
def training_rate(model, d0, batch: int, steps: int, device: torch.device) -> tuple[float, float]:
    """Steps per wall second (the median of the per-step times after the first step, which pays
    for first calls) and per CPU second (the whole call, set-up included) of golf.train.trainer.train."""
    from golf.train.trainer import TrainSettings, train

    # no validation: the metrics rows (one per step) then time training steps only
    settings = TrainSettings(steps=steps, batch_size=batch, val_fraction=0.0, eval_every=1, device=str(device))
    model.requires_grad_(True)  # switched off for the evaluations above; train() copies the model
    with tempfile.TemporaryDirectory(prefix="golf-bench-") as tmp:
        csv = Path(tmp) / "metrics.csv"
        c0 = time.process_time()
        train(model, d0, None, settings, metrics_csv=csv, progress=False)
        cpu = time.process_time() - c0
        elapsed = pd.read_csv(csv)["elapsed_s"].to_numpy()  # row 0: before step 1
    per_step = np.diff(elapsed)
    rest = per_step[1:] if len(per_step) > 1 else per_step
    return 1.0 / float(np.median(rest)), steps / cpu


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def run_peer(python: str, args, default_allocator: bool) -> dict:
    """bench/schnetpack_peer.py's figures, run by ``python`` (the peer's environment)."""
    env = dict(os.environ)
    if not default_allocator:  # what golf.nnp.painn.keep_freed_memory does, for the peer process
        env.update(MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_=str(2**31 - 1))
    cmd = [python, str(Path(__file__).with_name("schnetpack_peer.py")), "--db", str(args.db), "--checkpoint",
           str(args.checkpoint), "--batch-sizes", args.batch_sizes, "--repeats", str(args.repeats), "--train-batch",
           str(args.train_batch), "--train-steps", str(args.train_steps), "--threads", str(args.threads)]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the schnetpack peer failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ratios(ours: tuple[float, float], peer: tuple[float, float]) -> str:
    return f"{ours[0] / peer[0]:7.3f}x wall, {ours[1] / peer[1]:7.3f}x CPU"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", type=Path, default=REFERENCE / "nabladft-60.db")
    p.add_argument(
        "--checkpoint", type=Path, default=REFERENCE / "golf-checkpoints" / "GOLF-10k" / "NNP_checkpoint_actor"
    )
    p.add_argument("--config", type=Path, default=CONFIG, help="the ANI backbone's config (default config/config.yaml)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument(
        "--batch-sizes", default="1,64", help="comma-separated, for (1) (default 1,64; 1024 needs a GPU's memory)"
    )
    p.add_argument(
        "--repeats", type=int, default=3, help="timed calls per figure of (1) after an untimed one (default 3)"
    )
    p.add_argument("--opt-conf", type=int, default=64, help="conformations for (2) (default 64)")
    p.add_argument("--opt-batch", type=int, default=None, help="our batch size in (2) (default: all of --opt-conf)")
    p.add_argument("--steps", type=int, default=2, help="outer optimiser steps per conformation in (2) (default 2)")
    p.add_argument("--train-batch", type=int, default=64, help="training batch for (3) (default 64)")
    p.add_argument("--train-steps", type=int, default=3, help="training steps per backbone in (3) (default 3)")
    # One thread by default: on a shared 2-core machine, two OpenMP threads made a batch-1 PaiNN
    # call 0.07-2.7 s instead of 0.02 s whenever the other core was busy (measured).
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--schnetpack-python", default=None, help="the peer's interpreter (see bench/schnetpack_peer.py)")
    p.add_argument("--default-allocator", action="store_true", help="leave glibc's malloc settings alone")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: throughput, optimize, train")
    args = p.parse_args(argv)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    skip = {s for s in args.skip.split(",") if s}
    if skip - {"throughput", "optimize", "train"}:
        p.error(f"--skip: unknown part(s) {', '.join(sorted(skip - {'throughput', 'optimize', 'train'}))}")
    sizes = [*batch_sizes, args.repeats, args.opt_conf, args.opt_batch or 1, args.steps, args.train_batch]
    if min([*sizes, args.train_steps]) < 1:
        p.error("sizes, repeats and steps must be >= 1")
    for path in (args.db, args.checkpoint, args.config):
        if not path.is_file():
            p.error(f"no such file: {path}")

    socket.socket.connect = _no_network  # nothing may be downloaded
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as golf.train.trainer does, so (1) and (3) run under the same setting
    if args.default_allocator:
        import golf.nnp.painn

        golf.nnp.painn.keep_freed_memory = lambda: False  # looked up when a PaiNN is built
    from golf.cli import config as golf_config
    from golf.data.formats import read_ase_db, read_atomrefs
    from golf.nnp.model import import_schnetpack_painn, resolve_device
    from golf.study.jobs import new_model
    from golf.units import HARTREE_TO_KCALPERMOL

    device = resolve_device(args.device)
    d0 = read_ase_db(args.db)  # total energies (data.energy + atomrefs), forces, Hartree units
    conformers = list(d0.conformers)
    n_atoms = np.array([len(c.species) for c in conformers])
    painn = import_schnetpack_painn(args.checkpoint, read_atomrefs(args.db)).to(device)
    config = golf_config.load(args.config)
    config["nnp"] = {**config["nnp"], "architecture": "ani"}
    ani = new_model(config, d0).to(device)
    for m in (painn, ani):
        m.requires_grad_(False)  # evaluations need gradients of coordinates only
    hp, ahp = painn.meta["hyperparameters"], ani.meta["hyperparameters"]
    print(
        f"device {device} ({torch.get_num_threads()} threads), torch {torch.__version__}; {len(conformers)} nablaDFT "
        f"conformations, {n_atoms.min()}-{n_atoms.max()} atoms (mean {n_atoms.mean():.1f}), tiled to each batch\n"
        f"PaiNN: {args.checkpoint.parent.name} weights, {hp['n_atom_basis']} features, {hp['n_interactions']} "
        f"interactions, {hp['n_rbf']} rbf, {hp['cutoff']} A, {sum(x.numel() for x in painn.parameters())} parameters\n"
        f"ANI ({args.config.name}): layers {ahp['layer_dims']}, radial/angular shifts {ahp['radial_shifts']}/"
        f"{ahp['angular_shifts']}, cutoffs {ahp['radial_cutoff']}/{ahp['angular_cutoff']} A, "
        f"{sum(x.numel() for x in ani.parameters())} parameters",
        flush=True,
    )

    if "throughput" not in skip:
        print("(1) energy+forces, float32, conformations/s (best of --repeats calls; wall, and per CPU second)")
        rate_by_batch = {}
        for batch in batch_sizes:
            rate = {}
            for name, model, pairs in (
                ("PaiNN", painn, "cutoff"),
                ("PaiNN all pairs", painn, "all"),
                ("ANI", ani, None),
            ):
                if pairs is not None:
                    model.network.pairs = pairs
                rate[name] = throughput(model, conformers, batch, args.repeats, device)
                print(
                    f"    batch {batch:5d}  {name:16s} {rate[name][0]:10.2f} wall  {rate[name][1]:10.2f} CPU",
                    flush=True,
                )
            painn.network.pairs = "cutoff"
            rate_by_batch[batch] = rate["PaiNN"][0]
            for peer in ("PaiNN all pairs", "ANI"):
                print(f"    batch {batch:5d}  PaiNN / {peer:16s} {_ratios(rate['PaiNN'], rate[peer])}", flush=True)

    if "optimize" not in skip:
        chosen = tiled(conformers, args.opt_conf)
        species = [c.species for c in chosen]
        coords = [c.coordinates for c in chosen]
        opt_batch = args.opt_batch or args.opt_conf
        print(f"(2) PaiNN geometry optimisation, {args.opt_conf} conformations x {args.steps} steps, evaluations/s")
        runs = {
            f"(a) golf.optim, batch {opt_batch}": bench_ours(painn, species, coords, args.steps, opt_batch, device),
            "(b) torch.optim.LBFGS one by one": bench_torch(painn, species, coords, args.steps, device),
            "(c) ASE LBFGS one by one": bench_ase(painn, species, coords, args.steps, device),
        }
        rates = {k: (r["evaluations"] / r["seconds"], r["evaluations"] / r["cpu"]) for k, r in runs.items()}
        for name, r in runs.items():
            print(
                f"    {name:34s} {rates[name][0]:10.2f} wall  {rates[name][1]:10.2f} CPU  "
                f"({r['evaluations']} evaluations)",
                flush=True,
            )
        ours = runs[list(runs)[0]]
        print(
            f"    (a): {ours['calls']} batched calls, {100 * (1 - ours['model_seconds'] / ours['seconds']):.1f}% "
            f"of the wall time outside the model, median energy drop "
            f"{ours['e_drop'] * HARTREE_TO_KCALPERMOL:.2f} kcal/mol"
        )
        for peer in list(runs)[1:]:
            print(f"    ours / {peer[4:]:30s} {_ratios(rates[list(runs)[0]], rates[peer])}", flush=True)

    if "train" not in skip:
        from golf.data.dataset import Dataset

        # enough rows for full batches without replacement (each batch draws distinct rows)
        data = Dataset(dict(d0.molecules), tiled(conformers, max(len(conformers), args.train_batch)), dict(d0.attrs))
        print(f"(3) training at batch {args.train_batch}, {args.train_steps} steps each (median after the first)")
        rates = {}
        for name, model in (("PaiNN", painn), ("ANI", ani)):
            rates[name] = training_rate(model, data, args.train_batch, args.train_steps, device)
            print(
                f"    {name:6s} {rates[name][0]:8.3f} steps/s wall  {rates[name][1]:8.3f} CPU  "
                f"(peak memory of the process so far {_peak_rss_gb():.2f} GB)",
                flush=True,
            )
        print(f"    PaiNN / ANI: {_ratios(rates['PaiNN'], rates['ANI'])}", flush=True)

    if args.schnetpack_python:
        peer = run_peer(args.schnetpack_python, args, args.default_allocator)
        from golf.nnp.model import padded_batch

        every = padded_batch(conformers)
        with torch.no_grad():
            ours = painn.network_energies(painn.element_indices(every.species), every.coordinates.float())
        ours = ours.double().cpu().numpy()
        gap = float(np.abs(np.array(peer["energies"]) - ours).max())
        print(
            f"(4) schnetpack 2.0.4 (torch {peer['torch']}, {peer['threads']} threads): "
            f"its energies are ours to {gap:.1e} Ha"
        )
        if gap > 1e-5:
            raise SystemExit("the peer does not compute our model: no ratios")
        for key, rate in peer["throughput"].items():
            batch, layout = key.split(" ", 1)
            line = f"    energy+forces batch {int(batch):5d}, {layout:12s} {rate:10.2f} conformations/s"
            if "throughput" not in skip and int(batch) in batch_sizes:
                line += f"   ours / it {rate_by_batch[int(batch)] / rate:7.3f}x"
            print(line, flush=True)
        for layout, rate in peer["train"].items():
            line = f"    training batch {args.train_batch}, {layout:12s} {rate:8.3f} steps/s"
            if "train" not in skip:
                line += f"   ours / it {rates['PaiNN'][0] / rate:7.3f}x"
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
