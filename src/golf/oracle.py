"""The genuine oracle O_G: Psi4 energies and forces from long-lived worker processes.

Psi4 is not on PyPI, so it runs in its own interpreter (Debian's ``/usr/bin/python3`` with the
``psi4`` package, or a conda env from ``envs/psi4.yaml``). :class:`Oracle` starts ``workers``
copies of :mod:`golf._psi4_worker` under that interpreter and talks to them over pipes, one JSON
line per task. The paper calls ``psi4.gradient`` at wB97X-D/def2-SVP with Psi4's default SCF
settings, in workers with a 600 s timeout (golf-paper.md §4.1); those are the defaults here.

Every conformation gets a result with a status from :data:`golf.data.STATUSES`:

- ``ok``: energy (Hartree) and forces (Hartree/Angstrom),
- ``scf_not_converged``: the worker's SCF fallback ladder (more iterations, damping, SOSCF, level
  shift where Psi4 has it, GWH and core guesses) was exhausted,
- ``timeout``: the task ran past ``timeout_s``; the worker is killed and restarted, no retry,
- ``worker_crashed``: the worker died on the task twice (it is restarted and the task retried once),
- ``oracle_error``: anything else (e.g. atoms on top of each other, impossible multiplicity),
- ``skipped_nonfinite``: non-finite coordinates; Psi4 is not called.

A batch never aborts on a bad conformation; reasons go to the log.

Label cache: successful labels only are stored, one JSON file per label under ``cache_dir``
(``ab/cd/<sha256>.json``), keyed by elements, coordinates rounded to 1e-6 Angstrom, charge,
multiplicity, method, basis, Psi4 version and the explicit Psi4 options. Files are written to a
temporary name and renamed into place, so concurrent jobs (also on NFS, where sqlite breaks) can
share a cache: the worst case is two jobs computing the same label and one rename winning. Failures
are not cached, so a rerun retries them (e.g. with a longer timeout).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
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
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from golf.data import STATUSES, Dataset

__all__ = [
    "OracleUnavailable",
    "OracleSettings",
    "OracleResult",
    "LabelCache",
    "Oracle",
    "find_psi4_python",
    "label_dataset",
]

log = logging.getLogger(__name__)

WORKER_SCRIPT = Path(__file__).with_name("_psi4_worker.py")
START_TIMEOUT_S = 300.0  # importing psi4 from a cold conda env on NFS can take a minute
_HOWTO = (
    "install Psi4: as root on Debian/Ubuntu `apt-get install psi4`; with conda run the workflow with "
    "`snakemake --use-conda` (envs/psi4.yaml) or create the env yourself with `conda env create -f envs/psi4.yaml`; "
    "or set config oracle.psi4_python to a python interpreter that can `import psi4`"
)


class OracleUnavailable(RuntimeError):
    """No usable Psi4: the message says what to install or configure."""


@dataclass
class OracleSettings:
    """How the oracle runs. Defaults reproduce the paper's oracle (golf-paper.md §4.1).

    ``options`` are Psi4 options set on every task (e.g. ``{"scf_type": "df"}``); they also win
    over the SCF fallback ladder's settings and are part of the cache key.
    """

    method: str = "wb97x-d"
    basis: str = "def2-svp"
    threads: int = 1  # per worker
    memory_mb: int = 2000  # per worker, given to psi4.set_memory
    timeout_s: float = 600.0  # per task
    workers: int = 1
    psi4_python: str | None = None  # None: found with `psi4 --psiapi-path`
    cache_dir: str | None = None  # None: no label cache
    scratch_dir: str | None = None  # parent of the workers' scratch folders (None: $TMPDIR); /dev/shm is fast
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        problems = []
        if not self.method or not self.basis:
            problems.append("method and basis must be non-empty")
        if int(self.threads) < 1 or int(self.workers) < 1:
            problems.append("threads and workers must be >= 1")
        if int(self.memory_mb) < 100:
            problems.append("memory_mb must be >= 100")
        if not float(self.timeout_s) > 0:
            problems.append("timeout_s must be > 0")
        if problems:
            raise ValueError("oracle settings: " + "; ".join(problems))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> OracleSettings:
        """Settings from the config's ``oracle`` mapping; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - names)
        if unknown:
            raise ValueError(
                f"oracle settings: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}"
            )
        return cls(**config)

    @property
    def level_of_theory(self) -> str:
        return f"{self.method}/{self.basis}".lower()


@dataclass
class OracleResult:
    """One conformation's label: energy (Hartree) and forces (atoms, 3) in Hartree/Angstrom."""

    energy: float
    forces: np.ndarray | None
    status: str
    message: str = ""
    cached: bool = False
    wall_s: float = 0.0  # seconds the worker spent on the task (0 for cache hits and rejected inputs)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _failure(status: str, message: str) -> OracleResult:
    assert status in STATUSES, status
    return OracleResult(float("nan"), None, status, message)


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
# Label cache


