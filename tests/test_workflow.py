"""The tiny study end to end, through the real Snakemake scheduler, Psi4, RDKit and TorchANI."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, TINY_CONFIG, TINY_XTB_CONFIG, needs_psi4, snakemake

from golf import data
from golf.oracle.trajectories import extra_frames

slow = pytest.mark.slow  # the end-to-end runs; the dry-run tests of reruns are fast


@slow
def test_every_target_exists(tiny_study):
    for path in [
        "results/conformers.h5",
        "results/labels/d0.h5",
        "results/seed-0/d0.h5",
        "results/seed-0/models/baseline.pt",
        "results/seed-0/models/baseline.metrics.csv",
        "results/seed-0/rounds/1/trajectories.h5",
        "results/seed-0/rounds/1/selected.h5",
        "results/seed-0/labels/round-1.h5",
        "results/seed-0/models/golf-1.pt",
        "results/seed-0/rounds/1/stats.csv",
        "results/optimisation/reference.h5",
        "results/test_set.h5",
        "results/seed-0/optimisation/traj.h5",
        "results/report/summary.md",
    ]:
        assert (tiny_study / path).stat().st_size > 0, path
    assert list((tiny_study / "results/seed-0/models").glob("traj-*.pt")), "no trajectory baseline model"
    assert list((tiny_study / "results/seed-0/models").glob("trajeq-*.pt")), "no trajectory baseline at equal training"
    for plot in ["pct_vs_step", "eres_vs_step", "success_vs_oracle_calls", "nnp_error_vs_step", "pct_distribution"]:
        for ext in ("png", "svg"):
            assert (tiny_study / f"results/report/{plot}.{ext}").stat().st_size > 0


@slow
def test_d0_has_a_row_with_status_for_every_train_conformer(tiny_study):
    conformers = data.read(tiny_study / "results/conformers.h5")
    d0 = data.read(tiny_study / "results/labels/d0.h5")
    train = conformers.split("train")
    assert len(d0) == len(train) > 0
    for before, after in zip(train, d0, strict=True):
        np.testing.assert_array_equal(before.coordinates, after.coordinates)  # same rows, same order
        assert after.status in data.STATUSES
    labelled = d0.labelled()
    assert len(labelled) >= 1
    assert all(np.isfinite(c.energy) and c.forces.shape == c.coordinates.shape for c in labelled)
    assert d0.attrs["level_of_theory"] == "hf/sto-3g"


@slow
def test_round_selection_accounts_for_every_trajectory(tiny_study):
    trajectories = data.read(tiny_study / "results/seed-0/rounds/1/trajectories.h5")
    selected = data.read(tiny_study / "results/seed-0/rounds/1/selected.h5")
    labels = data.read(tiny_study / "results/seed-0/labels/round-1.h5")
    assert len(selected) == len({c.props["traj"] for c in trajectories})
    assert len(labels) == len(selected)
    # Selected rows are labelled now; skipped rows kept their reason.
    for s, label in zip(selected, labels, strict=True):
        if s.status == "unlabelled":
            assert label.status != "unlabelled"
        else:
            assert label.status == s.status and s.status.startswith("skipped")
    stats = pd.read_csv(tiny_study / "results/seed-0/rounds/1/stats.csv")
    assert stats.loc[0, "trajectories"] == len(selected)
    assert stats.loc[0, "selected"] == sum(c.status == "unlabelled" for c in selected)


@slow
def test_golf_model_was_trained_on_d0_and_round_labels(tiny_study):
    baseline = torch.load(tiny_study / "results/seed-0/models/baseline.pt", weights_only=True)
    golf = torch.load(tiny_study / "results/seed-0/models/golf-1.pt", weights_only=True)
    changed = [k for k in baseline["state_dict"] if not torch.equal(baseline["state_dict"][k], golf["state_dict"][k])]
    assert changed, "golf-1 has the baseline's weights"
    labels = data.read(tiny_study / "results/seed-0/labels/round-1.h5")
    assert golf["meta"]["extra_oracle_calls"] == sum(c.labelled for c in labels)
    assert golf["meta"]["data_digest"] != baseline["meta"]["data_digest"]


@slow
def test_report_has_every_model(tiny_study):
    summary = pd.read_csv(tiny_study / "results/report/summary.csv")
    models = set(summary["model"])
    assert {"oracle", "mmff", "baseline", "golf-1", "random-1"} <= models
    assert any(m.startswith("traj-") for m in models)
    assert any(m.startswith("trajeq-") for m in models)
    for name in ("paired.csv", "unconverged_references.csv"):
        assert (tiny_study / "results/report" / name).exists()
    oracle = summary.set_index("model").loc["oracle"]
    assert oracle["pct_mean"] == pytest.approx(100.0)
    text = (tiny_study / "results/report/summary.md").read_text()
    assert "golf-1" in text and "f_GOLF-10k" in text


@slow
def test_evaluations_carry_protocol_seed_and_models_their_optimiser(tiny_study):
    for model in ("baseline", "golf-1", "random-1"):
        labels = data.read(tiny_study / f"results/seed-0/labels/eval-{model}.h5")
        assert (labels.attrs["model"], labels.attrs["protocol"], labels.attrs["seed"]) == (model, "paper", 0)
        table = pd.read_csv(tiny_study / f"results/seed-0/eval/{model}/per_step.csv")
        assert set(table["protocol"]) == {"paper"} and set(table["seed"]) == {0}
        meta = torch.load(tiny_study / f"results/seed-0/models/{model}.pt", weights_only=True)["meta"]
        assert meta["optimizer"]["max_displacement"] is None  # the tiny study has no cap
    assert "seed" not in data.read(tiny_study / "results/labels/eval-mmff.h5").attrs
    random = data.read(tiny_study / "results/seed-0/rounds/1/random.h5")
    golf = data.read(tiny_study / "results/seed-0/rounds/1/selected.h5")
    assert [c.status for c in random] == [c.status for c in golf]  # the same budget


@slow
def test_trajeq_trains_the_trajectory_frames_with_golfs_steps(tiny_study):
    """Issue 19: trajeq-k is traj-k's data trained as GOLF trains: golf-R's gradient steps,
    schedule and D0 share per batch, with every one of traj-k's frames as new data. The
    trajectory file keeps each frame's molecule and start (its D0 conformer) for the report's
    coverage of each arm."""
    models = tiny_study / "results/seed-0/models"
    (traj,) = models.glob("traj-*.pt")
    k = traj.stem.removeprefix("traj-")
    meta = {
        m: torch.load(models / f"{m}.pt", weights_only=True)["meta"] for m in ("golf-1", f"traj-{k}", f"trajeq-{k}")
    }
    golf, trajeq = meta["golf-1"]["training"], meta[f"trajeq-{k}"]["training"]
    for key in ("steps", "schedule_start", "schedule_total", "initial_conf_pct", "batch_size", "lr", "seed"):
        assert trajeq["settings"][key] == golf["settings"][key], key
    trajectories = data.read(tiny_study / "results/seed-0/optimisation/traj.h5")
    frames = extra_frames(trajectories)
    assert meta[f"trajeq-{k}"]["extra_oracle_calls"] == meta[f"traj-{k}"]["extra_oracle_calls"] == len(frames) > 0
    assert trajeq["n_train_new"] == len(frames) and trajeq["n_train_d0"] == golf["n_train_d0"]
    assert meta[f"trajeq-{k}"]["trajeq"] == {"round": 1, "rounds": 1, "golf_labelled": [golf["n_train_new"]]}
    d0 = {(c.molecule_id, c.conformer_id): c for c in data.read(tiny_study / "results/seed-0/d0.h5")}
    for c in trajectories:  # every frame names its start: a D0 conformation training does not hold out
        start = d0[(c.molecule_id, c.conformer_id)]
        assert start.props["validation"] == 0
        if c.props["step"] == 0:
            np.testing.assert_array_equal(c.coordinates, start.coordinates)


@slow
def test_each_seed_holds_out_its_own_validation_split(tiny_study, tmp_path):
    """Issue 19: seed s draws D0's validation split with train.seed + s, into its own
    results/seed-<s>/d0.h5; the labels stay shared, and the one-seed study's results/seed-0/d0.h5 is
    seed 0's split. The tiny D0 has two training molecules, so two splits are possible; seeds 0 and 1
    happen to draw the same one, seeds 0 and 3 do not."""
    study = tmp_path / "study"
    shutil.copytree(tiny_study / "results/cache", study / "results/cache")  # no new DFT call
    config = _tiny_config_with(tmp_path, "seeds", lambda c: c.update(study={"seeds": [0, 3]}))
    _snakemake_with(study, config, "results/seed-0/d0.h5", "results/seed-3/d0.h5")
    splits = {}
    for seed in (0, 3):
        d0 = data.read(study / f"results/seed-{seed}/d0.h5")
        assert d0.attrs["validation"]["seed"] == seed  # train.seed 0 + the study seed
        splits[seed] = {(c.molecule_id, c.conformer_id) for c in d0 if c.props["validation"] == 1}
        assert splits[seed]
    assert splits[0] != splits[3]
    one_seed = data.read(tiny_study / "results/seed-0/d0.h5")
    assert {(c.molecule_id, c.conformer_id) for c in one_seed if c.props["validation"] == 1} == splits[0]
    assert not (study / "results/d0.h5").exists() and _oracle_calls_in(study) == 0


@slow
def test_second_run_has_nothing_to_do(tiny_study):
    result = snakemake(tiny_study, "-n")
    assert "Nothing to be done" in result.stdout + result.stderr


@slow
def test_rerun_of_a_round_makes_no_oracle_call(tiny_study, tmp_path):
    """Labels of a round recomputed from scratch (as after a kill) come from the cache."""
    study = tmp_path / "study"
    shutil.copytree(tiny_study, study, symlinks=True)  # a copy: the session's study stays whole
    (study / "results/seed-0/labels/round-1.h5").unlink()
    snakemake(study, "results/seed-0/labels/round-1.h5")
    labels = data.read(study / "results/seed-0/labels/round-1.h5")
    assert labels.attrs["oracle_calls"] == 0
    assert labels.attrs["cache_hits"] == sum(c.labelled for c in labels)


@slow
def test_the_tiny_study_reproduces_its_models_and_report_exactly(tiny_study, tmp_path):
    """Issue 13.5: the same config and seeds on the same machine give the same models and the
    same report numbers. The second study starts from nothing but the first one's label cache
    (a label is a function of its geometry), so any drift in a trajectory would show as a new
    DFT call as well as in the models and the tables."""
    again = tmp_path / "again"
    shutil.copytree(tiny_study / "results/cache", again / "results/cache")
    snakemake(again)
    assert _oracle_calls_in(again) == 0, "the second study met a geometry the first one never labelled"
    models = sorted(p.relative_to(tiny_study) for p in (tiny_study / "results/seed-0/models").glob("*.pt"))
    assert len(models) >= 4  # baseline, golf-1, traj-k, random-1
    for path in models:
        a, b = (torch.load(root / path, weights_only=True)["state_dict"] for root in (tiny_study, again))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{path}: {key} differs"
    for table in ("summary.csv", "steps.csv", "paired.csv"):
        pd.testing.assert_frame_equal(
            pd.read_csv(tiny_study / "results/report" / table), pd.read_csv(again / "results/report" / table)
        )


@slow
def test_html_report(tiny_study):
    snakemake(tiny_study, "--report", str(tiny_study / "report.html"))
    html = (tiny_study / "report.html").read_text(errors="replace")
    assert len(html) > 10_000 and "summary.md" in html


@slow
def test_golf_inspect_reads_every_intermediate_file(tiny_study):
    files = sorted((tiny_study / "results").rglob("*.h5"))
    files = [f for f in files if "cache" not in f.parts]
    result = subprocess.run(
        [sys.executable, "-m", "golf.cli", "inspect", *map(str, files)], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("conformations:") == len(files)


@slow
def test_the_tiny_study_runs_on_the_xtb_oracle(tmp_path):
    """Issue 21: the same tiny study with GFN2-xTB labels (tblite), report included, no Psi4."""
    pytest.importorskip("tblite.interface", reason="tblite is not installed: run bin/setup")
    snakemake(tmp_path, configfile=TINY_XTB_CONFIG)
    assert (tmp_path / "results/report/summary.md").exists()
    for path in ("results/labels/d0.h5", "results/seed-0/labels/round-1.h5", "results/optimisation/reference.h5"):
        provenance = data.read(tmp_path / path).attrs["oracle"]
        assert (provenance["program"], provenance["method"]) == ("xtb", "gfn2-xtb"), path
    model = torch.load(tmp_path / "results/seed-0/models/golf-1.pt", weights_only=True)
    assert model["meta"]["level_of_theory"] == "gfn2-xtb"


@slow
def test_invalid_config_fails_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY_CONFIG.read_text() + "\ngolf_rounds: 3\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(REPO / "Snakefile"),
            "-d",
            str(tmp_path),
            "--configfile",
            str(bad),
            "-n",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "unknown config key 'golf_rounds'" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


@slow
def test_lint_is_clean():
    needs_psi4()
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], capture_output=True, text=True, cwd=REPO)
    assert "Congratulations" in result.stdout + result.stderr, result.stdout[-3000:]


@slow
def test_workflow_runs_on_an_imported_ase_database(tiny_study, tmp_path):
    """The authors' D0 format (ASE SQLite: smiles, data.energy, data.forces, atomrefs) as D0."""
    from ase import Atoms
    from ase.db import connect

    d0 = data.read(tiny_study / "results/labels/d0.h5").labelled()
    db_path = tmp_path / "D-0.db"
    with connect(db_path) as db:
        for c in d0:
            db.write(
                Atoms(numbers=c.species, positions=c.coordinates),
                smiles=d0.smiles(c),
                data={"energy": [c.energy], "forces": c.forces},
            )
        db.metadata = {"atomrefs": {"energy": [0.0] * 18}}
    snakemake(tmp_path, "results/seed-0/rounds/1/selected.h5", config=(f"data={{'d0': '{db_path}'}}",))
    imported = data.read(tmp_path / "results/imported/d0.h5")
    assert len(imported) == len(d0)
    np.testing.assert_allclose(sorted(c.energy for c in imported), sorted(c.energy for c in d0), rtol=0, atol=1e-9)
    assert not (tmp_path / "results/labels/d0.h5").exists()  # no D0 labelling: the data came labelled
    assert (tmp_path / "results/seed-0/rounds/1/selected.h5").exists()


