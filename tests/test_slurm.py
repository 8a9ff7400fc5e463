"""Cluster execution for real: a single-node SLURM on localhost runs workflows through profiles/slurm.

The module stands up SLURM 22.05 from Debian's packages (tests/slurm/slurm-localhost.sh: munge, slurmctld,
slurmd, slurm-client; no accounting database), runs Snakemake with ``--profile profiles/slurm`` adjusted on
the command line only where a real cluster differs from this one (every ``slurm_partition`` of the profile
becomes the local partition ``debug``; ``--slurm-status-command squeue`` because there is no ``sacct``; the
first status check after 2 s instead of 40 s, for speed), and compares the outputs with a local run through
``--profile profiles/default``. Proof that jobs went through ``sbatch``: every job writes the
``$SLURM_JOB_ID`` it ran in to its log, and that id must be in SLURM's own job records (``squeue -t all``,
finished jobs stay there for MinJobAge = 600 s) as a completed job of this run with the rule's name, and
in slurmctld's log as an allocation. One job is killed by ``scancel`` while it runs: Snakemake must
resubmit it (``retries``, with the attempt-scaled memory) and the workflow must still finish.

Needs root (it writes /etc/slurm/slurm.conf and starts daemons) and Debian's packages, which it installs
with apt-get when they are missing; otherwise every test is skipped with the reason. CI runs as root.
Each DAG level costs ~14 s of the plugin's polling, so the workflows under test are two or three levels deep.
Measured on 2 shared cores: the module takes 1.8-2.7 min (toy workflow through SLURM 47-70 s, the project's
labelling through SLURM 48-70 s, the local runs 4 s and 11-14 s, cluster up < 1 s, apt-get install ~6 s).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = ROOT / "tests" / "slurm" / "slurm-localhost.sh"
TOY_SNAKEFILE = ROOT / "tests" / "slurm" / "toy" / "Snakefile"
SLURM_PROFILE = ROOT / "profiles" / "slurm"
DEFAULT_PROFILE = ROOT / "profiles" / "default"
SLURM_CONF = Path("/etc/slurm/slurm.conf")
SLURM_DIR = Path(os.environ.get("GOLF_SLURM_DIR", "/tmp/golf-slurm"))
PARTITION = "debug"  # the only partition of the local cluster
RUN_TIMEOUT_S = 420  # a dead slurmd leaves jobs pending and Snakemake waiting forever: always time out
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _script_env() -> dict[str, str]:
    env = dict(os.environ, SLURM_DIR=str(SLURM_DIR))
    env.pop("SLURM_CONF", None)  # the plugin's jobstep strips it; the config must be the default path
    return env


def _missing_packages() -> list[str]:
    out = subprocess.run(
        ["bash", "-c", f"source {CLUSTER_SCRIPT} && slurm_missing_packages"],
        capture_output=True,
        text=True,
        env=_script_env(),
    )
    return out.stdout.split()


def _skip_reason() -> str | None:
    """Why this machine cannot run a local SLURM cluster, or None."""
    if not sys.platform.startswith("linux") or shutil.which("dpkg-query") is None:
        return "needs a Debian/Ubuntu Linux (dpkg, apt-get) to install SLURM from its packages"
    if os.geteuid() != 0:
        return "needs root: it writes /etc/slurm/slurm.conf and starts munged, slurmctld and slurmd (CI runs as root)"
    if SLURM_CONF.exists() and "slurm-localhost.sh" not in SLURM_CONF.read_text(errors="replace")[:200]:
        return f"{SLURM_CONF} belongs to another SLURM installation; this test does not touch it"
    if _missing_packages() and shutil.which("apt-get") is None:
        return "SLURM packages (munge slurmctld slurmd slurm-client) are missing and apt-get is not available"
    return None


def _cluster(command: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), command],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_script_env(),
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running single-node cluster for this module; its daemons are stopped by their PIDs afterwards."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    t0 = time.monotonic()
    installed = _cluster("install")
    if installed.returncode != 0:
        pytest.skip(f"could not install the SLURM packages with apt-get: {installed.stderr.strip()[-300:]}")
    t_install = time.monotonic() - t0
    try:
        up = _cluster("up", timeout=120)
        assert up.returncode == 0, f"cluster did not come up:\n{up.stdout}\n{up.stderr}"
        print(f"\nslurm: install {t_install:.1f} s, up {time.monotonic() - t0 - t_install:.1f} s")
        yield SLURM_DIR
    finally:
        down = _cluster("down", timeout=120)
        assert down.returncode == 0, f"cluster teardown failed:\n{down.stderr}"


# --- running Snakemake ---------------------------------------------------------------------------------------


def slurm_overrides(profile: Path = SLURM_PROFILE, partition: str = PARTITION) -> list[str]:
    """Command-line options that adapt the SLURM profile to the local cluster: every slurm_partition
    of the profile becomes ``partition`` (an option replaces its whole profile key, so the key's other
    entries are repeated unchanged), plus the status command and a short first status check."""
    settings = yaml.safe_load((profile / "config.yaml").read_text())
    default = {**settings.get("default-resources", {}), "slurm_partition": partition}
    set_resources = [
        f"{rule}:{name}={partition if name == 'slurm_partition' else value}"
        for rule, resources in (settings.get("set-resources") or {}).items()
        for name, value in resources.items()
    ]
    options = ["--default-resources", *(f"{k}={v}" for k, v in default.items())]
    if set_resources:
        options += ["--set-resources", *set_resources]
    # no accounting database here: sacct fails and the plugin would wait forever
    options += ["--slurm-status-command", "squeue"]
    # speed only: the first status check 2 s after a submission instead of 40 s
    options += ["--slurm-init-seconds-before-status-checks", "2"]
    return options


@dataclass
class Run:
    workdir: Path
    returncode: int
    log: str
    seconds: float
    extra: dict = field(default_factory=dict)


def _start(args: list[str], workdir: Path) -> tuple[subprocess.Popen, object]:
    workdir.mkdir(parents=True, exist_ok=True)
    out = open(workdir / "snakemake.out", "w")  # closed in _finish
    env = _script_env()
    env.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")
    proc = subprocess.Popen(
        [*SNAKEMAKE, *args],
        cwd=workdir,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # its own process group, so a timeout can stop all of it
    )
    return proc, out


def _finish(proc: subprocess.Popen, out, workdir: Path, t0: float, deadline: float) -> Run:
    try:
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # our own Snakemake and its children only
        proc.wait(timeout=30)
    finally:
        out.close()
    return Run(workdir, proc.returncode, (workdir / "snakemake.out").read_text(), time.monotonic() - t0)


def run_snakemake(args: list[str], workdir: Path, timeout: float = RUN_TIMEOUT_S) -> Run:
    t0 = time.monotonic()
    proc, out = _start(args, workdir)
    return _finish(proc, out, workdir, t0, t0 + timeout)


def slurm_args(snakefile: Path, *extra: str) -> list[str]:
    return ["-s", str(snakefile), *extra, "--profile", str(SLURM_PROFILE), *slurm_overrides()]


def local_args(snakefile: Path, *extra: str) -> list[str]:
    return ["-s", str(snakefile), *extra, "--profile", str(DEFAULT_PROFILE), "--cores", "2"]


# --- SLURM's records ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobRecord:
    job_id: int
    state: str
    rule: str
    name: str  # the plugin names every job of one Snakemake run with the run's uuid
    cpus: int
    memory: str
    partition: str


def slurm_records() -> dict[int, JobRecord]:
    """Every job slurmctld still holds (finished ones too, for MinJobAge), by job id."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-o", "%i|%T|%k|%j|%C|%m|%P"],
        capture_output=True,
        text=True,
        check=True,
        env=_script_env(),
    ).stdout
    records = {}
    for line in out.splitlines():
        job_id, state, comment, name, cpus, memory, partition = line.split("|")
        match = re.match(r"rule_(\w+?)(_wildcards_.*)?$", comment)
        rule = match.group(1) if match else ""
        records[int(job_id)] = JobRecord(int(job_id), state, rule, name, int(cpus), memory, partition)
    return records


