"""The worker side of the oracle protocol, shared by :mod:`golf.oracle._psi4_worker` and
:mod:`golf.oracle._xtb_worker`: standard library only, imported by path as a sibling of the
worker script (the workers run under interpreters that may lack the golf package).

Importing it keeps the protocol channel apart from fd 1: the original stdout is duplicated for
results and fd 1 is pointed at /dev/null, so nothing a program prints (Psi4's Python and C++
layers, tblite's Fortran) can corrupt the protocol. Import it before the program.
"""

import json
import os
import shutil
import sys
import threading
import time

_RESULT_FD = os.dup(1)
_devnull = os.open(os.devnull, os.O_WRONLY)
os.dup2(_devnull, 1)
os.close(_devnull)
sys.stdout = sys.stderr  # Python-level prints go to the worker's log (stderr), not to results


def send(message):
    data = (json.dumps(message) + "\n").encode()
    while data:
        n = os.write(_RESULT_FD, data)
        data = data[n:]


def exit_with_parent(scratch_root, interval_s=1.0):
    """Die when the process that started us dies (e.g. a cancelled Snakemake job), even mid-task.

    That process cannot clean up any more, so the first worker to notice removes the oracle's
    scratch folder (all its workers die the same way).
    """
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(interval_s)
        if scratch_root:
            shutil.rmtree(scratch_root, ignore_errors=True)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def serve(run_task, after_task=None):
    """Answer the tasks on stdin, one JSON line each, until ``{"cmd": "exit"}`` or end of input.

    A task never kills the worker: an exception becomes an ``oracle_error`` result with its
    message. ``after_task`` (e.g. forgetting Psi4's state) runs after every task; its errors are
    ignored.
    """
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
        if after_task is not None:
            try:
                after_task()
            except Exception:
                pass
