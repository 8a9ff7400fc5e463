"""A long-lived GFN-xTB worker (tblite): the xTB program behind :class:`golf.oracle.oracle.Oracle`.

Run as ``<python> _xtb_worker.py --scratch DIR [--scratch-root ROOT]`` by an interpreter that has
numpy and tblite (the project's venv, or the conda env of ``envs/psi4.yaml``, which has both). It imports only the
standard library, numpy and tblite, and speaks the protocol of :mod:`golf.oracle._psi4_worker`
(tasks on stdin, one JSON line each; results on the original stdout), with the hello line::

    {"type": "hello", "program": "xtb", "version": "tblite 0.8.0", "pid": ...}

A task's ``method`` is "gfn2-xtb" or "gfn1-xtb"; ``basis`` is not used (the method has its own).
``multiplicity`` m gives m - 1 unpaired electrons. ``options`` are tblite calculator settings
("accuracy", "max-iter", "mixer-damping", "temperature": the electronic temperature in Hartree, as
tblite takes it, "guess": "sad" or "eeq"); like Psi4's, they are part of the label's cache key.

Statuses: "ok"; "scf_not_converged" when the SCC does not converge after the fallback ladder
(more iterations, then stronger damping of the charge mixer, then the EEQ guess: aids that do not
change the converged answer); "oracle_error" for anything else (an element or a charge and
multiplicity tblite cannot handle), with tblite's message.
"""

import argparse
import math
import os

# The protocol channel is kept apart from fd 1 before tblite is imported: its Fortran layer
# writes to fd 1. A sibling of this script, stdlib only.
from _worker_protocol import exit_with_parent, send, serve

# isort: split

import numpy as np
from tblite.exceptions import TBLiteRuntimeError
from tblite.interface import Calculator
from tblite.library import get_version

BOHR_TO_ANGSTROM = 0.52917721067  # CODATA 2014, as golf.units and Psi4 1.3: positions go in in Bohr
METHODS = {"gfn2-xtb": "GFN2-xTB", "gfn1-xtb": "GFN1-xTB"}
GUESSES = {"sad": 0, "eeq": 1}
# SCC fallback ladder (tblite's settings first, then convergence aids only). Options the caller
# set explicitly win over a rung's. Iteration limits are short because the Broyden mixer's cost
# grows faster than the iteration count: on an exploded 20-atom geometry (an NNP's diverged
# final frame, which the evaluation labels) 100 / 250 / 500 iterations took 0.6 / 3.2 / 17 s,
# while sane and 0.3 A-distorted geometries converge within 15-20 (measured with tblite 0.8).
# With tblite's 250 and then 500, each such frame cost about 40 s; now about 3 s.
_LADDER = (
    {"max-iter": 100},
    {"max-iter": 150, "mixer-damping": 0.2},
    {"max-iter": 150, "mixer-damping": 0.1, "guess": "eeq"},
)


def _calculator(task, settings):
    method = METHODS.get(str(task["method"]).lower())
    if method is None:
        raise ValueError(f"unknown xTB method {task['method']!r} (one of {', '.join(METHODS)})")
    species = np.asarray(task["species"], dtype=np.int64)
    positions = np.asarray(task["coordinates"], dtype=np.float64) / BOHR_TO_ANGSTROM
    if positions.shape != (len(species), 3):
        raise ValueError(f"{len(species)} atomic numbers but positions of shape {positions.shape}")
    calc = Calculator(
        method, species, positions, charge=float(task.get("charge", 0)), uhf=int(task.get("multiplicity", 1)) - 1
    )
    calc.set("verbosity", 0)
    for key, value in settings.items():
        calc.set(key, GUESSES[str(value).lower()] if key == "guess" else value)
    return calc


def run_task(task):
    options = {str(k).lower(): v for k, v in (task.get("options") or {}).items() if not str(k).startswith("_")}
    last_error, attempts = None, 0
    for rung in _LADDER:
        calc = _calculator(task, {**rung, **options})
        attempts += 1
        try:
            result = calc.singlepoint()
        except TBLiteRuntimeError as err:
            if "not converged" not in str(err):
                raise
            last_error = err
            continue
        energy = float(result.get("energy"))
        # Hartree/Bohr -> Hartree/Angstrom with the Bohr radius the positions were given in
        forces = -np.asarray(result.get("gradient"), dtype=np.float64) / BOHR_TO_ANGSTROM
        if not math.isfinite(energy) or not np.isfinite(forces).all():
            return {"status": "oracle_error", "message": "non-finite energy or gradient", "attempts": attempts}
        return {"status": "ok", "energy": energy, "forces": forces.tolist(), "attempts": attempts, "message": ""}
    message = f"SCC did not converge after {attempts} fallback attempts: {str(last_error).strip()[:300]}"
    return {"status": "scf_not_converged", "message": message, "attempts": attempts}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scratch", required=True, help="private scratch folder of this worker")
    parser.add_argument("--scratch-root", help="the oracle's scratch folder, removed if the oracle dies")
    args = parser.parse_args()
    exit_with_parent(args.scratch_root)
    os.makedirs(args.scratch, exist_ok=True)
    os.chdir(args.scratch)
    version = ".".join(map(str, get_version()))
    send({"type": "hello", "program": "xtb", "version": f"tblite {version}", "pid": os.getpid()})
    serve(run_task)


if __name__ == "__main__":
    main()