def allocated_job_ids() -> set[int]:
    """Job ids slurmctld allocated resources to, from its log: "sched: Allocate JobId=N" from the
    main scheduler, "sched/backfill: _start_job: Started JobId=N" from the backfill scheduler."""
    text = (SLURM_DIR / "log" / "slurmctld.log").read_text(errors="replace")
    return {int(m) for m in re.findall(r"(?:sched: Allocate|backfill: _start_job: Started) JobId=(\d+)", text)}


def logged_job_id(path: Path) -> int:
    """The $SLURM_JOB_ID a job wrote to its log (the job ran inside that SLURM job)."""
    text = path.read_text().strip()
    assert text.isdigit(), f"{path} holds no SLURM job id ({text!r}): the job did not run inside SLURM"
    return int(text)


def output_files(workdir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(workdir)): p.read_bytes() for p in sorted((workdir / "results").rglob("*")) if p.is_file()
    }


def _tail(run: Run, n: int = 3000) -> str:
    return run.log[-n:]


# --- the toy workflow: sbatch, outputs, a killed job ---------------------------------------------------------


@pytest.fixture(scope="module")
def toy_runs(slurm_cluster, tmp_path_factory):
    """The toy workflow once through SLURM (its `fragile` job scancelled on the first attempt) and once locally."""
    base = tmp_path_factory.mktemp("toy")
    local = run_snakemake(local_args(TOY_SNAKEFILE), base / "local", timeout=120)

    workdir = base / "slurm"
    t0 = time.monotonic()
    proc, out = _start(slurm_args(TOY_SNAKEFILE), workdir)
    marker, killed = workdir / "fragile.marker", None
    while proc.poll() is None and time.monotonic() - t0 < 180:
        if marker.exists():
            killed = int(marker.read_text())
            # wait until SLURM itself reports the job running, then kill it the way a cluster does
            record = slurm_records().get(killed)
            if record is not None and record.state == "RUNNING":
                subprocess.run(["scancel", str(killed)], check=True, env=_script_env())
                break
        time.sleep(0.5)
    run = _finish(proc, out, workdir, t0, t0 + RUN_TIMEOUT_S)
    run.extra["killed"] = killed
    run.extra["records"] = slurm_records()
    print(f"\ntoy workflow: SLURM {run.seconds:.1f} s, local {local.seconds:.1f} s")
    return run, local