def test_an_imported_test_set_with_its_minima_needs_no_reference_optimisation(tiny_study, tmp_path):
    """The authors' D-test format (ASE SQLite with data.optimal_energy) as the test set: the
    test-set file takes its E_opt from the database, no oracle optimisation runs, and MMFF's
    per-step table is measured against those minima."""
    from ase import Atoms
    from ase.db import connect

    rows = data.read(tiny_study / "results/test_set.h5")
    rows = rows.subset([c.labelled for c in rows.conformers])
    db_path = tmp_path / "D-test.db"
    with connect(db_path) as db:
        for c in rows:
            payload = {"energy": [c.energy], "forces": c.forces, "optimal_energy": [c.props["e_opt"] + 1e-3]}
            db.write(Atoms(numbers=c.species, positions=c.coordinates), smiles=rows.smiles(c), data=payload)
        db.metadata = {"atomrefs": {"energy": [0.0] * 18}}
    target = "results/eval/mmff/per_step.csv"
    imported = {"test": str(db_path), "test_minima": True}
    config = _tiny_config_with(tmp_path, "d-test", lambda c: c.setdefault("data", {}).update(imported))
    log = _snakemake_with(tmp_path, config, target)
    assert "import_data" in log and "oracle_optimize" not in log
    assert not (tmp_path / "results/optimisation/reference.h5").exists()
    test_set = data.read(tmp_path / "results/test_set.h5")
    assert test_set.attrs["minima"] == "known" and len(test_set) == len(rows)
    assert {c.props["end"] for c in test_set} == {"converged"}
    assert "opt_coordinates" not in test_set.conformers[0].props  # energies only: no geometry made up
    table = pd.read_csv(tmp_path / target)
    expected = sorted(c.props["e_opt"] + 1e-3 for c in rows)
    np.testing.assert_allclose(sorted(table[table.step == 0]["e_opt"]), expected, rtol=0, atol=1e-9)


