"""golf.oracle.oracle against the real Psi4 at HF/STO-3G on water, methane and methanol.

Crash and hang recovery use the worker's test hooks (task options ``_test_hang`` / ``_test_crash``,
honoured only with GOLF_ORACLE_TEST_HOOKS=1) and a real SIGKILL sent to a busy worker; Psi4 itself
is never mocked.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from golf import data
from golf.oracle.oracle import LabelCache, Oracle, OracleSettings, OracleUnavailable, find_psi4_python

# Atom order of Chem.AddHs(Chem.MolFromSmiles(smiles)); Angstrom. Slightly off equilibrium and
# asymmetric so that every force component checked below is non-trivial.
WATER = ([8, 1, 1], [[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7672, -0.4592]])
METHANE = (
    [6, 1, 1, 1, 1],
    [[0.0, 0.0, 0.0], [0.6291, 0.6291, 0.6291], [-0.6291, -0.6291, 0.6291], [-0.6391, 0.6291, -0.6291],
     [0.6291, -0.6291, -0.6191]],
)  # fmt: skip
METHANOL = (
    [6, 8, 1, 1, 1, 1],
    [[-0.0467, 0.6626, 0.0100], [-0.0467, -0.7574, 0.0000], [-1.0861, 0.9916, 0.0000], [0.4425, 1.0814, 0.8960],
     [0.4525, 1.0714, -0.8960], [0.8679, -1.0737, 0.0300]],
)  # fmt: skip
MOLECULES = {"O": WATER, "C": METHANE, "CO": METHANOL}
HF_STO3G = {"method": "hf", "basis": "sto-3g", "threads": 1, "memory_mb": 500, "timeout_s": 120}


@pytest.fixture(scope="module")
def psi4_argv():
    try:
        return find_psi4_python(None)
    except OracleUnavailable as err:
        pytest.skip(f"no Psi4 on this machine: {err}")


@pytest.fixture(scope="module")
def reference_energies(psi4_argv, tmp_path_factory):
    """Energies from a plain psi4.energy call in Psi4's own interpreter, written independently."""
    script = """
import json, sys, psi4
psi4.set_output_file("psi4.out", False)
psi4.set_memory("500 MB")
out = {}
for name, (species, coords, charge, mult) in json.loads(sys.argv[1]).items():
    sym = {1: "H", 6: "C", 8: "O"}
    lines = [f"{charge} {mult}"] + [f"{sym[z]} {x:.10f} {y:.10f} {w:.10f}" for z, (x, y, w) in zip(species, coords)]
    mol = psi4.geometry("\\n".join(lines + ["units angstrom", "symmetry c1", "no_com", "no_reorient"]))
    psi4.core.clean_options()
    if mult > 1:
        psi4.set_options({"reference": "uhf"})
    out[name] = psi4.energy("hf/sto-3g", molecule=mol)
    psi4.core.clean()
print("RESULT " + json.dumps(out))
"""
    systems = {name: (sp, xyz, 0, 1) for name, (sp, xyz) in MOLECULES.items()}
    systems["O+"] = (WATER[0], WATER[1], 1, 2)
    cwd = tmp_path_factory.mktemp("direct-psi4")
    proc = subprocess.run(
        [*psi4_argv, "-c", script, json.dumps(systems)], capture_output=True, text=True, cwd=cwd, timeout=300
    )
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and line, proc.stderr[-2000:]
    return json.loads(line[-1][len("RESULT ") :])


@pytest.fixture(scope="module")
def oracle(psi4_argv, tmp_path_factory):
    settings = OracleSettings(**HF_STO3G, workers=2, cache_dir=str(tmp_path_factory.mktemp("cache")))
    with Oracle(settings) as o:
        yield o


@pytest.fixture
def hook_oracle(psi4_argv, monkeypatch):
    """One worker that honours the _test_hang / _test_crash task options."""
    monkeypatch.setenv("GOLF_ORACLE_TEST_HOOKS", "1")
    with Oracle(OracleSettings(**HF_STO3G, workers=1)) as o:
        yield o


def make_dataset(rows):
    """rows: (smiles, species, coordinates, multiplicity); one molecule per distinct (smiles, mult)."""
    ds = data.Dataset()
    ids = {}
    for i, (smiles, species, coords, mult) in enumerate(rows):
        mid = ids.setdefault((smiles, mult), len(ids))
        ds.molecules[mid] = data.Molecule(mid, smiles, multiplicity=mult)
        ds.conformers.append(data.Conformer(mid, i, species, coords))
    return ds


