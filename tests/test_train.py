"""golf.train.trainer on a synthetic potential: harmonic bonds on RDKit-embedded molecules (no Psi4 needed).
E = sum_atoms e0[Z] + sum_bonds K (r - r0)^2, with r0 the bond length of the embedded geometry;
forces are analytic. Conformations are the embedded geometry plus Gaussian noise.
"""

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from golf import data
from golf.data.dataset import Conformer, Dataset, Molecule
from golf.nnp.model import UnsupportedElement, build_model, fit_self_energies
from golf.train.trainer import HISTORY_COLUMNS, TrainError, TrainSettings, batch_composition, train
from golf.train.validation import mark_validation, validation_keys, validation_predicate

SMILES = ["CCO", "CC(=O)O", "CCN", "CC(C)O", "OCCO", "CC=O", "NCC(=O)O", "COC", "CC#N", "C1CCOC1"]
E0 = {1: -0.5, 6: -38.0, 7: -54.6, 8: -75.1}
K_BOND = 0.5  # Hartree/Angstrom^2


def _harmonic(coords, bonds, r0):
    d = coords[bonds[:, 0]] - coords[bonds[:, 1]]  # (bonds, 3)
    r = np.linalg.norm(d, axis=1)
    energy = K_BOND * ((r - r0) ** 2).sum()
    g = (2 * K_BOND * (r - r0) / r)[:, None] * d  # dE/dx_i for the first atom of each bond
    forces = np.zeros_like(coords)
    np.add.at(forces, bonds[:, 0], -g)
    np.add.at(forces, bonds[:, 1], g)
    return energy, forces


def synthetic_dataset(n_conf=5, noise=0.04, seed=0, status="ok", molecule_offset=0) -> Dataset:
    rng = np.random.default_rng(seed)
    molecules, conformers = {}, []
    for i, smi in enumerate(SMILES):
        mid = i + molecule_offset
        mol = Chem.AddHs(Chem.MolFromSmiles(smi))
        AllChem.EmbedMolecule(mol, randomSeed=42)
        x0 = mol.GetConformer().GetPositions()
        z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
        bonds = np.array([[b.GetBeginAtomIdx(), b.GetEndAtomIdx()] for b in mol.GetBonds()])
        r0 = np.linalg.norm(x0[bonds[:, 0]] - x0[bonds[:, 1]], axis=1)
        molecules[mid] = Molecule(mid, smi)
        for k in range(n_conf):
            x = x0 + rng.normal(0, noise, x0.shape)
            e, f = _harmonic(x, bonds, r0)
            e += sum(E0[int(a)] for a in z)
            conformers.append(Conformer(mid, k, z, x, e, f, status=status))
    return Dataset(molecules, conformers, {"level_of_theory": "harmonic"})


def test_harmonic_forces_are_minus_gradient():
    ds = synthetic_dataset(n_conf=1)
    c = ds.conformers[0]
    mol = Chem.AddHs(Chem.MolFromSmiles(SMILES[0]))
    bonds = np.array([[b.GetBeginAtomIdx(), b.GetEndAtomIdx()] for b in mol.GetBonds()])
    r0 = np.full(len(bonds), 1.2)
    x = c.coordinates
    _, f = _harmonic(x, bonds, r0)
    h = 1e-6
    xp, xm = x.copy(), x.copy()
    xp[2, 1] += h
    xm[2, 1] -= h
    fd = -(_harmonic(xp, bonds, r0)[0] - _harmonic(xm, bonds, r0)[0]) / (2 * h)
    assert f[2, 1] == pytest.approx(fd, rel=1e-6)


def _model(ds, seed=0):
    return build_model(
        ["H", "C", "N", "O"],
        self_energies=fit_self_energies(ds, ["H", "C", "N", "O"]),
        layer_dims=(32, 16),
        radial_shifts=8,
        angular_shifts=4,
        seed=seed,
    )


FAST = dict(steps=40, batch_size=16, lr=2e-3, eval_every=20, val_fraction=0.2, device="cpu")