def _cache_entries(workdir) -> int:
    return len(list((workdir / "results/cache/oracle").rglob("*.json")))


def _oracle_calls_in(workdir) -> int:
    """Psi4 calls recorded by the label and optimisation files of a run. Each leaves one cache
    entry: a label, or a remembered failure."""
    results = workdir / "results"  # shared sets and every seed's (seed-<s>/labels, seed-<s>/optimisation)
    files = [*results.glob("**/labels/*.h5"), *results.glob("**/optimisation/*.h5")]
    return sum(int(data.read(f).attrs.get("oracle_calls", 0)) for f in files)


@slow
def test_killed_run_resumes_without_repeating_a_dft_call(tmp_path):
    """Kill the workflow while it labels, run it again: it finishes, and every DFT call of the
    second run is a label the cache did not have (no repeat), and rounds keep their own files."""
    import os
    import signal
    import time

    needs_psi4()
    # golf-1's evaluation labels are new geometries after the kill, so the second run must make
    # DFT calls (the tiny round 1 may only re-label D0 starts, which the cache already has).
    target = "results/seed-0/labels/eval-golf-1.h5"
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "-d", str(tmp_path),
           "--configfile", str(TINY_CONFIG), "--config", f"molecules={TINY_CONFIG.parent / 'tiny.smi'}",
           "--cores", "2", target]  # fmt: skip
    run = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 600
        while _cache_entries(tmp_path) < 2 and time.time() < deadline and run.poll() is None:
            time.sleep(0.5)  # kill once the first labels are in the cache, mid-labelling
        assert run.poll() is None, "the workflow finished before it could be killed"
        os.killpg(run.pid, signal.SIGKILL)
    finally:
        run.wait()
    cached_before = _cache_entries(tmp_path)
    # Sets finished before the kill (the reference minima can be: geomeTRIC needs few calls) hold
    # calls whose labels are already in the cache; only the second run's calls are compared.
    calls_before = _oracle_calls_in(tmp_path)
    assert not (tmp_path / "results/labels/d0.h5").exists()

    snakemake(tmp_path, "--unlock")  # a killed Snakemake leaves its lock, as Snakemake then tells the user
    snakemake(tmp_path, "--rerun-incomplete", target)
    calls = _oracle_calls_in(tmp_path) - calls_before
    assert calls == _cache_entries(tmp_path) - cached_before, "a DFT call was repeated"
    assert calls > 0
    selected = data.read(tmp_path / "results/seed-0/rounds/1/selected.h5")
    assert {c.props["round"] for c in selected} == {1}