def test_energies_match_direct_psi4(oracle, reference_energies):
    for name, (species, coords) in MOLECULES.items():
        r = oracle.gradient(species, coords)
        assert r.status == "ok", r.message
        assert r.forces.shape == (len(species), 3)
        assert abs(r.energy - reference_energies[name]) < 1e-8, name
    cation = oracle.gradient(*WATER, charge=1, multiplicity=2)  # open shell: reference uhf
    assert cation.status == "ok", cation.message
    assert abs(cation.energy - reference_energies["O+"]) < 1e-8
    assert cation.energy > reference_energies["O"] + 0.3  # ionisation costs ~0.4 Ha at HF/STO-3G


def test_forces_are_minus_energy_gradient_in_hartree_per_angstrom(oracle):
    species, coords = METHANOL
    coords = np.array(coords)
    forces = oracle.gradient(species, coords).forces
    h = 1e-3  # Angstrom
    for atom, axis in [(0, 0), (1, 1), (5, 2)]:  # C x, O y, hydroxyl H z
        plus, minus = coords.copy(), coords.copy()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        e_plus = oracle.gradient(species, plus).energy
        e_minus = oracle.gradient(species, minus).energy
        fd = -(e_plus - e_minus) / (2 * h)
        assert abs(fd) > 1e-3  # a component that can tell a sign or a Bohr factor apart
        assert abs(forces[atom, axis] - fd) < 1e-4, (atom, axis, forces[atom, axis], fd)


def test_second_run_with_same_cache_makes_no_psi4_calls(psi4_argv, tmp_path):
    rows = [(s, *MOLECULES[s], 1) for s in ("O", "C", "CO")]
    rows.append(("O", WATER[0], WATER[1], 1))  # a duplicate row is computed once
    ds = make_dataset(rows)
    settings = OracleSettings(**HF_STO3G, workers=2, cache_dir=str(tmp_path / "cache"))
    with Oracle(settings) as first:
        labelled = first.label(ds, progress=False)
        assert first.calls == 3 and first.cache_hits == 0
    files = sorted((tmp_path / "cache").glob("*/*/*.json"))
    assert len(files) == 3 and all(len(f.stem) == 64 and f.parent.name == f.stem[2:4] for f in files)
    assert not list((tmp_path / "cache").rglob("*.tmp"))

    with Oracle(settings) as second:
        again = second.label(ds, progress=False)
        # 1e-7 Angstrom moves nothing at the cache's 1e-6 Angstrom resolution
        nudged = second.gradient(WATER[0], np.array(WATER[1]) + 1e-7)
        assert second.calls == 0 and second.cache_hits == 4 + 1
    assert nudged.cached and nudged.energy == labelled.conformers[0].energy
    for a, b in zip(labelled.conformers, again.conformers, strict=True):
        assert a.status == b.status == "ok"
        assert a.energy == b.energy
        np.testing.assert_array_equal(a.forces, b.forces)


def test_cache_key():
    species, coords = WATER
    base = LabelCache.key(species, coords, 0, 1, "hf", "sto-3g", "1.3.2")
    assert base == LabelCache.key(species, np.array(coords) + 4e-7, 0, 1, "HF", "STO-3G", "1.3.2")
    moved = np.array(coords)
    moved[0, 2] += 2e-6
    for other in [
        LabelCache.key(species, moved, 0, 1, "hf", "sto-3g", "1.3.2"),
        LabelCache.key(species, coords, 1, 2, "hf", "sto-3g", "1.3.2"),
        LabelCache.key(species, coords, 0, 1, "hf", "6-31g", "1.3.2"),
        LabelCache.key(species, coords, 0, 1, "hf", "sto-3g", "1.9.1"),
        LabelCache.key(species, coords, 0, 1, "hf", "sto-3g", "1.3.2", {"scf_type": "df"}),
        LabelCache.key([8, 1, 9], coords, 0, 1, "hf", "sto-3g", "1.3.2"),
    ]:
        assert other != base


def test_worker_killed_mid_task_is_restarted_and_task_retried(hook_oracle, reference_energies):
    hook_oracle.settings.options = {"_test_hang": 1.5}  # busy long enough to be killed mid-task
    (pid,) = hook_oracle.worker_pids
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(hook_oracle.gradient, *WATER)
        time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
        result = future.result(timeout=60)
    assert result.status == "ok", result.message
    assert abs(result.energy - reference_energies["O"]) < 1e-8
    assert hook_oracle.calls == 2 and hook_oracle.restarts == 1
    assert hook_oracle.worker_pids and hook_oracle.worker_pids[0] != pid