@pytest.fixture(autouse=True)
def one_thread():
    # Small batches gain nothing from threads, and on a shared machine spinning threads cost time.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_training_lowers_validation_loss(tmp_path):
    d0 = synthetic_dataset()
    # a failed label must be ignored, not trained on
    d0.conformers.append(Conformer(0, 99, [6, 1], np.zeros((2, 3)), float("nan"), status="scf_not_converged"))
    model = _model(d0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    csv = tmp_path / "metrics.csv"
    result = train(model, d0, None, TrainSettings(seed=1, **FAST), metrics_csv=csv, progress=False)
    h = result.history
    assert list(h.columns) == HISTORY_COLUMNS
    assert h["step"].tolist() == [0, 20, 40]
    assert h["val_loss"].iloc[1:].min() < 0.5 * h["val_loss"].iloc[0]
    assert h["val_force_mae_kcalmol_per_A"].iloc[-1] < h["val_force_mae_kcalmol_per_A"].iloc[0]
    assert np.isnan(h["train_loss"].iloc[0]) and np.isfinite(h["train_loss"].iloc[1:]).all()
    trained = h[h["step"] > 0]  # the untrained model is never returned
    assert result.best_step == int(trained["step"].iloc[trained["val_loss"].to_numpy().argmin()]) > 0
    assert pd.read_csv(csv)["val_loss"].to_numpy() == pytest.approx(h["val_loss"].to_numpy(), rel=1e-12)
    # the caller's model is untouched; the result carries provenance
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    meta = result.model.meta
    assert meta["data_digest"] and meta["level_of_theory"] == "harmonic"
    assert meta["training"]["n_val"] == 10 and meta["training"]["n_train_d0"] == 40


def test_training_is_reproducible_with_a_seed():
    d0 = synthetic_dataset(n_conf=3)
    model = _model(d0)
    short = {**FAST, "steps": 6, "eval_every": 3}
    a = train(model, d0, None, TrainSettings(seed=1, **short), progress=False)
    b = train(model, d0, None, TrainSettings(seed=1, **short), progress=False)
    c = train(model, d0, None, TrainSettings(seed=2, **short), progress=False)
    sa, sb, sc = (r.model.state_dict() for r in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    pd.testing.assert_frame_equal(a.history.drop(columns="elapsed_s"), b.history.drop(columns="elapsed_s"))


def test_fine_tuning_with_new_data(tmp_path):
    d0 = synthetic_dataset(n_conf=3)
    new = synthetic_dataset(n_conf=4, noise=0.08, seed=1)
    settings = TrainSettings(steps=4, batch_size=16, eval_every=2, val_fraction=0.2, device="cpu", seed=0)
    result = train(_model(d0), d0, new, settings, progress=False)
    training = result.model.meta["training"]
    assert training["n_train_d0"] == 24 and training["n_train_new"] == 32  # 8 of 10 molecules
    assert training["n_val"] == 2 * 3 + 2 * 4  # held-out molecules of both sets
    assert np.isfinite(result.history["val_loss"]).all()


def test_batch_composition_draws_the_d0_share():
    rng = np.random.default_rng(0)
    for _ in range(20):
        d0, new = batch_composition(rng, 100, 200, 64, 0.1)
        assert len(d0) == 7 and len(new) == 57  # int(64 * 0.9) = 57 new, as in the authors' code
        assert len(set(d0)) == 7 and len(set(new)) == 57  # without replacement
        assert d0.min() >= 0 and d0.max() < 100 and new.max() < 200
    d0, new = batch_composition(rng, 100, 10, 64, 0.1)  # small new pool: all of it, D0 fills up
    assert sorted(new) == list(range(10)) and len(d0) == 54
    d0, new = batch_composition(rng, 3, 200, 64, 0.1)  # small D0: all of it, new fills up
    assert sorted(d0) == [0, 1, 2] and len(new) == 61
    d0, new = batch_composition(rng, 5, 6, 64, 0.1)  # everything once
    assert sorted(d0) == list(range(5)) and sorted(new) == list(range(6))
    d0, new = batch_composition(rng, 100, 0, 64, 0.1)  # no new data: D0 only
    assert len(d0) == 64 and len(set(d0)) == 64 and len(new) == 0
    d0, new = batch_composition(rng, 100, 100, 64, 1.0)  # the trajectory-baseline mix
    assert len(d0) == 64 and len(new) == 0
    # the D0 share is uniform over the pool
    counts = np.bincount(
        np.concatenate([batch_composition(rng, 10, 50, 20, 0.5)[0] for _ in range(2000)]), minlength=10
    )
    assert counts.min() > 0.8 * counts.mean()


def test_validation_split_is_by_molecule_and_seeded():
    rows = [SimpleNamespace(molecule_id=i, conformer_id=c) for i in range(50) for c in range(2)]
    a = validation_keys(rows, 0.1, seed=3)
    assert len(a) == 5 and a == validation_keys(list(reversed(rows)), 0.1, seed=3)
    assert a != validation_keys(rows, 0.1, seed=4)
    assert validation_keys(rows, 0.0, seed=3) == set()
    assert len(validation_keys(rows[:4], 0.9, seed=0)) == 1  # one molecule always stays for training


def test_validation_split_by_conformer_holds_out_conformations_of_trained_molecules():
    rows = [SimpleNamespace(molecule_id=i, conformer_id=c) for i in range(10) for c in range(4)]
    keys = validation_keys(rows, 0.25, seed=1, by="conformer")
    assert len(keys) == 10 and all(isinstance(k, tuple) for k in keys)
    # conformations, not whole molecules: a molecule keeps training conformations beside held-out ones
    assert any(0 < sum(k[0] == m for k in keys) < 4 for m in range(10))
    with pytest.raises(ValueError, match="molecule' or 'conformer"):
        validation_keys(rows, 0.25, seed=1, by="atom")


def test_d0_carries_its_validation_split_and_training_keeps_it(tmp_path):
    """Decided once (mark_validation), stored in the file, read by training and the start pools:
    TrainSettings' own val_fraction, val_split and seed do not draw it again."""
    d0 = mark_validation(synthetic_dataset(n_conf=4), 0.25, seed=7, by="conformer")
    data.write(tmp_path / "d0.h5", d0)
    d0 = data.read(tmp_path / "d0.h5")
    held = {(c.molecule_id, c.conformer_id) for c in d0 if c.props["validation"] == 1}
    assert held == validation_keys(d0.conformers, 0.25, seed=7, by="conformer") and held
    assert d0.attrs["validation"] == {"fraction": 0.25, "seed": 7, "by": "conformer", "keys": len(held)}
    is_held = validation_predicate(d0)
    assert {(c.molecule_id, c.conformer_id) for c in d0 if is_held(c)} == held
    settings = TrainSettings(**(FAST | {"steps": 2, "val_fraction": 0.5, "seed": 0}))  # another split, ignored
    result = train(_model(d0), d0, settings=settings, progress=False)
    training = result.model.meta["training"]
    assert training["val_split"] == "conformer" and {tuple(k) for k in training["val_keys"]} == held
    assert training["n_val"] == len(held)
    # a pool of D0 and unmarked frames of its conformers (the trajectory baseline's) keeps D0's split
    extra = [replace(c, props={}) for c in d0 if c.props["validation"] == 0][:3]
    pool = data.concat([d0, Dataset(d0.molecules, extra)], attrs=dict(d0.attrs))
    training = train(_model(d0), pool, settings=settings, progress=False).model.meta["training"]
    assert {tuple(k) for k in training["val_keys"]} == held and training["n_train_d0"] == len(d0) - len(held) + 3
    with pytest.raises(ValueError, match="no validation split"):
        validation_predicate(synthetic_dataset(n_conf=1))


def test_golf_rounds_tile_one_schedule_and_trajeq_trains_the_same_steps():
    """golf_train's settings per round (golf.study.recipes.golf_round_settings): U steps per new label
    of the round, consecutive slices of one cosine schedule over U x budget. trajeq (rule
    train_trajeq) calls it with GOLF's own label counts, so its chain trains golf-R's steps."""
    from golf.cli.config import validate
    from golf.study.recipes import golf_round_settings

    config = validate({})
    params = {"train": config["train"], "device": "cpu", "initial_conf_pct": 0.1}
    labelled = [16, 15, 16]  # round 2 lost a label
    rounds = [golf_round_settings(params, 50, 48, labelled[:r]) for r in (1, 2, 3)]
    assert [s.steps for s in rounds] == [800, 750, 800]
    assert [s.schedule_start for s in rounds] == [0, 800, 1550]
    assert {s.schedule_total for s in rounds} == {2400}
    assert {s.initial_conf_pct for s in rounds} == {0.1}  # GOLF's fixed share of D0 per batch
    assert golf_round_settings(params, 50, 48, [16, 0]).steps == 50  # a round without labels: U steps


def test_trajeq_rounds_add_the_trajectory_frames_in_the_seeded_start_order():
    """trajeq's round r trains on the first r x n/R frames that cost an oracle call, in the order
    the trajectory budget was spent in (the gather's ``rank``), not in the file's (traj, step) order."""
    from golf.study.recipes import trajeq_frames

    d0 = synthetic_dataset(n_conf=1)
    frames = []
    for traj, rank, statuses in ((0, 1, ["ok", "ok", "ok"]), (4, 0, ["ok", "ok", "scf_not_converged"])):
        start = d0.conformers[traj]
        for step, status in enumerate(statuses):
            frames.append(replace(start, status=status, props={"traj": traj, "step": step, "rank": rank}))
    trajectories = Dataset(d0.molecules, frames, dict(d0.attrs))  # file order: traj 0 first
    picked = [trajeq_frames(trajectories, r, 3) for r in (1, 2, 3)]
    assert [len(p) for p in picked] == [1, 2, 3]  # n = 3 extra frames (steps >= 1, labelled)
    order = [(c.props["traj"], c.props["step"]) for c in picked[-1]]
    assert order == [(4, 1), (0, 1), (0, 2)]  # rank 0 (traj 4) first; step 0 and the failure left out
    assert [(c.props["traj"], c.props["step"]) for c in picked[0]] == order[:1]
    assert len(trajeq_frames(trajectories, 1, 4)) == 0  # k < R: an early round adds nothing
    # the frames keep their start's molecule and conformer ids (each arm's coverage is read from them)
    assert {(c.molecule_id, c.conformer_id) for c in picked[-1]} == {(0, 0), (4, 0)}


def test_bad_input_gives_clear_errors():
    with pytest.raises(TrainError, match="batch_size"):
        TrainSettings(batch_size=0)
    d0 = synthetic_dataset(n_conf=1)
    with pytest.raises(TrainError, match="no labelled"):
        train(_model(d0), synthetic_dataset(n_conf=1, status="timeout"), settings=TrainSettings(**FAST), progress=False)
    hc_only = build_model(["H", "C"], self_energies="zero", layer_dims="tiny")
    with pytest.raises(UnsupportedElement):
        train(hc_only, d0, settings=TrainSettings(**FAST), progress=False)


def test_ensemble_members_are_each_trained():
    d0 = synthetic_dataset(n_conf=2)
    model = build_model(
        ["H", "C", "N", "O"],
        self_energies=fit_self_energies(d0, ["H", "C", "N", "O"]),
        layer_dims="tiny",
        radial_shifts=8,
        angular_shifts=4,
        ensemble_size=2,
        seed=0,
    )
    settings = TrainSettings(steps=3, batch_size=8, lr=1e-3, eval_every=3, val_fraction=0.2, device="cpu")
    result = train(model, d0, None, settings, progress=False)
    before, after = model.state_dict(), result.model.state_dict()
    for member in ("members.0.", "members.1."):
        keys = [k for k in before if member in k]
        assert keys and not all(torch.equal(before[k], after[k]) for k in keys)
    assert np.isfinite(result.history["val_loss"]).all()


# --- resumable training -------------------------------------------------------------------

RESUME = dict(steps=150, batch_size=8, lr=2e-3, eval_every=7, val_fraction=0.2, device="cpu", seed=4)
EVERY = 5  # checkpoint every 5 steps: not a multiple of eval_every, so partial metric sums are restored


def _resume_data():
    return synthetic_dataset(n_conf=3), synthetic_dataset(n_conf=2, noise=0.08, seed=1)


def _same_result(a, b):
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.best_step == b.best_step and a.skipped_steps == b.skipped_steps
    pd.testing.assert_frame_equal(a.history.drop(columns="elapsed_s"), b.history.drop(columns="elapsed_s"))


# The training in a process of its own, so that it can be killed for real.
KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    sys.path.insert(0, sys.argv[1])
    torch.set_num_threads(1)
    from test_train import EVERY, RESUME, _model, _resume_data
    from golf.train.trainer import TrainSettings, train
    d0, new = _resume_data()
    train(_model(d0), d0, new, TrainSettings(**RESUME), progress=False, checkpoint=sys.argv[2], checkpoint_every=EVERY)
    """
)


def test_killed_training_resumes_to_the_same_model(tmp_path, caplog):
    d0, new = _resume_data()
    settings = TrainSettings(**RESUME)
    reference = train(_model(d0), d0, new, settings, metrics_csv=tmp_path / "ref.csv", progress=False)

    ckpt = tmp_path / "run.ckpt"
    env = {**os.environ, "TORCHANI_NO_WARN_EXTENSIONS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(Path(__file__).parent), str(ckpt)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "training finished (or failed) before a checkpoint was seen"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    step = torch.load(ckpt, weights_only=True)["step"]
    assert 0 < step < settings.steps and step % EVERY == 0

    with caplog.at_level(logging.INFO, logger="golf.train.trainer"):
        resumed = train(
            _model(d0), d0, new, settings, metrics_csv=tmp_path / "resumed.csv", progress=False, checkpoint=ckpt
        )
    assert f"at step {step} of {settings.steps}" in caplog.text
    _same_result(resumed, reference)
    ref_csv, res_csv = (pd.read_csv(tmp_path / f).drop(columns="elapsed_s") for f in ("ref.csv", "resumed.csv"))
    pd.testing.assert_frame_equal(res_csv, ref_csv)  # the CSV holds the rows of both processes
    assert not ckpt.exists()  # a finished run leaves no checkpoint behind


SHORT = dict(steps=12, batch_size=8, lr=2e-3, eval_every=4, val_fraction=0.2, device="cpu", seed=4)


def test_interrupted_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    d0, _ = _resume_data()
    settings = TrainSettings(**SHORT)
    reference = train(_model(d0), d0, None, settings, progress=False)
    ckpt = tmp_path / "run.ckpt"
    real_save = torch.save
    calls = []

    def save_then_die(obj, f, *args, **kwargs):  # the second write dies half-way, as under a SIGKILL
        calls.append(obj["step"])
        if len(calls) == 2:
            f.write(b"PK\x03\x04 half a checkpoint")
            raise KeyboardInterrupt
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(_model(d0), d0, None, settings, progress=False, checkpoint=ckpt, checkpoint_every=3)
    monkeypatch.undo()
    assert calls == [3, 6]
    assert torch.load(ckpt, weights_only=True)["step"] == 3  # the previous checkpoint, intact
    _same_result(train(_model(d0), d0, None, settings, progress=False, checkpoint=ckpt, checkpoint_every=3), reference)


def _checkpoint_at(tmp_path, d0, settings, step_limit):
    """A real checkpoint at ``step_limit`` (every 3 steps) of a run of ``settings``, stopped right after writing it."""
    ckpt = tmp_path / "run.ckpt"

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    real_replace = os.replace

    def replace_then_stop(src, dst):
        real_replace(src, dst)
        if torch.load(dst, weights_only=True)["step"] >= step_limit:
            stop()

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "replace", replace_then_stop)
        with pytest.raises(KeyboardInterrupt):
            train(_model(d0), d0, None, settings, progress=False, checkpoint=ckpt, checkpoint_every=3)
    return ckpt


def test_corrupt_checkpoint_is_reported_and_training_starts_over(tmp_path, caplog):
    d0, _ = _resume_data()
    settings = TrainSettings(**SHORT)
    reference = train(_model(d0), d0, None, settings, progress=False)
    ckpt = _checkpoint_at(tmp_path, d0, settings, 6)
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])  # a truncated file
    with caplog.at_level(logging.WARNING, logger="golf.train.trainer"):
        result = train(_model(d0), d0, None, settings, progress=False, checkpoint=ckpt, checkpoint_every=100)
    assert "unreadable" in caplog.text and "starts over" in caplog.text
    _same_result(result, reference)
    caplog.clear()
    ckpt.write_bytes(b"not a checkpoint at all")
    with caplog.at_level(logging.WARNING, logger="golf.train.trainer"):
        _same_result(train(_model(d0), d0, None, settings, progress=False, checkpoint=ckpt), reference)
    assert "unreadable" in caplog.text


def test_checkpoint_of_other_settings_or_data_is_not_used(tmp_path, caplog):
    d0, new = _resume_data()
    settings = TrainSettings(**SHORT)
    ckpt = _checkpoint_at(tmp_path, d0, settings, 6)
    saved = ckpt.read_bytes()
    other = TrainSettings(**{**SHORT, "lr": 1e-3})
    with caplog.at_level(logging.WARNING, logger="golf.train.trainer"):
        result = train(_model(d0), d0, None, other, progress=False, checkpoint=ckpt)
    assert "belongs to other settings" in caplog.text
    _same_result(result, train(_model(d0), d0, None, other, progress=False))
    # the same settings with other data, or another starting model: also a fresh start
    for model, other_d0 in ((_model(d0), new), (_model(d0, seed=1), d0)):
        ckpt.write_bytes(saved)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="golf.train.trainer"):
            train(model, other_d0, None, settings, progress=False, checkpoint=ckpt)
        assert "belongs to other settings" in caplog.text
    with pytest.raises(TrainError, match="checkpoint_every"):
        train(_model(d0), d0, None, settings, progress=False, checkpoint=ckpt, checkpoint_every=0)


def test_training_refuses_atomref_subtracted_energies():
    """An old import kept the authors' atomref-subtracted energies: training on it is an error."""
    from golf.data.dataset import DataError

    d0 = synthetic_dataset(n_conf=2)
    old = synthetic_dataset(n_conf=2, molecule_offset=20)
    old.attrs["energy_convention"] = "atomref_subtracted"
    with pytest.raises(DataError, match="atomref"):
        train(_model(d0), d0, old, TrainSettings(seed=1, **FAST), progress=False)