# --------------------------------------------------------------------------------------------
# The config drives reruns: every setting a job's output depends on reaches it as params, so
# Snakemake's params trigger reruns exactly the jobs a config edit affects. Dry runs only: the
# study's outputs are empty files Snakemake was told (--touch) are up to date with the tiny config.


def _snakemake_with(workdir: Path, configfile: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", str(configfile), "--config", f"molecules={TINY_CONFIG.parent / 'tiny.smi'}",
           "--cores", "1", *args]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def _tiny_config_with(tmp_path: Path, name: str, edit) -> Path:
    config = yaml.safe_load(TINY_CONFIG.read_text())
    edit(config)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _scheduled(workdir: Path, configfile: Path) -> set[str]:
    """The jobs a dry run schedules, as "rule" or "rule:set" (the set wildcard of labelling and
    oracle optimisation jobs)."""
    jobs, rule = set(), None
    for line in _snakemake_with(workdir, configfile, "-n").splitlines():
        if line.startswith(("rule ", "localrule ")) and line.endswith(":"):
            rule = line.split()[1].rstrip(":")
            jobs.add(rule)
        elif rule and line.strip().startswith("wildcards:"):
            wildcards = dict(w.split("=", 1) for w in line.split(":", 1)[1].strip().split(", "))
            if "set" in wildcards:
                jobs.add(f"{rule}:{wildcards['set']}")
    return jobs