class LabelCache:
    """Successful labels, one small JSON file per key, safe to share between concurrent jobs."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(species, coordinates, charge: int, multiplicity: int, method: str, basis: str, psi4_version: str,
            options: dict[str, Any] | None = None) -> str:  # fmt: skip
        """SHA-256 of the label's inputs; coordinates are rounded to 1e-6 Angstrom (integer micro-Angstrom)."""
        micro = np.rint(np.asarray(coordinates, dtype=np.float64) * 1e6).astype(np.int64) + 0  # + 0: no -0
        payload = {
            "species": [int(z) for z in species],
            "coordinates_uA": micro.reshape(-1).tolist(),
            "charge": int(charge),
            "multiplicity": int(multiplicity),
            "method": method.lower(),
            "basis": basis.lower(),
            "psi4": psi4_version,
            "options": {str(k).lower(): v for k, v in sorted((options or {}).items()) if not str(k).startswith("_")},
        }
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / key[2:4] / f"{key}.json"

    def get(self, key: str, n_atoms: int) -> OracleResult | None:
        path = self.path(key)
        try:
            record = json.loads(path.read_text())
            forces = np.asarray(record["forces"], dtype=np.float64).reshape(n_atoms, 3)
            return OracleResult(float(record["energy"]), forces, "ok", "", cached=True)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as err:  # a damaged entry is a miss, recomputed
            log.warning("label cache: ignoring unreadable %s (%s)", path, err)
            return None

    def put(self, key: str, result: OracleResult, provenance: dict[str, Any]) -> None:
        path = self.path(key)
        record = {"energy": result.energy, "forces": result.forces.tolist(), **provenance}
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:8]}.", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            os.replace(tmp, path)  # atomic in one folder, also on NFS: readers see all or nothing
        except OSError as err:  # the cache only saves time; a full disk must not lose the label
            log.warning("label cache: could not write %s (%s)", path, err)
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Workers


class _WorkerTimeout(Exception):
    pass


class _WorkerDied(Exception):
    pass


class _Worker:
    """One Psi4 worker process and its pipes. Used by one thread at a time."""

    def __init__(self, argv: list[str], root: Path, index: int, threads: int):
        self.argv = argv
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
        cmd = [*self.argv, str(WORKER_SCRIPT), "--scratch", str(self.scratch), "--scratch-root", str(self.root)]
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
                f"Psi4 worker did not start ({type(err).__name__.strip('_')}): {tail or 'no output'}; {_HOWTO}"
            ) from None
        if hello.get("type") != "hello":
            self.kill()
            raise OracleUnavailable(f"Psi4 worker sent {hello!r} instead of its hello line")
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
# The oracle


@dataclass
class _Job:
    key: str
    species: np.ndarray
    coordinates: np.ndarray
    charge: int
    multiplicity: int