TOY_JOB_LOGS = {
    "logs/make/a.log": "make",
    "logs/make/b.log": "make",
    "logs/fragile.log": "fragile",
    "logs/summary.log": "summary",
}


def test_toy_jobs_went_through_sbatch(toy_runs):
    run, _ = toy_runs
    assert run.returncode == 0, f"Snakemake through SLURM failed:\n{_tail(run)}"
    records, allocated = run.extra["records"], allocated_job_ids()
    job_ids = {log: logged_job_id(run.workdir / log) for log in TOY_JOB_LOGS}
    assert len(set(job_ids.values())) == len(TOY_JOB_LOGS), f"jobs shared a SLURM job: {job_ids}"
    run_names = {records[i].name for i in job_ids.values() if i in records}
    assert len(run_names) == 1, f"jobs of one run must carry the run's uuid as job name: {run_names}"
    for log, rule in TOY_JOB_LOGS.items():
        record = records.get(job_ids[log])
        assert record is not None, f"{log}: SLURM has no record of job {job_ids[log]}"
        assert (record.state, record.rule, record.partition) == ("COMPLETED", rule, PARTITION), record
        assert record.job_id in allocated, f"slurmctld log has no allocation for job {record.job_id}"
    # threads: 2 reached SLURM as --cpus-per-task=2
    assert records[job_ids["logs/summary.log"]].cpus == 2
    # one sbatch per job and nothing else: make x2, fragile x2 (killed + retried), summary x1
    ours = [r for r in records.values() if r.name in run_names]
    assert sorted(r.rule for r in ours) == ["fragile", "fragile", "make", "make", "summary"]


def test_toy_outputs_match_local_run(toy_runs):
    run, local = toy_runs
    assert local.returncode == 0, f"local run failed:\n{_tail(local)}"
    assert run.returncode == 0, f"Snakemake through SLURM failed:\n{_tail(run)}"
    # the local run really ran outside SLURM (no job id in its logs)
    assert all((local.workdir / log).read_text().strip() == "" for log in TOY_JOB_LOGS)
    expected = output_files(local.workdir)
    assert sorted(expected) == ["results/a.txt", "results/b.txt", "results/fragile.txt", "results/summary.txt"]
    assert output_files(run.workdir) == expected


def test_job_killed_by_slurm_is_retried(toy_runs):
    run, _ = toy_runs
    killed, records = run.extra["killed"], run.extra["records"]
    assert killed is not None, f"the fragile job never started inside SLURM:\n{_tail(run)}"
    assert records[killed].state == "CANCELLED", records[killed]
    assert run.returncode == 0, f"the workflow did not finish after the kill:\n{_tail(run)}"
    retried = logged_job_id(run.workdir / "logs/fragile.log")
    assert retried != killed, "the output was written by the killed job, not by a retry"
    assert (records[retried].state, records[retried].rule) == ("COMPLETED", "fragile")
    assert records[retried].name == records[killed].name, "the retry came from another Snakemake run"
    # the retry is attempt 2: the rule's mem_mb = 100 * attempt reached sbatch --mem
    assert (records[killed].memory, records[retried].memory) == ("100M", "200M")
    assert (run.workdir / "results/fragile.txt").read_text() == "survived\n"
    assert "status is: 'CANCELLED'" in run.log, "Snakemake did not see SLURM's cancelled state"
    assert "Trying to restart job" in run.log, "Snakemake did not resubmit the killed job"