@pytest.fixture(scope="module")
def touched_study(tmp_path_factory) -> Path:
    """Every output of the tiny study as an empty file, recorded as made with the tiny config."""
    workdir = tmp_path_factory.mktemp("touched-study")
    summary = _snakemake_with(workdir, TINY_CONFIG, "--summary")
    outputs = [line.split("\t")[0] for line in summary.splitlines() if "\t" in line][1:]
    assert "results/seed-0/models/baseline.pt" in outputs and "results/labels/d0.h5" in outputs
    for output in outputs:
        (workdir / output).parent.mkdir(parents=True, exist_ok=True)
        (workdir / output).touch()
    _snakemake_with(workdir, TINY_CONFIG, "--touch", "--forceall")
    assert "Nothing to be done" in _snakemake_with(workdir, TINY_CONFIG, "-n")
    return workdir


def test_training_key_reruns_training_and_downstream_only(touched_study, tmp_path):
    config = _tiny_config_with(tmp_path, "lr", lambda c: c["train"].update(lr=5e-4))
    jobs = _scheduled(touched_study, config)
    assert {"train_baseline", "golf_train", "train_traj", "golf_optimize", "report"} <= jobs
    assert {"label_chunk:round-1", "label_chunk:eval-baseline"} <= jobs  # downstream of the new model
    # Not the conformers, D0's labels, the reference minima or the DFT trajectories.
    untouched = {"conformers", "label_chunk:d0", "gather_labels:d0", "oracle_optimize:reference", "test_set", "d0",
                 "oracle_optimize:traj", "gather_optimisation:reference", "gather_optimisation:traj"}  # fmt: skip
    assert not jobs & untouched, jobs & untouched
    assert "label_chunk:eval-mmff" not in jobs  # MMFF's evaluation has no model


