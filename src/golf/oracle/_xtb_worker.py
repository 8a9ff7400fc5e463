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
import json
import math
import os
import sys
import threading
import time

# The protocol channel is kept apart from fd 1 before tblite is imported: its Fortran layer
# writes to fd 1.
_RESULT_FD = os.dup(1)
_devnull = os.open(os.devnull, os.O_WRONLY)
os.dup2(_devnull, 1)
os.close(_devnull)
sys.stdout = sys.stderr

import numpy as np  # noqa: E402
from tblite.exceptions import TBLiteRuntimeError  # noqa: E402
from tblite.interface import Calculator  # noqa: E402
from tblite.library import get_version  # noqa: E402

BOHR_TO_ANGSTROM = 0.52917721067  # CODATA 2014, as golf.units and Psi4 1.3: positions go in in Bohr
METHODS = {"gfn2-xtb": "GFN2-xTB", "gfn1-xtb": "GFN1-xTB"}
GUESSES = {"sad": 0, "eeq": 1}
# SCC fallback ladder (tblite's defaults first, then convergence aids only). Options the caller
# set explicitly win over a rung's.
_LADDER = (
    {"max-iter": 250},
    {"max-iter": 500, "mixer-damping": 0.2},
    {"max-iter": 500, "mixer-damping": 0.1, "guess": "eeq"},
)


def send(message):
    data = (json.dumps(message) + "\n").encode()
    while data:
        n = os.write(_RESULT_FD, data)
        data = data[n:]


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


def exit_with_parent(interval_s=1.0):
    """Die when the process that started us dies (a cancelled job), even mid-task."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scratch", required=True, help="private scratch folder of this worker")
    parser.add_argument("--scratch-root", help="the oracle's scratch folder (unused: tblite writes no files)")
    args = parser.parse_args()
    exit_with_parent()
    os.makedirs(args.scratch, exist_ok=True)
    os.chdir(args.scratch)
    version = ".".join(map(str, get_version()))
    send({"type": "hello", "program": "xtb", "version": f"tblite {version}", "pid": os.getpid()})
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        task = json.loads(line)
        if task.get("cmd") == "exit":
            break
        start = time.perf_counter()
        try:
            result = run_task(task)
        except Exception as err:  # never die on a bad task: report it and wait for the next one
            first = str(err).strip().splitlines()
            result = {"status": "oracle_error", "message": f"{type(err).__name__}: {first[0] if first else ''}"[:400]}
        result.update(type="result", id=task.get("id"), wall_s=time.perf_counter() - start)
        send(result)


if __name__ == "__main__":
    main()