class Oracle:
    """Psi4 energies and forces from ``settings.workers`` long-lived worker processes.

    Use as a context manager (or call :meth:`start` and :meth:`close`)::

        with Oracle(OracleSettings(method="hf", basis="sto-3g", workers=2)) as oracle:
            labelled = oracle.label(dataset)

    ``calls`` counts tasks sent to Psi4 (a retry after a crash counts again), ``cache_hits`` labels
    read from the cache, ``restarts`` worker restarts, ``worker_seconds`` the wall time workers
    spent inside tasks (Psi4 plus the worker's own bookkeeping).
    """

    def __init__(self, settings: OracleSettings | None = None):
        self.settings = settings or OracleSettings()
        self.calls = 0
        self.cache_hits = 0
        self.restarts = 0
        self.worker_seconds = 0.0  # wall time the workers spent inside tasks
        self.psi4_version: str | None = None
        self.cache = LabelCache(self.settings.cache_dir) if self.settings.cache_dir else None
        self._workers: list[_Worker] = []
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._root: Path | None = None
        self._lock = threading.Lock()
        self._next_id = 0
        self._closing = False

    # lifecycle -------------------------------------------------------------------------------

    def start(self) -> Oracle:
        if self._workers:
            return self
        self._closing = False
        argv = find_psi4_python(self.settings.psi4_python)
        self._root = Path(tempfile.mkdtemp(prefix="golf-oracle-", dir=self.settings.scratch_dir))
        try:
            workers = [_Worker(argv, self._root, i, self.settings.threads) for i in range(self.settings.workers)]
            # start all, so the psi4 imports overlap; a worker reads its hello when asked
            with ThreadPoolExecutor(len(workers)) as pool:
                hellos = list(pool.map(lambda w: w.start(), workers))
        except BaseException:
            for w in locals().get("workers", []):
                w.kill()
            shutil.rmtree(self._root, ignore_errors=True)
            raise
        self.psi4_version = hellos[0]["psi4_version"]
        self._workers = workers
        for w in workers:
            self._idle.put(w)
        log.info(
            "oracle: %d Psi4 %s worker(s), %s, %d thread(s) and %d MB each, timeout %.0f s, cache %s",
            len(workers), self.psi4_version, self.settings.level_of_theory, self.settings.threads,
            self.settings.memory_mb, self.settings.timeout_s, self.settings.cache_dir or "off",
        )  # fmt: skip
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

    def __enter__(self) -> Oracle:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def worker_pids(self) -> list[int]:
        """PIDs of the running worker processes (for monitoring and tests)."""
        return [w.proc.pid for w in self._workers if w.alive]

    # public API ------------------------------------------------------------------------------

    def gradient(self, species, coordinates, charge: int = 0, multiplicity: int = 1) -> OracleResult:
        """Energy (Hartree) and forces (atoms, 3) in Hartree/Angstrom of one conformation.

        ``species`` (atoms,) atomic numbers; ``coordinates`` (atoms, 3) in Angstrom.
        """
        return self._compute([(species, coordinates, charge, multiplicity)], progress=False)[0]

    def label(self, dataset: Dataset, progress: bool = True) -> Dataset:
        """A new dataset with the same rows in the same order, energies/forces/status filled.

        Charge and multiplicity come from ``dataset.molecules``. Failed rows keep NaN energy, no
        forces, and the failure status.
        """
        inputs, missing = [], {}
        for row, c in enumerate(dataset.conformers):
            mol = dataset.molecules.get(c.molecule_id)
            if mol is None:
                missing[row] = _failure("oracle_error", f"molecule id {c.molecule_id} not in the molecule table")
                inputs.append(None)
            else:
                inputs.append((c.species, c.coordinates, mol.charge, mol.multiplicity))
        todo = [x for x in inputs if x is not None]
        computed = iter(self._compute(todo, progress=progress))
        out = Dataset(dict(dataset.molecules), [], dict(dataset.attrs))
        for row, c in enumerate(dataset.conformers):
            r = missing[row] if row in missing else next(computed)
            out.conformers.append(
                dataclasses.replace(c, energy=r.energy, forces=r.forces, status=r.status, props=dict(c.props))
            )
        out.attrs["oracle"] = {
            "program": "psi4",
            "version": self.psi4_version,
            "method": self.settings.method,
            "basis": self.settings.basis,
            "options": self.settings.options,
        }
        return out

    # internals -------------------------------------------------------------------------------

    def _compute(self, inputs: list[tuple], progress: bool) -> list[OracleResult]:
        if not self._workers:
            self.start()
        from tqdm import tqdm

        s = self.settings
        results: list[OracleResult | None] = [None] * len(inputs)
        pending: dict[str, tuple[_Job, list[int]]] = {}  # identical inputs are computed once
        for i, (species, coordinates, charge, multiplicity) in enumerate(inputs):
            species = np.asarray(species, dtype=np.int64).reshape(-1)
            coordinates = np.asarray(coordinates, dtype=np.float64)
            if coordinates.shape != (len(species), 3):
                results[i] = _failure(
                    "oracle_error", f"coordinates of shape {coordinates.shape} for {len(species)} atoms"
                )
                continue
            if not np.isfinite(coordinates).all():
                results[i] = _failure("skipped_nonfinite", "non-finite coordinates")
                continue
            key = LabelCache.key(species, coordinates, charge, multiplicity, s.method, s.basis, self.psi4_version,
                                 s.options)  # fmt: skip
            if key in pending:
                pending[key][1].append(i)
                continue
            hit = self.cache.get(key, len(species)) if self.cache else None
            if hit is not None:
                self.cache_hits += 1
                results[i] = hit
                continue
            pending[key] = (_Job(key, species, coordinates, int(charge), int(multiplicity)), [i])

        bar = tqdm(total=len(inputs), file=sys.stderr, disable=not progress, unit="conf",
                   desc=f"psi4 {s.level_of_theory}", dynamic_ncols=True)  # fmt: skip
        bar.update(sum(r is not None for r in results))  # cache hits and rejected inputs
        pool = ThreadPoolExecutor(max_workers=len(self._workers))
        try:
            with bar:
                futures = {pool.submit(self._run, job): rows for job, rows in pending.values()}
                counts: dict[str, int] = {}
                for future in as_completed(futures):
                    rows = futures[future]
                    result = future.result()
                    for i in rows:
                        forces = None if result.forces is None else result.forces.copy()  # rows own their arrays
                        results[i] = dataclasses.replace(result, forces=forces)
                    counts[result.status] = counts.get(result.status, 0) + 1
                    bar.update(len(rows))
                    if progress:
                        bar.set_postfix(counts, refresh=False)
        except BaseException:  # Ctrl-C or a cancelled job: stop the workers now, not after the batch
            pool.shutdown(wait=False, cancel_futures=True)
            self.close(timeout=0)
            raise
        pool.shutdown()
        return results  # type: ignore[return-value]

    def _run(self, job: _Job) -> OracleResult:
        worker = self._idle.get()
        try:
            result = self._run_on(worker, job)
        except Exception as err:  # never lose a row, whatever went wrong on our side
            log.exception("oracle: unexpected error on task %s", job.key[:12])
            result = _failure("oracle_error", f"{type(err).__name__}: {err}")
        finally:
            self._idle.put(worker)
        if result.status == "ok" and self.cache is not None:
            provenance = {
                "species": job.species.tolist(),
                "charge": job.charge,
                "multiplicity": job.multiplicity,
                "method": self.settings.method,
                "basis": self.settings.basis,
                "psi4_version": self.psi4_version,
                "options": self.settings.options,
            }
            self.cache.put(job.key, result, provenance)
        elif result.status != "ok":
            log.warning("oracle: %s on %s (task %s): %s", result.status, _describe(job), job.key[:12], result.message)
        return result

    def _run_on(self, worker: _Worker, job: _Job) -> OracleResult:
        s = self.settings
        with self._lock:
            self._next_id += 1
            task_id = self._next_id
        task = {
            "id": task_id,
            "species": job.species.tolist(),
            "coordinates": job.coordinates.tolist(),
            "charge": job.charge,
            "multiplicity": job.multiplicity,
            "method": s.method,
            "basis": s.basis,
            "threads": s.threads,
            "memory_mb": s.memory_mb,
            "options": s.options,
        }
        crash_message = ""
        for attempt in (1, 2):
            if not worker.alive:
                try:
                    self._restart(worker)
                except OracleUnavailable as err:
                    return _failure("worker_crashed", f"worker could not be restarted: {err}")
            with self._lock:
                self.calls += 1
            try:
                reply = worker.request(task, s.timeout_s)
            except _WorkerTimeout:
                worker.kill()
                self._try_restart(worker)
                return _failure("timeout", f"no result within {s.timeout_s:g} s; worker killed and restarted")
            except _WorkerDied:
                code = worker.exit_code()
                crash_message = f"worker died (exit code {code}) on attempt {attempt}: {worker.stderr_tail(3)}"
                log.warning("oracle: %s; %s", crash_message, "retrying once" if attempt == 1 else "giving up")
                worker.kill()
                self._try_restart(worker)
                continue
            result = _parse_reply(reply, len(job.species))
            result.wall_s = float(reply.get("wall_s", 0.0))
            with self._lock:
                self.worker_seconds += result.wall_s
            return result
        return _failure("worker_crashed", crash_message)

    def _restart(self, worker: _Worker) -> None:
        worker.kill()
        if self._closing:
            raise OracleUnavailable("the oracle is closed")
        hello = worker.start()
        with self._lock:
            self.restarts += 1
        if hello.get("psi4_version") != self.psi4_version:
            log.warning("oracle: restarted worker runs Psi4 %s, not %s", hello.get("psi4_version"), self.psi4_version)

    def _try_restart(self, worker: _Worker) -> None:
        try:
            self._restart(worker)
        except OracleUnavailable as err:  # the next task on this worker tries again
            log.error("oracle: could not restart worker %d: %s", worker.index, err)