def test_gather_filter_reruns_the_gather_not_the_oracle(touched_study, tmp_path):
    config = _tiny_config_with(tmp_path, "force", lambda c: c["oracle"].update(max_force_norm=5.0))
    jobs = _scheduled(touched_study, config)
    assert "gather_labels:d0" in jobs and "train_baseline" in jobs
    assert "label_chunk:d0" not in jobs and "conformers" not in jobs


def test_golf_selection_key_leaves_the_baseline_alone(touched_study, tmp_path):
    config = _tiny_config_with(tmp_path, "mmff", lambda c: c["golf"].update(mmff_threshold=0.5))
    jobs = _scheduled(touched_study, config)
    assert {"golf_optimize", "golf_select", "golf_train", "label_chunk:round-1"} <= jobs
    assert not jobs & {"train_baseline", "train_traj", "label_chunk:d0", "label_chunk:eval-baseline"}


def test_reordered_config_keys_rerun_nothing(touched_study, tmp_path):
    def reverse(config):
        for key in list(config):
            value = config.pop(key)
            config[key] = dict(reversed(value.items())) if isinstance(value, dict) else value

    config = _tiny_config_with(tmp_path, "reordered", reverse)
    assert "Nothing to be done" in _snakemake_with(touched_study, config, "-n")


