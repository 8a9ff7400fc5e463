"""A pool of long-lived oracle worker processes (Psi4, or GFN-xTB through tblite): starting them,
one task at a time each, timeouts, crashes and restarts. It speaks the worker protocol (JSON lines
of :mod:`golf.oracle._psi4_worker`, which :mod:`golf.oracle._xtb_worker` speaks too) and knows
nothing of caches or datasets; :class:`golf.oracle.oracle.Oracle` builds on it.

Psi4 is not on PyPI, so the workers run under Psi4's own interpreter (Debian's ``/usr/bin/python3``
with the ``psi4`` package, or a conda env from ``envs/psi4.yaml``), found by
:func:`find_psi4_python`. A task that runs past its timeout gets its worker killed and restarted
and a ``timeout`` reply; a worker that dies on a task is restarted and the task sent once more,
then the reply is ``worker_crashed``. Workers exit when their parent dies (they watch its pipe).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

__all__ = ["OracleUnavailable", "WorkerPool", "find_psi4_python", "PROGRAMS"]

log = logging.getLogger(__name__)

# The worker script of each oracle program; both speak the protocol of golf.oracle._psi4_worker.
WORKER_SCRIPTS = {
    "psi4": Path(__file__).with_name("_psi4_worker.py"),
    "xtb": Path(__file__).with_name("_xtb_worker.py"),
}
PROGRAMS = tuple(WORKER_SCRIPTS)
START_TIMEOUT_S = 300.0  # importing psi4 from a cold conda env on NFS can take a minute
_HOWTO = (
    "install Psi4: as root on Debian/Ubuntu `apt-get install psi4`; with conda run the workflow with "
    "`snakemake --use-conda` (envs/psi4.yaml) or create the env yourself with `conda env create -f envs/psi4.yaml`; "
    "or set config oracle.psi4_python to a python interpreter that can `import psi4`"
)


_XTB_HOWTO = "install tblite (`pip install tblite==0.8.0`; bin/setup does) into the Python that runs the workflow"


class OracleUnavailable(RuntimeError):
    """No usable Psi4: the message says what to install or configure."""


# --------------------------------------------------------------------------------------------
# Finding Psi4


def _parse_psiapi(text: str) -> tuple[str | None, str | None]:
    """(bin folder, PYTHONPATH entry) from ``psi4 --psiapi-path`` output."""
    bindir = pythonpath = None
    for line in text.splitlines():
        line = line.strip()
        for var in ("PATH", "PYTHONPATH"):
            prefix = f"export {var}="
            if line.startswith(prefix):
                value = line[len(prefix) :].strip("\"'").split(":")[0]
                if var == "PATH":
                    bindir = value
                else:
                    pythonpath = value
    return bindir, pythonpath


def _psiapi(psi4_exe: str) -> tuple[str | None, str | None]:
    try:
        out = subprocess.run([psi4_exe, "--psiapi-path"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as err:
        log.debug("psi4 --psiapi-path failed: %s", err)
        return None, None
    return _parse_psiapi(out.stdout) if out.returncode == 0 else (None, None)


def _shebang_python(psi4_exe: str, bindir: str | None) -> str | None:
    """The interpreter named in the ``psi4`` script's shebang, if it is a plain file."""
    try:
        with open(psi4_exe, "rb") as f:
            first = f.readline(512).decode(errors="replace").strip()
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    words = first[2:].split()
    if not words:
        return None
    if os.path.basename(words[0]) == "env" and len(words) > 1:  # "#!/usr/bin/env python3"
        search = os.pathsep.join(p for p in (bindir, os.environ.get("PATH", "")) if p)
        return shutil.which(words[-1], path=search)
    return words[0] if os.access(words[0], os.X_OK) else None


def _argv(python: str, pythonpath: str | None) -> list[str]:
    # `env` puts Psi4's PYTHONPATH in front and drops ours: our venv's paths must not leak into
    # Psi4's interpreter (a different Python and numpy).
    env = shutil.which("env") or "/usr/bin/env"
    argv = [env, "-u", "PYTHONHOME", "-u", "PYTHONPATH"]
    if pythonpath:
        argv.append(f"PYTHONPATH={pythonpath}")
    return argv + [python]


