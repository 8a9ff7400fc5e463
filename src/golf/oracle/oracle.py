"""The genuine oracle O_G: Psi4 energies and forces, a label cache, a status for every row.

The Psi4 processes are :class:`golf.oracle.worker_pool.WorkerPool`'s (start, timeouts, crashes,
restarts); this module is the oracle proper: what a task is, the cache, the statuses and the
public API (:class:`Oracle`). The paper calls ``psi4.gradient`` at wB97X-D/def2-SVP with Psi4's
default SCF settings, in workers with a 600 s timeout (golf-paper.md §4.1); those are the defaults.

Every conformation gets a result with a status from :data:`golf.data.dataset.STATUSES`:

- ``ok``: energy (Hartree) and forces (Hartree/Angstrom),
- ``scf_not_converged``: the worker's SCF fallback ladder (more iterations, damping, SOSCF, level
  shift where Psi4 has it, GWH and core guesses) was exhausted,
- ``timeout``: the task ran past ``timeout_s``; the worker is killed and restarted, no retry,
- ``worker_crashed``: the worker died on the task twice (it is restarted and the task retried once),
- ``oracle_error``: anything else (e.g. atoms on top of each other, impossible multiplicity),
- ``skipped_nonfinite``: non-finite coordinates; Psi4 is not called.

A batch never aborts on a bad conformation; reasons go to the log.

Label cache: one JSON file per result under ``cache_dir`` (``ab/cd/<sha256>.json``), keyed by
elements, coordinates rounded to 1e-6 Angstrom, charge, multiplicity, method, basis, Psi4 version
and the explicit Psi4 options. Files are written to a temporary name and renamed into place, so
concurrent jobs (also on NFS, where sqlite breaks) can share a cache: the worst case is two jobs
computing the same label and one rename winning. Failures are cached too, with their status and
reason, so a resume does not pay for them again (600 s per timeout at the paper's level). They are
repeated on request: ``retry_failed`` repeats every remembered failure, and a remembered timeout is
repeated anyway when ``timeout_s`` is now longer than the one it ran out of. Failures that were
ours, not the conformation's (a worker that could not be restarted), are not remembered.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from golf.data.dataset import STATUSES, Dataset
from golf.oracle.worker_pool import PROGRAMS, OracleUnavailable, WorkerPool, find_psi4_python

__all__ = [
    "OracleUnavailable",
    "OracleSettings",
    "OracleResult",
    "LabelCache",
    "Oracle",
    "find_psi4_python",
    "level_of_theory",
]

log = logging.getLogger(__name__)

XTB_METHODS = ("gfn2-xtb", "gfn1-xtb")  # tblite's Hamiltonians (IPEA1 is for ionisation potentials)
# tblite's calculator settings (golf.oracle._xtb_worker); a Psi4 option left in a config that now
# names xtb would fail every label, so it is refused up front.
XTB_OPTIONS = ("accuracy", "max-iter", "mixer-damping", "temperature", "guess")

# Failures a later run may reuse: they come from the conformation and these settings, not from
# our side (a call that never reached Psi4 is not a failure of the conformation).
REMEMBERED_FAILURES = ("scf_not_converged", "timeout", "worker_crashed", "oracle_error")


@dataclass
class OracleSettings:
    """How the oracle runs. Defaults reproduce the paper's oracle (golf-paper.md §4.1).

    ``options`` are Psi4 options set on every task (e.g. ``{"scf_type": "df"}``); they also win
    over the SCF fallback ladder's settings and are part of the cache key.
    """

    method: str = "wb97x-d"
    basis: str = "def2-svp"  # not used by xtb (its methods carry their basis)
    program: str = "psi4"  # "psi4", or "xtb" (GFN2-xTB or GFN1-xTB through tblite)
    threads: int = 1  # per worker
    memory_mb: int = 2000  # per worker, given to psi4.set_memory
    timeout_s: float = 600.0  # per task
    workers: int = 1
    psi4_python: str | None = None  # None: found with `psi4 --psiapi-path`
    cache_dir: str | None = None  # None: no label cache
    scratch_dir: str | None = None  # parent of the workers' scratch folders (None: $TMPDIR); /dev/shm is fast
    options: dict[str, Any] = field(default_factory=dict)
    retry_failed: bool = False  # repeat failures the cache remembers (else only longer timeouts)

    def __post_init__(self):
        problems = []
        if self.program not in PROGRAMS:
            problems.append(f"program must be one of {', '.join(PROGRAMS)}, not {self.program!r}")
        elif self.program == "xtb":
            self.basis = ""  # GFN-xTB has its own minimal basis: not part of the label's key
            if self.method.lower() not in XTB_METHODS:
                problems.append(f"the xtb program's method is one of {', '.join(XTB_METHODS)}, not {self.method!r}")
            unknown = sorted(k for k in self.options if not str(k).startswith("_") and k not in XTB_OPTIONS)
            if unknown:
                problems.append(
                    f"options {', '.join(unknown)} are not tblite's (the xtb program takes {', '.join(XTB_OPTIONS)})"
                )
        elif not self.method or not self.basis:
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
        return level_of_theory(self.method, self.basis, self.program)

    @property
    def label_options(self) -> dict[str, Any]:
        """The Psi4 options that change a label (underscore keys are test hooks, not options)."""
        return {str(k).lower(): v for k, v in sorted(self.options.items()) if not str(k).startswith("_")}


def level_of_theory(method: str, basis: str, program: str = "psi4") -> str:
    """ "method/basis" (Psi4) or the method alone (xtb, e.g. "gfn2-xtb"), lower-cased: the
    provenance that labels and models carry."""
    return method.lower() if program == "xtb" else f"{method}/{basis}".lower()


@dataclass
class OracleResult:
    """One conformation's label: energy (Hartree) and forces (atoms, 3) in Hartree/Angstrom."""

    energy: float
    forces: np.ndarray | None
    status: str
    message: str = ""
    cached: bool = False
    wall_s: float = 0.0  # seconds the worker spent on the task (0 for cache hits and rejected inputs)
    timeout_s: float | None = None  # the time limit a timeout ran out of
    remember: bool = True  # False: the failure was ours (infrastructure), a rerun must retry it

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _failure(status: str, message: str) -> OracleResult:
    assert status in STATUSES, status
    return OracleResult(float("nan"), None, status, message)