def test_a_step_cap_adds_a_labelled_capped_evaluation_beside_the_papers(touched_study, tmp_path):
    config = _tiny_config_with(tmp_path, "cap", lambda c: c["golf"].update(max_displacement=0.05))
    jobs = _scheduled(touched_study, config)
    # Every NNP gets both protocols; the paper's keeps the model's own paths, MMFF has no cap.
    for model in ("baseline", "golf-1"):
        assert {f"label_chunk:eval-{model}", f"label_chunk:eval-{model}.capped-0.05"} <= jobs, jobs
    assert not {j for j in jobs if j.startswith("label_chunk:eval-mmff.")}


def _saved_model(path: Path, elements) -> Path:
    from golf import nnp

    nnp.save_model(path, nnp.build_model(elements, self_energies="zero", layer_dims=(8,), seed=0))
    return path


def test_a_configured_baseline_model_is_imported_not_trained(tmp_path):
    model = _saved_model(tmp_path / "authors.pt", ["H", "C", "N", "O", "F", "S", "Cl"])
    config = _tiny_config_with(tmp_path, "byo-model", lambda c: c["nnp"].update(baseline_model=str(model)))
    jobs = _scheduled(tmp_path / "study", config)
    assert {"import_baseline", "golf_train", "train_traj"} <= jobs
    assert "train_baseline" not in jobs


def test_an_imported_baseline_must_cover_the_configs_elements(tmp_path):
    from golf.nnp.model import NNPError
    from golf.study.jobs import imported_baseline

    path = _saved_model(tmp_path / "hco.pt", ["H", "C", "O"])
    assert imported_baseline(path, ["H", "C"]).meta["imported_from"] == str(path)
    with pytest.raises(NNPError, match=r"no network for element\(s\) N, S"):
        imported_baseline(path, ["H", "C", "N", "O", "S"])


def test_random_control_labels_the_golf_rounds_trajectories_and_is_evaluated(tmp_path):
    jobs = _scheduled(tmp_path / "study", TINY_CONFIG)
    assert {"random_select", "random_train", "label_chunk:random-1", "label_chunk:eval-random-1"} <= jobs
    off = _tiny_config_with(tmp_path, "no-control", lambda c: c.update(control={"random": False}))
    assert not {j for j in _scheduled(tmp_path / "study", off) if "random" in j}


def test_random_control_selects_from_golfs_trajectories_and_trains_like_golf(tmp_path):
    text = _snakemake_with(tmp_path, TINY_CONFIG, "-n", "results/seed-0/models/random-1.pt")
    select = text.split("rule random_select:")[1].split("\n\n")[0]
    assert "input: results/seed-0/rounds/1/trajectories.h5" in select  # GOLF round 1's own trajectories
    train = text.split("rule random_train:")[1].split("\n\n")[0]
    assert "results/seed-0/models/baseline.pt" in train and "results/seed-0/labels/random-1.h5" in train


def test_several_seeds_repeat_every_model_under_its_own_directory(tmp_path):
    config = _tiny_config_with(tmp_path, "seeds", lambda c: c.update(study={"seeds": [0, 1]}))
    text = _snakemake_with(tmp_path / "study", config, "-n")
    for seed in (0, 1):
        for path in ("d0.h5", "models/baseline.pt", "models/golf-1.pt", "models/random-1.pt", "labels/round-1.h5",
                     "optimisation/traj.h5", "models/trajeq-3.pt", "eval/golf-1/per_step.csv",
                     "eval/trajeq-3/per_step.csv"):  # fmt: skip
            assert f"results/seed-{seed}/{path}" in text
    # Each seed's D0 validation split (issue 19): its own d0.h5, read by its training and starts.
    baselines = _jobs_of(text, "train_baseline")
    assert len(baselines) == 2
    for job in baselines:
        seed_dir = job["output"].split("/")[1]  # seed-<s>
        assert job["input"] == f"results/{seed_dir}/d0.h5"
    # Shared: the conformers, D0's labels, the reference minima and MMFF's evaluation (no seed).
    for path in ("labels/d0.h5", "optimisation/reference.h5", "eval/mmff/per_step.csv"):
        assert f"results/{path}" in text and f"results/seed-0/{path}" not in text
    assert "results/models/golf-1.pt" not in text and "results/d0.h5" not in text