def find_psi4_python(configured: str | None = None) -> list[str]:
    """The argv prefix (environment included, via ``env``) that runs Psi4's Python interpreter.

    ``configured`` is config ``oracle.psi4_python``: a Python executable that can import psi4. If it
    has a ``psi4`` script beside it (Debian: /usr/bin/python3 and /usr/bin/psi4), that script's
    ``--psiapi-path`` supplies the PYTHONPATH. Without ``configured``, ``psi4`` on PATH is asked.
    Raises OracleUnavailable with what to do when neither works.
    """
    if configured:
        python = Path(configured).expanduser()
        if not python.is_file() or not os.access(python, os.X_OK):
            raise OracleUnavailable(f"config oracle.psi4_python = {configured!r} is not an executable file; {_HOWTO}")
        beside = python.parent / "psi4"
        pythonpath = _psiapi(str(beside))[1] if beside.is_file() else None
        return _argv(str(python), pythonpath)
    psi4_exe = shutil.which("psi4")
    if psi4_exe is None:
        raise OracleUnavailable(f"no `psi4` on PATH and config oracle.psi4_python is not set; {_HOWTO}")
    bindir, pythonpath = _psiapi(psi4_exe)
    python = _shebang_python(psi4_exe, bindir)
    if python is None and bindir:
        python = next((str(Path(bindir) / n) for n in ("python3", "python") if (Path(bindir) / n).is_file()), None)
    if python is None:
        raise OracleUnavailable(f"found {psi4_exe} but not the Python interpreter it runs under; {_HOWTO}")
    return _argv(python, pythonpath)


# --------------------------------------------------------------------------------------------
# Workers


class _WorkerTimeout(Exception):
    pass


class _WorkerDied(Exception):
    pass