# --------------------------------------------------------------------------------------------
# Label cache


class LabelCache:
    """Oracle results (labels and remembered failures), one small JSON file per key, safe to share
    between concurrent jobs."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(species, coordinates, charge: int, multiplicity: int, method: str, basis: str, version: str,
            options: dict[str, Any] | None = None, program: str = "psi4") -> str:  # fmt: skip
        """SHA-256 of the label's inputs; coordinates are rounded to 1e-6 Angstrom (integer micro-Angstrom).
        ``version``: the program's (Psi4's keys, from before xtb, name only its version)."""
        micro = np.rint(np.asarray(coordinates, dtype=np.float64) * 1e6).astype(np.int64) + 0  # + 0: no -0
        payload = {
            "species": [int(z) for z in species],
            "coordinates_uA": micro.reshape(-1).tolist(),
            "charge": int(charge),
            "multiplicity": int(multiplicity),
            "method": method.lower(),
            "basis": basis.lower(),
            **({"psi4": version} if program == "psi4" else {"program": program, "version": version}),
            "options": {str(k).lower(): v for k, v in sorted((options or {}).items()) if not str(k).startswith("_")},
        }
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / key[2:4] / f"{key}.json"

    def get(self, key: str, n_atoms: int) -> OracleResult | None:
        """The cached result (``cached=True``): a label, or a remembered failure with its reason."""
        path = self.path(key)
        try:
            record = json.loads(path.read_text())
            status = record.get("status", "ok")  # entries written before failures were cached are labels
            if status != "ok":
                if status not in REMEMBERED_FAILURES:
                    raise ValueError(f"status {status!r}")
                timeout = record.get("timeout_s")
                return OracleResult(float("nan"), None, status, str(record.get("message", "")), cached=True,
                                    timeout_s=None if timeout is None else float(timeout))  # fmt: skip
            forces = np.asarray(record["forces"], dtype=np.float64).reshape(n_atoms, 3)
            return OracleResult(float(record["energy"]), forces, "ok", "", cached=True)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as err:  # a damaged entry is a miss, recomputed
            log.warning("label cache: ignoring unreadable %s (%s)", path, err)
            return None

    def put(self, key: str, result: OracleResult, provenance: dict[str, Any]) -> None:
        """Store a label or a failure (status, reason and, for a timeout, its time limit)."""
        path = self.path(key)
        if result.ok:
            record = {"status": "ok", "energy": result.energy, "forces": result.forces.tolist()}
        else:
            record = {"status": result.status, "message": result.message, "timeout_s": result.timeout_s}
        record |= provenance
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
    read from the cache, ``cached_failures`` failures the cache remembered (not repeated),
    ``restarts`` worker restarts, ``worker_seconds`` the wall time workers spent inside tasks
    (Psi4 plus the worker's own bookkeeping).
    """

    def __init__(self, settings: OracleSettings | None = None):
        self.settings = settings or OracleSettings()
        self.cache_hits = 0
        self.cached_failures = 0
        self.cache = LabelCache(self.settings.cache_dir) if self.settings.cache_dir else None
        s = self.settings
        self.pool = WorkerPool(s.workers, s.threads, s.psi4_python, s.scratch_dir, s.program)

    # lifecycle -------------------------------------------------------------------------------

    def start(self) -> Oracle:
        if self.pool.started:
            return self
        self.pool.start()
        log.info(
            "oracle: %d %s %s worker(s), %s, %d thread(s) and %d MB each, timeout %.0f s, cache %s",
            len(self.pool), self.settings.program, self.version, self.settings.level_of_theory, self.settings.threads,
            self.settings.memory_mb, self.settings.timeout_s, self.settings.cache_dir or "off",
        )  # fmt: skip
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop the workers (each gets ``timeout`` seconds to finish its task) and remove scratch."""
        self.pool.close(timeout)

    def __enter__(self) -> Oracle:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def version(self) -> str | None:
        """The oracle program's version (Psi4's, or tblite's as "tblite <x.y.z>")."""
        return self.pool.version

    @property
    def psi4_version(self) -> str | None:
        """Psi4's version; None for another program."""
        return self.version if self.settings.program == "psi4" else None

    @property
    def calls(self) -> int:
        return self.pool.calls

    @property
    def restarts(self) -> int:
        return self.pool.restarts

    @property
    def worker_seconds(self) -> float:
        return self.pool.worker_seconds

    @property
    def worker_pids(self) -> list[int]:
        """PIDs of the running worker processes (for monitoring and tests)."""
        return self.pool.worker_pids

    @property
    def provenance(self) -> dict[str, Any]:
        """What a label depends on besides its geometry: a dataset holds labels of one provenance."""
        return {
            "program": self.settings.program,
            "version": self.version,
            "method": self.settings.method.lower(),
            "basis": self.settings.basis.lower(),
            "options": self.settings.label_options,
        }

    # public API ------------------------------------------------------------------------------

    def gradient(self, species, coordinates, charge: int = 0, multiplicity: int = 1) -> OracleResult:
        """Energy (Hartree) and forces (atoms, 3) in Hartree/Angstrom of one conformation.

        ``species`` (atoms,) atomic numbers; ``coordinates`` (atoms, 3) in Angstrom.
        """
        return self._compute([(species, coordinates, charge, multiplicity)], progress=False)[0]

    def label(self, dataset: Dataset, progress: bool = True) -> Dataset:
        """A new dataset with the same rows in the same order, energies/forces/status filled.

        Charge and multiplicity come from ``dataset.molecules``. Failed rows keep NaN energy, no
        forces, and the failure status. ``attrs["oracle"]`` is :attr:`provenance`.
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
        out.attrs["oracle"] = self.provenance
        return out

    # internals -------------------------------------------------------------------------------

    def _reusable(self, hit: OracleResult) -> bool:
        """Whether a cached result stands, or the task runs again (a failure on request)."""
        if hit.ok:
            return True
        if self.settings.retry_failed:
            return False
        if hit.status == "timeout" and hit.timeout_s is not None:
            return float(self.settings.timeout_s) <= hit.timeout_s  # a longer limit may now succeed
        return True

    def _compute(self, inputs: list[tuple], progress: bool) -> list[OracleResult]:
        if not self.pool.started:
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
            key = LabelCache.key(species, coordinates, charge, multiplicity, s.method, s.basis, self.version,
                                 s.options, s.program)  # fmt: skip
            if key in pending:
                pending[key][1].append(i)
                continue
            hit = self.cache.get(key, len(species)) if self.cache else None
            if hit is not None and self._reusable(hit):
                if hit.ok:
                    self.cache_hits += 1
                else:
                    self.cached_failures += 1
                    hit.message = f"{hit.message} (remembered by the label cache; oracle.retry_failed repeats it)"
                results[i] = hit
                continue
            pending[key] = (_Job(key, species, coordinates, int(charge), int(multiplicity)), [i])

        bar = tqdm(total=len(inputs), file=sys.stderr, disable=not progress, unit="conf",
                   desc=f"{s.program} {s.level_of_theory}", dynamic_ncols=True)  # fmt: skip
        bar.update(sum(r is not None for r in results))  # cache hits and rejected inputs
        pool = ThreadPoolExecutor(max_workers=len(self.pool))
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
        s = self.settings
        task = {
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
        try:
            reply = self.pool.run(task, s.timeout_s)
            result = _parse_reply(reply, len(job.species))
            result.wall_s = float(reply.get("wall_s", 0.0))
            result.remember = not reply.get("infrastructure", False)
            if result.status == "timeout":
                result.timeout_s = float(s.timeout_s)
        except Exception as err:  # never lose a row, whatever went wrong on our side
            log.exception("oracle: unexpected error on task %s", job.key[:12])
            result = _failure("oracle_error", f"{type(err).__name__}: {err}")
            result.remember = False
        if result.status != "ok":
            log.warning("oracle: %s on %s (task %s): %s", result.status, _describe(job), job.key[:12], result.message)
        if self.cache is not None and (result.ok or (result.remember and result.status in REMEMBERED_FAILURES)):
            provenance = {
                "species": job.species.tolist(),
                "charge": job.charge,
                "multiplicity": job.multiplicity,
                "method": s.method,
                "basis": s.basis,
                **({"psi4_version": self.version} if s.program == "psi4" else {"program": s.program}),
                "version": self.version,
                "options": s.options,
            }
            self.cache.put(job.key, result, provenance)
        return result


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
    from golf.data.dataset import formula

    return f"{formula(job.species)} (charge {job.charge}, multiplicity {job.multiplicity})"
