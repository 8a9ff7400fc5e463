"""The ``golf`` command: inspect datasets, import and export data, optimise molecules with a model.

    golf inspect results/labels/d0.h5
    golf import D-0.db -o results/imported/d0.h5
    golf import-model GOLF-10k/NNP_checkpoint_actor --atomrefs D-0.db -o golf10k.pt
    golf export --ani results/labels/d0.h5 -o d0-ani.h5
    golf optimize --model results/seed-0/models/golf-6.pt molecules.sdf -o optimised.sdf

Every expected failure (a missing or foreign file, an unsupported element, a model that does not
fit the data) ends with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from golf import data
from golf.units import HARTREE_TO_KCALPERMOL


class CLIError(Exception):
    """A user-facing error: printed as one line."""


def _expected_errors() -> tuple[type[Exception], ...]:
    """Exception types that mean bad input, not a bug (imported lazily: torch is slow to load)."""
    from golf.chem.conformers import MoleculeListError
    from golf.data.formats import FormatError

    errors: list[type[Exception]] = [CLIError, data.DataError, FormatError, MoleculeListError, FileNotFoundError]
    try:
        from golf.nnp.model import NNPError

        errors.append(NNPError)
    except ImportError:
        pass
    return tuple(errors)


# ---------------------------------------------------------------------------------------- inspect


def inspect_text(dataset: data.Dataset, path: str) -> str:
    """What a user wants to know about a dataset file, as text."""
    lines = [f"{path}"]
    attrs = dataset.attrs
    kind = attrs.get("kind", "dataset")
    lines.append(f"  kind: {kind}")
    n_train = sum(m.split == "train" for m in dataset.molecules.values())
    n_test = len(dataset.molecules) - n_train
    lines.append(f"  molecules: {len(dataset.molecules)} (train {n_train}, test {n_test})")
    lines.append(f"  conformations: {len(dataset)}")
    counts = dataset.status_counts()
    if counts:
        lines.append("  status: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda x: -x[1])))
    energies = np.array([c.energy for c in dataset if c.labelled])
    if energies.size:
        lines.append(
            f"  energies: {energies.min():.6f} .. {energies.max():.6f} Hartree "
            f"(span {np.ptp(energies) * HARTREE_TO_KCALPERMOL:.1f} kcal/mol)"
        )
        # a labelled row may lack forces (e.g. a reference minimum known by its energy only)
        with_forces = [np.abs(c.forces).max() for c in dataset if c.labelled and c.forces is not None]
        if with_forces:
            lines.append(f"  largest force component: {max(with_forces):.4f} Hartree/Angstrom")
    lines.append("  units: " + ", ".join(f"{k} {v}" for k, v in data.UNITS.items()))
    lines.append(f"  energy convention: {data.energy_convention(dataset)}")
    for key in ("level_of_theory", "psi4_version", "config_digest", "oracle_calls", "cache_hits", "round"):
        if key in attrs:
            lines.append(f"  {key}: {attrs[key]}")
    if "oracle" in attrs and isinstance(attrs["oracle"], dict):
        o = attrs["oracle"]
        lines.append(f"  oracle: {o.get('program')} {o.get('version')} {o.get('method')}/{o.get('basis')}")
    skipped = attrs.get("skipped") or []
    if skipped:
        lines.append(f"  skipped molecules: {len(skipped)}")
        lines += [f"    {s['name']} ({s['smiles']}): {s['reason']}" for s in skipped]
    per_molecule = Counter(c.molecule_id for c in dataset)
    lines.append("  per molecule:")
    for mid, mol in sorted(dataset.molecules.items()):
        lines.append(f"    {mid:4d} {mol.name or '-':20s} {mol.smiles:30s} {mol.split:5s} {per_molecule[mid]:5d}")
    return "\n".join(lines)


def cmd_inspect(args) -> None:
    for path in args.files:
        print(inspect_text(data.read(path), path))


# ---------------------------------------------------------------------------------- import/export


def cmd_import(args) -> None:
    from golf.data.formats import import_file

    options = {}
    if args.split:  # only when given: a golf-workflow .h5 takes no reader options
        options["split"] = args.split
    if args.energy_unit:
        options["energy_unit"] = args.energy_unit
    if args.total_energies:  # an ASE database whose atomrefs are listed only, not subtracted
        options["atomrefs_subtracted"] = False
    dataset = import_file(args.input, **options)
    data.write(args.output, dataset)
    print(
        f"{args.output}: {len(dataset)} conformations of {len(dataset.molecules)} molecules "
        f"({', '.join(f'{k} {v}' for k, v in dataset.status_counts().items())})"
    )


def cmd_import_model(args) -> None:
    """The GOLF authors' PaiNN checkpoint plus its database's atomrefs -> one of our checkpoints."""
    from golf.data.formats import read_atomrefs
    from golf.nnp.model import import_schnetpack_painn, save_model

    atomrefs = read_atomrefs(args.atomrefs)
    model = import_schnetpack_painn(args.checkpoint, atomrefs)
    model.meta.setdefault("source", {})["atomrefs"] = str(args.atomrefs)
    save_model(args.output, model)
    print(
        f"{args.output}: {model.architecture} model for {' '.join(model.elements)}, "
        f"total energies in Hartree (self energies: the atomrefs of {args.atomrefs})"
    )


def cmd_export(args) -> None:
    from golf.data.formats import export_ani, write_sdf, write_xyz

    dataset = data.read(args.input)
    if args.ani:
        n = export_ani(dataset, args.output)
        print(f"{args.output}: {n} labelled conformations in TorchANI's layout")
    elif args.output.endswith(".sdf"):
        write_sdf(args.output, dataset)
    elif args.output.endswith(".xyz"):
        write_xyz(args.output, dataset)
    else:
        raise CLIError(f"{args.output}: unknown output format; use .sdf, .xyz or --ani")


# ---------------------------------------------------------------------------------------- optimize


def read_structures(path: str, conformers: int, seed: int) -> data.Dataset:
    """Molecules to optimise from SDF, XYZ/extxyz, our HDF5, or a SMILES file (conformers made here)."""
    if Path(path).suffix in (".smi", ".smiles", ".txt"):
        from golf.chem.conformers import generate_conformers, read_molecule_list
        from golf.nnp.model import SUPPORTED_ELEMENTS

        specs, skipped = read_molecule_list(path)
        dataset = generate_conformers(
            specs,
            elements=list(SUPPORTED_ELEMENTS),
            per_molecule=conformers,
            test_per_molecule=conformers,
            test_fraction=0.0,
            seed=seed,
            skipped=skipped,
        )
        return dataset  # skipped molecules were logged, one line each
    from golf.data.formats import import_file

    return import_file(path)


def optimise_with_model(
    model,
    dataset: data.Dataset,
    steps: int,
    fmax: float,
    batch_size: int,
    max_displacement: float | str | None = None,
    exact_steps: bool = False,
) -> data.Dataset:
    """NNP-optimised copies of the conformers: energy = final NNP energy (Hartree) and the final
    status of :func:`golf.optim.lbfgs.optimize`: "converged" (largest force at or below ``fmax``
    Hartree/Angstrom, bonds as in the input), "broken" or "fragmented" (the bond graph changed),
    "step_limit", or "skipped_nonfinite".

    The optimiser runs the way the model was evaluated (its checkpoint's ``meta["optimizer"]``),
    except for ``max_displacement``: Angstrom, or "none" for no cap; None keeps the checkpoint's.
    ``exact_steps`` runs every trajectory for exactly ``steps`` steps (the paper's evaluation).
    Each copy keeps its record's place and atom order in the input file (``source_record``,
    ``source_order``) and the dataset its record titles, so the writers give every record back
    in its own atom order with its own title.
    """
    from golf.nnp.model import SUPPORTED_ELEMENTS
    from golf.optim.lbfgs import optimize_with_model

    covered = {SUPPORTED_ELEMENTS[s] for s in model.elements}
    missing = sorted({int(z) for c in dataset for z in c.species} - covered)
    if missing:
        raise CLIError(f"the model covers elements {' '.join(model.elements)}; the input has atomic numbers {missing}")
    overrides = {}
    if max_displacement == "none":
        overrides["max_displacement"] = None  # None removes the checkpoint's cap
    elif max_displacement is not None:
        overrides["max_displacement"] = float(max_displacement)
    trajectories = optimize_with_model(
        model,
        [c.species for c in dataset],
        [c.coordinates for c in dataset],
        steps,
        fmax=fmax,
        exact_steps=exact_steps,
        batch_size=batch_size,
        progress=True,
        **overrides,
    )
    attrs = {"kind": "nnp_optimised", "model": model.meta, "energy_convention": "total"}
    if "record_titles" in dataset.attrs:
        attrs["record_titles"] = dataset.attrs["record_titles"]
    out = data.Dataset(dict(dataset.molecules), [], attrs)
    for c, traj in zip(dataset, trajectories, strict=True):
        last = traj.n_steps
        out.conformers.append(
            data.Conformer(
                c.molecule_id,
                c.conformer_id,
                c.species,
                traj.positions[last],
                energy=float(traj.energies[last]),
                status=traj.status,
                props={
                    "steps": last,
                    "fmax": float(np.abs(traj.forces[last]).max()),
                    **{k: c.props[k] for k in ("source_record", "source_order") if k in c.props},
                },
            )
        )
    return out


def cmd_optimize(args) -> None:
    import torch

    from golf.data.formats import write_sdf, write_xyz
    from golf.nnp.model import load_model, resolve_device

    if not args.output.endswith((".sdf", ".xyz", ".h5", ".hdf5")):  # before minutes of optimisation
        raise CLIError(f"{args.output}: unknown output format; use .sdf, .xyz or .h5")
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device=resolve_device(args.device))
    dataset = read_structures(args.input, args.conformers, args.seed)
    result = optimise_with_model(
        model, dataset, args.steps, args.fmax, args.batch_size, args.max_displacement, args.exact_steps
    )
    if args.output.endswith(".sdf"):
        write_sdf(args.output, result)
    elif args.output.endswith(".xyz"):
        write_xyz(args.output, result)
    else:
        data.write(args.output, result)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(result.status_counts().items(), key=lambda kv: -kv[1]))
    print(
        f"{args.output}: {len(result)} conformations ({counts}; converged = max force <= {args.fmax} "
        "Hartree/Angstrom with the input's bonds)"
    )


# -------------------------------------------------------------------------------------------- main


def _displacement(text: str) -> float | str:
    if text.lower() == "none":
        return "none"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected Angstrom or 'none', got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 Angstrom (or 'none'), got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="golf", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="summarise golf-workflow HDF5 datasets")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("import", help="ASE db, extxyz, SDF or XYZ -> our HDF5")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--split", choices=["train", "test"], default=None, help="split of the molecules (default train)")
    p.add_argument(
        "--energy-unit",
        choices=["hartree", "ev", "kcal/mol"],
        default=None,
        help="the file's energy unit (default: the format's own: the database's declared unit or Hartree, "
        "eV for extxyz, Hartree for SDF); values that are not total energies in it are an error",
    )
    p.add_argument(
        "--total-energies",
        action="store_true",
        help="ASE database: the energies are total already and the metadata atomrefs are listed only "
        "(default: the GOLF/nablaDFT layout, atomrefs subtracted, so they are added back)",
    )
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("import-model", help="the GOLF authors' PaiNN checkpoint -> our model (total energies)")
    p.add_argument("checkpoint", help="an authors' NNP_checkpoint_actor (schnetpack PaiNN state_dict)")
    p.add_argument(
        "--atomrefs", required=True, help="the ASE database whose metadata atomrefs the model was trained on"
    )
    p.add_argument("-o", "--output", required=True, help="the model file to write (.pt)")
    p.set_defaults(func=cmd_import_model)

    p = sub.add_parser("export", help="our HDF5 -> TorchANI layout (--ani), SDF or XYZ")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--ani", action="store_true", help="labelled conformations only, for torchani.datasets")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("optimize", help="optimise molecules with a trained NNP")
    p.add_argument("input", help="SDF, XYZ (multi-frame), extxyz, our HDF5, or a SMILES file (.smi)")
    p.add_argument("-o", "--output", required=True, help=".sdf, .xyz or .h5")
    p.add_argument("--model", required=True, help="a checkpoint from results/seed-<s>/models/")
    p.add_argument("--steps", type=int, default=100, help="L-BFGS steps (default 100, the paper's T)")
    p.add_argument("--fmax", type=float, default=1e-3, help="converged below this force (Hartree/Angstrom)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--max-displacement",
        type=_displacement,
        default=None,
        help="largest atomic move per step in Angstrom, or 'none' for no cap (default: as the model was evaluated, "
        "from its checkpoint; none for models without that record)",
    )
    p.add_argument(
        "--exact-steps",
        action="store_true",
        help="run every conformation for exactly --steps steps, as the paper's evaluation does (no early stop)",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--conformers", type=int, default=1, help="conformers per SMILES (SMILES input only)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_optimize)
    return parser


def main(argv: list[str] | None = None) -> int:
    import logging
    import os

    os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")  # CPU users need no CUDA-extension notice
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except _expected_errors() as err:
        print(f"golf {args.command}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
