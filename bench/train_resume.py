"""Training speed (gradient steps per second) and what resumable checkpoints cost.

Trains the config's NNP (``golf.study.jobs.new_model``, the model the workflow builds) on
MMFF-labelled RDKit conformations of the config's molecule list, or of a few nablaDFT-sized
drug-like molecules (``--large``, about 20-45 atoms), at the config's batch size (or
``--batch``), alternating, ``--repeats`` times:

- peer: ``golf.train.trainer.train`` without a checkpoint,
- ours: the same run writing a checkpoint every ``--every`` steps (default 1, so the difference
  is the cost of one checkpoint write, printed with its share at the default of 1000 steps).

Each run writes a metrics row every 5 steps; the median of the per-step times of these
intervals, over ``--repeats`` runs, is reported (start-up and the bursts of other work on a
shared machine drop out), with the 10th percentile and the CPU time per step. Validation is off
(``val_fraction = 0``). The rate sizes SLURM runtimes: a training job needs steps / rate seconds plus start-up.

    .venv/bin/python bench/train_resume.py [--config config/config.yaml] [--large] [--batch 64]
        [--threads 1] [--steps 40] [--every 1] [--repeats 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from golf.chem.conformers import read_molecule_list
from golf.cli import config as golf_config
from golf.data.dataset import Conformer, Dataset, Molecule
from golf.study.jobs import new_model
from golf.train.trainer import TrainSettings, train
from golf.units import HARTREE_TO_KCALPERMOL

# nablaDFT-sized drug-like molecules (nablaDFT: 8-62 atoms, most 30-45).
LARGE = (
    "CC(=O)Nc1ccc(O)cc1",  # paracetamol, 20 atoms
    "CC(=O)Oc1ccccc1C(=O)O",  # aspirin, 21
    "Cn1cnc2c1c(=O)n(C)c(=O)n2C",  # caffeine, 24
    "CC(C)Cc1ccc(C(C)C(=O)O)cc1",  # ibuprofen, 33
    "CCN(CC)CC(=O)Nc1c(C)cccc1C",  # lidocaine, 39
    "COc1ccc2[nH]cc(CCNC(C)=O)c2c1",  # melatonin, 33
    "CC(C)NCC(O)COc1cccc2ccccc12",  # propranolol, 41
    "O=C(O)Cc1ccccc1Nc1c(Cl)cccc1Cl",  # diclofenac, 30
)


def dataset(smiles: list[str], per_molecule: int, seed: int) -> Dataset:
    """RDKit conformations labelled with MMFF energies and forces, in Hartree (realistic magnitudes)."""
    molecules, conformers = {}, []
    for mid, smi in enumerate(smiles):
        mol = Chem.AddHs(Chem.MolFromSmiles(smi))
        ids = AllChem.EmbedMultipleConfs(mol, numConfs=per_molecule, randomSeed=seed + mid)
        props = AllChem.MMFFGetMoleculeProperties(mol)
        if not ids or props is None:
            continue
        molecules[mid] = Molecule(mid, smi)
        z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
        for cid in ids:
            ff = AllChem.MMFFGetMoleculeForceField(mol, props, confId=cid)
            x = mol.GetConformer(cid).GetPositions()
            e = ff.CalcEnergy() / HARTREE_TO_KCALPERMOL
            f = -np.array(ff.CalcGrad()).reshape(-1, 3) / HARTREE_TO_KCALPERMOL
            conformers.append(Conformer(mid, int(cid), z, x, e, f, status="ok"))
    return Dataset(molecules, conformers, {"level_of_theory": "mmff94"})


def step_times(model, d0, settings: TrainSettings, checkpoint, every: int, csv: Path) -> tuple[np.ndarray, float]:
    """Seconds per step of each metrics interval (from the CSV's elapsed_s), and CPU seconds per step.

    Per-interval times let the median ignore the bursts of other work on a shared machine.
    """
    c0 = time.process_time()
    train(model, d0, None, settings, metrics_csv=csv, progress=False, checkpoint=checkpoint, checkpoint_every=every)
    cpu = (time.process_time() - c0) / settings.steps
    h = pd.read_csv(csv)
    return np.diff(h["elapsed_s"].to_numpy()) / np.diff(h["step"].to_numpy()), cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--large", action="store_true", help="nablaDFT-sized molecules instead of the config's list")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: the config's train.batch_size)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--every", type=int, default=1, help="steps between checkpoints (1: the cost of one write)")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    config = golf_config.load(args.config)
    if args.large:
        smiles = list(LARGE)
    else:
        smiles = [spec.smiles for spec in read_molecule_list(config["molecules"])[0]]
    t = config["train"]
    batch = args.batch or t["batch_size"]
    d0 = dataset(smiles, per_molecule=max(4, -(-batch // len(smiles))), seed=0)  # at least one full batch
    model = new_model(config, d0)
    n_atoms = np.array([len(c.species) for c in d0.conformers])
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"config {args.config}: {config['nnp'].get('architecture', 'ani')} NNP, {n_params} parameters;"
        f" {len(d0.conformers)} conformations of {len(d0.molecules)} molecules, atoms mean {n_atoms.mean():.1f}"
        f" max {n_atoms.max()}; batch {batch}, {args.threads} thread(s), device cpu"
    )

    keys = ("lr", "lr_min_factor", "rho", "grad_clip", "seed")
    run = TrainSettings(
        steps=args.steps,
        batch_size=batch,
        val_fraction=0.0,  # no validation: the metrics rows then time training steps only
        eval_every=5,
        device="cpu",
        **{k: t[k] for k in keys},
    )
    times = {"peer": [], "ours": []}
    cpu = {"peer": [], "ours": []}
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "metrics.csv"
        warm = TrainSettings(**{**run.__dict__, "steps": 3})
        step_times(model, d0, warm, None, 1, csv)  # first-call costs of TorchANI and the allocator
        for _ in range(args.repeats):
            for name, path in (("peer", None), ("ours", Path(tmp) / "train.ckpt")):
                per_step, cpu_per_step = step_times(model, d0, run, path, args.every, csv)
                times[name].extend(per_step)
                cpu[name].append(cpu_per_step)
    peer, ours = np.median(times["peer"]), np.median(times["ours"])
    write = max(0.0, ours - peer) * args.every  # seconds per checkpoint
    size_mb = 3 * 4 * n_params / 1e6  # the model and Adam's two moments, float32 (+ the best model with validation)
    print(
        f"peer (no checkpoint)        : {1 / peer:8.2f} steps/s ({peer * 1e3:.1f} ms/step median wall,"
        f" {np.percentile(times['peer'], 10) * 1e3:.1f} 10th percentile, {min(cpu['peer']) * 1e3:.1f} CPU)"
    )
    print(
        f"ours (checkpoint every {args.every:>4}): {1 / ours:8.2f} steps/s ({ours * 1e3:.1f} ms/step median wall,"
        f" {np.percentile(times['ours'], 10) * 1e3:.1f} 10th percentile, {min(cpu['ours']) * 1e3:.1f} CPU)"
    )
    print(f"ours / peer                 : {peer / ours:8.3f}")
    print(f"one checkpoint write        : {write * 1e3:8.1f} ms (about {size_mb:.1f} MB)")
    print(f"its share at every=1000     : {write / (write + 1000 * peer):8.4f}")
    print(f"hours per 10^5 steps        : {1e5 * peer / 3600:8.2f}")


if __name__ == "__main__":
    main()