def test_one_seed_has_the_layout_of_several(tmp_path):
    """One result layout (issue 18): a one-seed study's models and rounds are under seed-<s>/ too,
    its shared files where several seeds' are."""
    config = _tiny_config_with(tmp_path, "seed-7", lambda c: c.update(study={"seeds": [7]}))
    text = _snakemake_with(tmp_path / "study", config, "-n")
    for path in ("d0.h5", "models/golf-1.pt", "labels/round-1.h5", "optimisation/traj.h5", "eval/golf-1/per_step.csv"):
        assert f"results/seed-7/{path}" in text
    for path in ("labels/d0.h5", "optimisation/reference.h5", "eval/mmff/per_step.csv"):
        assert f"results/{path}" in text and f"results/seed-7/{path}" not in text
    assert "results/models/" not in text and "results/seed-0/" not in text


def _jobs_of(text: str, rule: str) -> list[dict]:
    """The input and output lines of each job of ``rule`` in a dry run's text."""
    jobs = []
    for block in text.split(f"rule {rule}:")[1:]:
        lines = block.split("\n")
        jobs.append(
            {
                k: next(ln.split(": ", 1)[1] for ln in lines if ln.strip().startswith(f"{k}:"))
                for k in ("input", "output")
            }
        )
    return jobs


def test_trajeq_chains_rounds_like_golf_and_can_be_turned_off(tmp_path):
    """Issue 19: trajeq-k repeats GOLF's chain, round r fine-tuning round r-1 and reading GOLF's
    labels of rounds 1..r (their counts set its steps); traj.equal_training: false drops it."""
    config = _tiny_config_with(tmp_path, "rounds", lambda c: c["golf"].update(rounds=3))
    text = _snakemake_with(tmp_path / "study", config, "-n", "results/seed-0/models/trajeq-9.pt")
    chain = sorted(_jobs_of(text, "train_trajeq"), key=lambda j: j["output"]) + _jobs_of(text, "train_trajeq_final")
    previous = [
        "results/seed-0/models/baseline.pt",
        "results/seed-0/models/trajeq-9/round-1.pt",
        "results/seed-0/models/trajeq-9/round-2.pt",
    ]
    for r, job in enumerate(chain, start=1):
        inputs = job["input"].split(", ")
        assert inputs[0] == previous[r - 1] and "results/seed-0/optimisation/traj.h5" in inputs
        rounds = [f"results/seed-0/labels/round-{q}.h5" for q in range(1, r + 1)]
        assert [i for i in inputs if "labels/round-" in i] == rounds
    assert chain[-1]["output"].startswith("results/seed-0/models/trajeq-9.pt")
    off = _tiny_config_with(tmp_path, "no-trajeq", lambda c: c["traj"].update(equal_training=False))
    assert not {j for j in _scheduled(tmp_path / "study", off) if "trajeq" in j}


def test_training_checkpoints_are_no_outputs(tmp_path):
    # Snakemake deletes a failed job's outputs; the checkpoint a rerun resumes from must survive.
    summary = _snakemake_with(tmp_path, TINY_CONFIG, "--summary")
    outputs = [line.split("\t")[0] for line in summary.splitlines() if "\t" in line][1:]
    assert "results/seed-0/models/golf-1.pt" in outputs
    assert not [o for o in outputs if "checkpoints" in o or o.endswith(".ckpt")]


def test_a_config_file_given_is_the_whole_config(tmp_path):
    """Issue 21: in a checkout (config/config.yaml present), --configfile tiny.yaml runs the tiny
    study alone, as SLURM job steps do; the default study (three seeds) is read only without one."""
    study = tmp_path / "study"
    study.mkdir()
    (study / "config").symlink_to(REPO / "config")
    text = _snakemake_with(study, TINY_CONFIG, "-n")
    assert "results/seed-0/models/golf-1.pt" in text and "seed-1/" not in text and "golf-6" not in text
    default = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "-d", str(study), "-n"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert default.returncode == 0 and "results/seed-2/models/golf-6.pt" in default.stdout