def _parse_reply(reply: dict[str, Any], n_atoms: int) -> OracleResult:
    status = reply.get("status")
    message = str(reply.get("message", ""))
    if status == "ok":
        try:
            energy = float(reply["energy"])
            forces = np.asarray(reply["forces"], dtype=np.float64).reshape(n_atoms, 3)
        except (KeyError, TypeError, ValueError) as err:
            return _failure("oracle_error", f"malformed worker reply: {err}")
        if not math.isfinite(energy) or not np.isfinite(forces).all():
            return _failure("skipped_nonfinite", "Psi4 returned a non-finite energy or gradient")
        return OracleResult(energy, forces, "ok")
    if status not in STATUSES:
        return _failure("oracle_error", f"unknown worker status {status!r}: {message}")
    return _failure(status, message)


def _describe(job: _Job) -> str:
    from golf.data import formula

    return f"{formula(job.species)} (charge {job.charge}, multiplicity {job.multiplicity})"


def label_dataset(dataset: Dataset, settings: OracleSettings, progress: bool = True) -> Dataset:
    """Label a dataset with a fresh :class:`Oracle` (workers started and stopped here)."""
    with Oracle(settings) as oracle:
        result = oracle.label(dataset, progress=progress)
        log.info("oracle: %d Psi4 calls, %d cache hits, %s", oracle.calls, oracle.cache_hits, result.status_counts())
        return result