# --- the project's whole tiny study through sbatch ------------------------------------------------------------

TINY_CONFIG = ROOT / "tests" / "data" / "tiny.yaml"
PROJECT_TARGET = "results/labels/d0.h5"  # compared label by label with the local run
PROJECT_RULES = {  # every rule of the workflow that the tiny study runs
    "conformers", "label_chunk", "gather_labels", "train_baseline", "golf_optimize", "golf_select",
    "golf_train", "golf_round_stats", "oracle_optimize", "gather_optimisation", "train_traj",
    "eval_optimize", "eval_table", "report", "random_select", "random_train", "d0", "test_set",
    "train_trajeq_final",
}  # fmt: skip


def _project_workdir(path: Path) -> Path:
    """A fresh working directory laid out like a checkout (tests/ and config/, so the tiny config's
    relative paths resolve and config/config.yaml is there); results, logs, the label cache and
    .snakemake stay inside it, so runs never share a DFT label. With config/config.yaml present, the
    job steps must still run the tiny config alone, as the main process does (issue 21: they once
    merged the default study under it, whose seeds change the rules' outputs)."""
    path.mkdir(parents=True)
    (path / "tests").symlink_to(ROOT / "tests")
    (path / "config").symlink_to(ROOT / "config")
    return path


@pytest.mark.skipif(not TINY_CONFIG.exists(), reason=f"the tiny study config {TINY_CONFIG} is not there")
def test_project_workflow_through_slurm(slurm_cluster, tiny_study, tmp_path_factory):
    """The whole tiny study (all its rules, report included) through sbatch, against the local run
    of the same study (the ``tiny_study`` fixture)."""
    import pandas as pd

    from golf import data

    base = tmp_path_factory.mktemp("project")
    args = [f"--configfile={TINY_CONFIG}"]  # `=`: the option takes several values
    before = set(slurm_records())
    run = run_snakemake(slurm_args(ROOT / "Snakefile", *args), _project_workdir(base / "slurm"), timeout=1200)
    print(f"\nproject workflow (tiny study): SLURM {run.seconds:.1f} s")
    assert run.returncode == 0, f"Snakemake through SLURM failed:\n{_tail(run)}"

    # every rule's job went through sbatch: one SLURM job per Snakemake job, all completed, all of this run
    records, allocated = slurm_records(), allocated_job_ids()
    oracle = yaml.safe_load(TINY_CONFIG.read_text())["oracle"]
    ours = [r for i, r in records.items() if i not in before]
    assert len({r.name for r in ours}) == 1, f"the new SLURM jobs are not all of one Snakemake run: {ours}"
    assert {r.rule for r in ours} == PROJECT_RULES
    assert all(r.state == "COMPLETED" and r.partition == PARTITION for r in ours), ours
    assert {r.job_id for r in ours} <= allocated
    # label_chunk's threads (oracle.threads) reached SLURM as its CPU count
    assert {r.cpus for r in ours if r.rule == "label_chunk"} == {oracle.get("threads", 1)}

    # the same labels as the local run (each run computed its own: separate label caches)
    got, want = data.read(run.workdir / PROJECT_TARGET), data.read(tiny_study / PROJECT_TARGET)
    assert len(got) == len(want) > 0
    assert any(c.labelled for c in want), "the local run labelled nothing: nothing to compare"
    assert [c.status for c in got] == [c.status for c in want]
    for a, b in zip(got.conformers, want.conformers, strict=True):
        assert (a.molecule_id, a.conformer_id) == (b.molecule_id, b.conformer_id)
        assert (a.species == b.species).all()
        assert abs(a.coordinates - b.coordinates).max() < 1e-9
        if b.labelled:
            assert abs(a.energy - b.energy) < 1e-7  # Hartree; the same Psi4, the same geometry
            assert abs(a.forces - b.forces).max() < 1e-6  # Hartree/Angstrom

    # the study ran to its end: the same models in the report as the local run
    summary = "results/report/summary.csv"
    assert set(pd.read_csv(run.workdir / summary)["model"]) == set(pd.read_csv(tiny_study / summary)["model"])