class _Worker:
    """One worker process and its pipes. Used by one thread at a time."""

    def __init__(self, argv: list[str], root: Path, index: int, threads: int, program: str = "psi4"):
        self.argv = argv
        self.program = program
        self.index = index
        self.threads = threads
        self.root = root
        self.scratch = root / f"worker-{index}"
        self.stderr_path = root / f"worker-{index}.stderr"
        self.proc: subprocess.Popen | None = None
        self.hello: dict[str, Any] = {}
        self._buf = b""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.scratch.mkdir(parents=True)
        env = dict(os.environ)
        # BLAS/OpenMP thread pools are sized at import, before psi4.set_num_threads can act
        env.update(OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads))
        env.update(OPENBLAS_NUM_THREADS=str(self.threads))
        script = str(WORKER_SCRIPTS[self.program])
        cmd = [*self.argv, script, "--scratch", str(self.scratch), "--scratch-root", str(self.root)]
        with open(self.stderr_path, "ab") as stderr:
            try:
                self.proc = subprocess.Popen(
                    cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=env, bufsize=0
                )
            except OSError as err:
                raise OracleUnavailable(f"cannot run {' '.join(cmd)}: {err}; {_HOWTO}") from None
        self._buf = b""
        try:
            hello = self._read(timeout)
        except (_WorkerDied, _WorkerTimeout) as err:
            self.kill()
            tail = self.stderr_tail()
            raise OracleUnavailable(
                f"{self.program} worker did not start ({type(err).__name__.strip('_')}): {tail or 'no output'}; "
                f"{_HOWTO if self.program == 'psi4' else _XTB_HOWTO}"
            ) from None
        if hello.get("type") != "hello":
            self.kill()
            raise OracleUnavailable(f"{self.program} worker sent {hello!r} instead of its hello line")
        self.hello = hello
        return hello

    def stderr_tail(self, lines: int = 5) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])

    def _read(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _WorkerTimeout
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise _WorkerDied
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            raise _WorkerDied from None  # a garbled protocol line: treat the worker as broken

    def request(self, task: dict[str, Any], timeout: float) -> dict[str, Any]:
        if not self.alive:
            raise _WorkerDied
        try:
            self.proc.stdin.write((json.dumps(task) + "\n").encode())
        except (BrokenPipeError, OSError):
            raise _WorkerDied from None
        reply = self._read(timeout)
        if reply.get("id") != task["id"]:
            raise _WorkerDied
        return reply

    def exit_code(self, wait_s: float = 5.0) -> int | None:
        """The exit code of a worker whose pipe closed (negative: killed by that signal)."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(wait_s)
        except subprocess.TimeoutExpired:  # closed its pipe but still running: kill() follows
            return None

    def kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe:
                pipe.close()
        self.proc = None

    def close(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b'{"cmd": "exit"}\n')
                self.proc.stdin.close()
                self.proc.wait(timeout)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()


# --------------------------------------------------------------------------------------------
# The pool


class WorkerPool:
    """``workers`` worker processes of ``program`` ("psi4" or "xtb"), each running one task at a time.

    ``calls`` counts tasks sent (a retry after a crash counts again), ``restarts`` worker
    restarts, ``worker_seconds`` the wall time workers reported spending inside tasks.
    :meth:`run` is thread-safe: up to ``workers`` threads may call it at once.
    """

    def __init__(self, workers: int = 1, threads: int = 1, psi4_python: str | None = None,
                 scratch_dir: str | None = None, program: str = "psi4"):  # fmt: skip
        if program not in WORKER_SCRIPTS:
            raise ValueError(f"unknown oracle program {program!r} (one of {', '.join(PROGRAMS)})")
        self.program = program
        self.n_workers = workers
        self.threads = threads
        self.psi4_python = psi4_python
        self.scratch_dir = scratch_dir
        self.calls = 0
        self.restarts = 0
        self.worker_seconds = 0.0
        self.version: str | None = None  # the program's, from its workers' hello
        self._workers: list[_Worker] = []
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._root: Path | None = None
        self._lock = threading.Lock()
        self._next_id = 0
        self._closing = False

    @property
    def started(self) -> bool:
        return bool(self._workers)

    def __len__(self) -> int:
        return len(self._workers)

    def start(self) -> WorkerPool:
        if self._workers:
            return self
        self._closing = False
        # Psi4 runs under its own interpreter; tblite is a PyPI package of the workflow's own.
        argv = find_psi4_python(self.psi4_python) if self.program == "psi4" else [sys.executable]
        self._root = Path(tempfile.mkdtemp(prefix="golf-oracle-", dir=self.scratch_dir))
        try:
            workers = [_Worker(argv, self._root, i, self.threads, self.program) for i in range(self.n_workers)]
            # start all, so the psi4 imports overlap; a worker reads its hello when asked
            with ThreadPoolExecutor(len(workers)) as pool:
                hellos = list(pool.map(lambda w: w.start(), workers))
        except BaseException:
            for w in locals().get("workers", []):
                w.kill()
            shutil.rmtree(self._root, ignore_errors=True)
            raise
        self.version = _version(hellos[0])
        self._workers = workers
        for w in workers:
            self._idle.put(w)
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop the workers (each gets ``timeout`` seconds to finish its task) and remove scratch."""
        self._closing = True
        for w in self._workers:
            w.close(timeout)
        self._workers = []
        self._idle = queue.Queue()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    @property
    def worker_pids(self) -> list[int]:
        """PIDs of the running worker processes (for monitoring and tests)."""
        return [w.proc.pid for w in self._workers if w.alive]

    def run(self, task: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """The worker's reply to ``task`` (a dict with ``status``; ``id`` is set here). A timeout
        or a crash comes back as a reply with status ``timeout`` or ``worker_crashed``; a reply
        with ``"infrastructure": True`` says the failure was ours (a worker that could not be
        restarted), not the conformation's."""
        worker = self._idle.get()
        try:
            return self._run_on(worker, task, timeout_s)
        finally:
            self._idle.put(worker)

    def _run_on(self, worker: _Worker, task: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        with self._lock:
            self._next_id += 1
            task = dict(task, id=self._next_id)
        crash_message = ""
        for attempt in (1, 2):
            if not worker.alive:
                try:
                    self._restart(worker)
                except OracleUnavailable as err:
                    return _reply("worker_crashed", f"worker could not be restarted: {err}", infrastructure=True)
            with self._lock:
                self.calls += 1
            try:
                reply = worker.request(task, timeout_s)
            except _WorkerTimeout:
                worker.kill()
                self._try_restart(worker)
                return _reply("timeout", f"no result within {timeout_s:g} s; worker killed and restarted")
            except _WorkerDied:
                code = worker.exit_code()
                crash_message = f"worker died (exit code {code}) on attempt {attempt}: {worker.stderr_tail(3)}"
                log.warning("oracle: %s; %s", crash_message, "retrying once" if attempt == 1 else "giving up")
                worker.kill()
                self._try_restart(worker)
                continue
            with self._lock:
                self.worker_seconds += float(reply.get("wall_s", 0.0))
            return reply
        return _reply("worker_crashed", crash_message)

    def _restart(self, worker: _Worker) -> None:
        worker.kill()
        if self._closing:
            raise OracleUnavailable("the oracle is closed")
        hello = worker.start()
        with self._lock:
            self.restarts += 1
        if _version(hello) != self.version:
            log.warning("oracle: restarted worker runs %s %s, not %s", self.program, _version(hello), self.version)

    def _try_restart(self, worker: _Worker) -> None:
        try:
            self._restart(worker)
        except OracleUnavailable as err:  # the next task on this worker tries again
            log.error("oracle: could not restart worker %d: %s", worker.index, err)


def _version(hello: dict[str, Any]) -> str | None:
    """The program's version from a worker's hello line (the Psi4 worker names it psi4_version)."""
    return hello.get("version", hello.get("psi4_version"))


def _reply(status: str, message: str, infrastructure: bool = False) -> dict[str, Any]:
    reply: dict[str, Any] = {"status": status, "message": message}
    if infrastructure:
        reply["infrastructure"] = True
    return reply