def test_worker_crashing_twice_gives_worker_crashed(hook_oracle):
    hook_oracle.settings.options = {"_test_crash": True}
    result = hook_oracle.gradient(*WATER)
    assert result.status == "worker_crashed" and "exit code -9" in result.message
    assert hook_oracle.calls == 2 and math.isnan(result.energy) and result.forces is None
    hook_oracle.settings.options = {}
    assert hook_oracle.gradient(*METHANE).status == "ok"


def test_hung_task_times_out_and_next_task_works(hook_oracle, reference_energies):
    hook_oracle.settings.options = {"_test_hang": 60}
    hook_oracle.settings.timeout_s = 2.0
    start = time.monotonic()
    result = hook_oracle.gradient(*WATER)
    assert result.status == "timeout" and time.monotonic() - start < 20
    hook_oracle.settings.options = {}
    hook_oracle.settings.timeout_s = 60.0
    after = hook_oracle.gradient(*WATER)
    assert after.status == "ok" and abs(after.energy - reference_energies["O"]) < 1e-8


def test_bad_conformations_keep_every_row_with_a_status(oracle, reference_energies, tmp_path):
    on_top = np.array(WATER[1])
    on_top[1] = on_top[0]  # two atoms on top of each other
    nan_coords = np.array(METHANE[1])
    nan_coords[2, 1] = np.nan
    rows = [
        ("O", *WATER, 1),
        ("O", WATER[0], on_top, 1),
        ("O", *WATER, 2),  # 10 electrons cannot be a doublet
        ("C", METHANE[0], nan_coords, 1),
        ("CO", *METHANOL, 1),
    ]
    ds = make_dataset(rows)
    out = oracle.label(ds, progress=False)
    assert len(out) == len(ds)
    assert [c.conformer_id for c in out] == [c.conformer_id for c in ds]
    assert [c.status for c in out] == ["ok", "oracle_error", "oracle_error", "skipped_nonfinite", "ok"]
    assert abs(out.conformers[0].energy - reference_energies["O"]) < 1e-8
    assert abs(out.conformers[4].energy - reference_energies["CO"]) < 1e-8
    for c in out.conformers[1:4]:
        assert math.isnan(c.energy) and c.forces is None
    assert all(c.status == "unlabelled" for c in ds)  # the input is not modified
    assert out.attrs["oracle"]["version"] == oracle.psi4_version
    data.write(tmp_path / "labels.h5", out)  # and the result honours the data contract
    back = data.read(tmp_path / "labels.h5")
    assert [c.status for c in back] == [c.status for c in out]
    np.testing.assert_allclose(back.conformers[4].forces, out.conformers[4].forces)


def test_scf_fallback_ladder_exhausted_gives_scf_not_converged(psi4_argv):
    # maxiter set by the caller caps every rung of the ladder, so three iterations cannot converge
    with Oracle(OracleSettings(**HF_STO3G, options={"maxiter": 3})) as o:
        result = o.gradient(*METHANOL)
        ok = OracleSettings(**HF_STO3G)
    assert result.status == "scf_not_converged" and "fallback" in result.message
    with Oracle(ok) as o:
        assert o.gradient(*METHANOL).status == "ok"


def test_missing_psi4_gives_clear_error(tmp_path, monkeypatch):
    with pytest.raises(OracleUnavailable) as err:
        find_psi4_python(str(tmp_path / "no" / "python"))
    message = str(err.value)
    assert "\n" not in message
    for hint in ("oracle.psi4_python", "apt-get install psi4", "envs/psi4.yaml", "--use-conda"):
        assert hint in message
    with pytest.raises(OracleUnavailable, match="not an executable"):
        Oracle(OracleSettings(psi4_python=str(tmp_path / "python"))).start()
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(OracleUnavailable, match="no `psi4` on PATH"):
        find_psi4_python(None)


def test_interpreter_without_psi4_gives_clear_error(tmp_path):
    settings = OracleSettings(psi4_python=sys.executable, scratch_dir=str(tmp_path))
    with pytest.raises(OracleUnavailable, match="did not start.*psi4"):
        Oracle(settings).start()
    assert list(tmp_path.iterdir()) == []  # scratch folders are removed


def test_settings_reject_bad_values():
    with pytest.raises(ValueError, match="unknown key"):
        OracleSettings.from_config({"method": "hf", "basiss": "sto-3g"})
    with pytest.raises(ValueError, match="workers"):
        OracleSettings(workers=0)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has stopped running
    except FileNotFoundError:
        return False


