"""A long-lived Psi4 worker: the script that runs inside Psi4's own interpreter.

Run as ``<psi4 python> _psi4_worker.py --scratch DIR [--scratch-root ROOT]``. It must import only the
standard library, numpy, psi4 and its sibling :mod:`golf.oracle._worker_protocol` (stdlib only, the
task loop it shares with the xTB worker): Psi4's interpreter (Debian's ``/usr/bin/python3`` or a
conda env) does not have the golf package or its venv. :mod:`golf.oracle.oracle` starts and talks
to it.

Protocol (one JSON object per line, UTF-8):

- stdin, one task per line::

      {"id": ..., "species": [8, 1, 1], "coordinates": [[x, y, z], ...],   # Angstrom
       "charge": 0, "multiplicity": 1, "method": "hf", "basis": "sto-3g",
       "threads": 1, "memory_mb": 500, "options": {"scf_type": "pk", ...}}

  A line ``{"cmd": "exit"}`` (or end of input) stops the worker.
- results go to the file descriptor that was stdout when the worker started. Before Psi4 is
  imported, that descriptor is duplicated and fd 1 is pointed at /dev/null, so nothing Psi4 or its
  Python layer prints (qcdb prints to stdout in Psi4 1.3) can corrupt the protocol. First line::

      {"type": "hello", "psi4_version": "1.3.2", "bohr2angstroms": 0.52917721067, "pid": ...}

  then one line per task::

      {"type": "result", "id": ..., "status": "ok", "energy": E,          # Hartree
       "forces": [[fx, fy, fz], ...],                                     # Hartree/Angstrom
       "message": "", "attempts": 1, "wall_s": 0.3}

Statuses: "ok", "scf_not_converged" (fallback ladder exhausted), "oracle_error" (anything else,
with the exception in "message").

Test hooks, honoured only when the environment has ``GOLF_ORACLE_TEST_HOOKS=1``: task option
``"_test_hang": seconds`` sleeps before computing (to test timeouts and killing a busy worker) and
``"_test_crash": true`` kills the worker with SIGKILL mid-task (to test crash recovery).
"""

import argparse
import math
import os
import signal
import time

# Keep the protocol channel apart from fd 1 *before* psi4 is imported: psi4's C++ and Python
# layers may write to fd 1 at import and at any time after. A sibling of this script, stdlib only.
from _worker_protocol import exit_with_parent, send, serve

# isort: split

import numpy as np
import psi4
from psi4.driver.p4util.exceptions import SCFConvergenceError

_SYMBOLS = (
    "X H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr "
    "Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe"
).split()

# SCF fallback ladder: each rung is tried after the previous one failed to converge. Rungs whose
# options this Psi4 does not know (level_shift is new in Psi4 1.4) are skipped. Psi4's defaults
# (maxiter 100, no damping, SAD guess) come first, with a longer iteration limit. Options the caller
# set explicitly win over a rung's (so {"maxiter": 5} caps every rung at 5 iterations).
_LADDER = (
    {"maxiter": 200},
    {"maxiter": 300, "damping_percentage": 20},
    {"maxiter": 300, "damping_percentage": 20, "soscf": True},
    {"maxiter": 300, "level_shift": 0.5, "level_shift_cutoff": 1e-2},
    {"maxiter": 300, "damping_percentage": 20, "guess": "gwh"},
    {"maxiter": 300, "damping_percentage": 20, "guess": "core"},
)

_HOOKS = os.environ.get("GOLF_ORACLE_TEST_HOOKS") == "1"


def geometry_string(species, coordinates, charge, multiplicity):
    """Psi4 geometry in Angstrom, frame and symmetry fixed: forces come back in our frame."""
    lines = [f"{int(charge)} {int(multiplicity)}"]
    for z, (x, y, zc) in zip(species, coordinates, strict=True):
        z = int(z)
        if not 0 < z < len(_SYMBOLS):
            raise ValueError(f"unsupported atomic number {z}")
        # fixed-point: Psi4's geometry parser wants a decimal point; 1e-12 Angstrom resolution
        lines.append(f"{_SYMBOLS[z]} {x:.12f} {y:.12f} {zc:.12f}")
    lines += ["units ang", "symmetry c1", "nocom", "noreorient"]
    return "\n".join(lines)


def reset_psi4():
    """Forget everything of the previous task: molecules, options, variables, scratch files."""
    psi4.core.clean()
    psi4.core.clean_options()
    psi4.core.clean_variables()


def run_task(task):
    species = task["species"]
    coordinates = task["coordinates"]
    if len(species) != len(coordinates):
        raise ValueError(f"{len(species)} atomic numbers but {len(coordinates)} positions")
    options = dict(task.get("options") or {})
    hang = options.pop("_test_hang", None)
    crash = options.pop("_test_crash", None)
    if _HOOKS and hang:
        time.sleep(float(hang))
    if _HOOKS and crash:
        os.kill(os.getpid(), signal.SIGKILL)

    psi4.set_num_threads(int(task.get("threads", 1)))
    psi4.set_memory(int(task.get("memory_mb", 500)) * 1024 * 1024)
    base = {k.lower(): v for k, v in options.items()}
    if int(task.get("multiplicity", 1)) > 1:
        base.setdefault("reference", "uhf")  # Psi4 maps uhf to uks for DFT methods
    method = f"{task['method']}/{task['basis']}"

    last_error = None
    attempts = 0
    for rung in _LADDER:
        reset_psi4()
        try:
            psi4.set_options({**rung, **base})  # options fixed by the caller hold on every rung
        except Exception:  # an option this Psi4 version does not have: skip the rung
            continue
        molecule = psi4.geometry(
            geometry_string(species, coordinates, task.get("charge", 0), task.get("multiplicity", 1))
        )
        attempts += 1
        try:
            gradient, wfn = psi4.gradient(method, molecule=molecule, return_wfn=True)
        except SCFConvergenceError as err:
            last_error = err
            continue
        energy = float(wfn.energy())
        # Ha/Bohr -> Ha/Angstrom with the Bohr radius Psi4 itself used for the geometry
        forces = -np.asarray(gradient, dtype=np.float64) / psi4.constants.bohr2angstroms
        if not math.isfinite(energy) or not np.isfinite(forces).all():
            return {"status": "oracle_error", "message": "non-finite energy or gradient", "attempts": attempts}
        return {"status": "ok", "energy": energy, "forces": forces.tolist(), "attempts": attempts, "message": ""}
    message = f"SCF did not converge after {attempts} fallback attempts: {str(last_error).strip()[:300]}"
    return {"status": "scf_not_converged", "message": message, "attempts": attempts}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scratch", required=True, help="private scratch folder of this worker")
    parser.add_argument("--scratch-root", help="the oracle's scratch folder, removed if the oracle dies")
    args = parser.parse_args()
    exit_with_parent(args.scratch_root)
    os.makedirs(args.scratch, exist_ok=True)
    os.chdir(args.scratch)  # timer.dat and psi.*.clean land here, not in the caller's folder
    psi4.core.IOManager.shared_object().set_default_path(args.scratch)
    psi4.set_output_file(os.devnull, False)  # Psi4's text output is not kept; failures carry messages
    send(
        {
            "type": "hello",
            "psi4_version": psi4.__version__,
            "bohr2angstroms": psi4.constants.bohr2angstroms,
            "pid": os.getpid(),
        }
    )
    serve(run_task, after_task=reset_psi4)


if __name__ == "__main__":
    main()