def test_workers_exit_when_their_parent_is_killed(psi4_argv, tmp_path):
    # A cancelled cluster job kills the Python process: its Psi4 workers must not run on.
    script = """
import sys
from golf.oracle.oracle import Oracle, OracleSettings
o = Oracle(OracleSettings(method="hf", basis="sto-3g", options={"_test_hang": 120})).start()
print(o.worker_pids[0], flush=True)
o.gradient([1, 1], [[0, 0, 0], [0, 0, 0.74]])
"""
    env = dict(os.environ, GOLF_ORACLE_TEST_HOOKS="1", TMPDIR=str(tmp_path))
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        worker = int(parent.stdout.readline())
        time.sleep(0.5)  # the worker is inside its task now
        assert _running(worker)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while _running(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(worker)
    assert not list(tmp_path.glob("golf-oracle-*"))  # and its scratch folder went with it


# --------------------------------------------------------------------------------------------
# Failures are remembered: a resume does not pay for them again; they are repeated on request.


def test_remembered_scf_failure_is_not_repeated_unless_asked(psi4_argv, tmp_path):
    cache = str(tmp_path / "cache")
    failing = {**HF_STO3G, "options": {"maxiter": 3}, "cache_dir": cache}  # no rung of the ladder converges
    with Oracle(OracleSettings(**failing)) as first:
        result = first.gradient(*METHANOL)
        assert result.status == "scf_not_converged" and first.calls == 1
    (entry,) = (tmp_path / "cache").rglob("*.json")
    record = json.loads(entry.read_text())
    assert record["status"] == "scf_not_converged" and "fallback" in record["message"]

    with Oracle(OracleSettings(**failing)) as resumed:
        again = resumed.gradient(*METHANOL)
        assert resumed.calls == 0 and resumed.cached_failures == 1 and resumed.cache_hits == 0
    assert again.cached and again.status == "scf_not_converged" and "remembered" in again.message
    assert math.isnan(again.energy) and again.forces is None

    with Oracle(OracleSettings(**failing, retry_failed=True)) as retried:
        assert retried.gradient(*METHANOL).status == "scf_not_converged"
        assert retried.calls == 1 and retried.cached_failures == 0


def test_remembered_timeout_is_repeated_with_a_longer_timeout(psi4_argv, tmp_path, monkeypatch):
    monkeypatch.setenv("GOLF_ORACLE_TEST_HOOKS", "1")
    hanging = {**HF_STO3G, "options": {"_test_hang": 60}, "cache_dir": str(tmp_path / "cache")}
    hanging["timeout_s"] = 1.0
    with Oracle(OracleSettings(**hanging)) as first:
        assert first.gradient(*WATER).status == "timeout"
    (entry,) = (tmp_path / "cache").rglob("*.json")
    assert json.loads(entry.read_text())["timeout_s"] == 1.0
    with Oracle(OracleSettings(**hanging)) as same_limit:
        t0 = time.monotonic()
        assert same_limit.gradient(*WATER).status == "timeout"
        assert same_limit.calls == 0 and same_limit.cached_failures == 1 and time.monotonic() - t0 < 1.0
    hanging["timeout_s"] = 2.0
    with Oracle(OracleSettings(**hanging)) as longer:
        assert longer.gradient(*WATER).status == "timeout"
        assert longer.calls == 1  # tried again with the longer limit...
    assert json.loads(entry.read_text())["timeout_s"] == 2.0  # ...and that limit is remembered now


def test_infrastructure_failure_is_not_remembered(psi4_argv, tmp_path):
    oracle = Oracle(OracleSettings(**HF_STO3G, cache_dir=str(tmp_path / "cache"))).start()
    try:
        (worker,) = oracle.pool._workers
        worker.kill()
        worker.argv = [str(tmp_path / "gone")]  # its restart fails: our problem, not the conformation's
        result = oracle.gradient(*WATER)
    finally:
        oracle.close()
    assert result.status == "worker_crashed" and "could not be restarted" in result.message
    assert not list((tmp_path / "cache").rglob("*.json"))


def test_worker_pool_answers_a_task_on_its_own(psi4_argv, reference_energies):
    from golf.oracle.worker_pool import WorkerPool

    pool = WorkerPool(workers=1).start()
    try:
        task = {"species": WATER[0], "coordinates": WATER[1], "charge": 0, "multiplicity": 1, "method": "hf",
                "basis": "sto-3g", "threads": 1, "memory_mb": 500, "options": {}}  # fmt: skip
        reply = pool.run(task, timeout_s=120)
    finally:
        pool.close()
    assert reply["status"] == "ok" and pool.calls == 1 and pool.version
    assert abs(reply["energy"] - reference_energies["O"]) < 1e-8
