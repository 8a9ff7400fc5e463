"""golf.study.metrics on hand-made energies and geometries with known answers."""

import numpy as np
import pandas as pd
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from golf.study import metrics
from golf.study.metrics import MetricsError
from golf.units import HARTREE_TO_KCALPERMOL as KCAL

E0, EOPT = -100.0, -100.01  # start and oracle optimum, Hartree: a drop of 0.01 Ha = 6.275 kcal/mol

# (conformer_id, E_DFT at the final step 2, status); pct = 100 * (E0 - E) / 0.01
FINAL = [
    (1, -100.01, "ok"),  # pct 100, E_res 0 -> success
    (2, -100.005, "ok"),  # pct 50, E_res 3.14 kcal/mol
    (3, -99.99, "ok"),  # above the start: diverged
    (4, np.nan, "scf_not_converged"),  # failed DFT label
    (5, -100.0095, "ok"),  # pct 95, E_res 0.31 kcal/mol -> success
]


def _rows(model, finals, nnp_offset=0.001):
    rows = []
    for conf, e_final, status in finals:
        for step, e, st in (
            (0, E0, "ok"),
            (1, (E0 + e_final) / 2 if np.isfinite(e_final) else E0, "ok"),
            (2, e_final, status),
        ):
            rows.append(
                {
                    "model": model,
                    "molecule_id": 7,
                    "conformer_id": conf,
                    "step": step,
                    "e_dft": e,
                    "dft_status": st,
                    "e_start": E0,
                    "e_opt": EOPT,
                    "e_nnp": (e + nnp_offset) if np.isfinite(e) and nnp_offset is not None else np.nan,
                    "force_err": 0.01 * (step + 1) if nnp_offset is not None else np.nan,
                }
            )
    return rows


@pytest.fixture
def per_step():
    oracle = [(c, EOPT, "ok") for c, _, _ in FINAL]
    return pd.DataFrame(_rows("baseline", FINAL) + _rows("oracle", oracle, nnp_offset=None))


def test_pct_and_e_res_vectorised():
    e0 = np.array([-1.0, -1.0, -1.0, -2.0])
    et = np.array([-1.5, -2.0, -0.5, -2.0])
    eopt = np.array([-2.0, -2.0, -2.0, -2.0])
    np.testing.assert_allclose(metrics.pct(e0, et, eopt)[:3], [50.0, 100.0, -50.0])
    assert np.isnan(metrics.pct(e0, et, eopt)[3])  # start == optimum: undefined, not inf
    np.testing.assert_allclose(metrics.e_res_kcal(et, eopt), [0.5 * KCAL, 0.0, 1.5 * KCAL, 0.0])
    assert metrics.pct(-1.0, -3.0, -2.0) == pytest.approx(200.0)  # lower minimum than the oracle


def _wilson(k, n, z=1.959963984540054):
    """Independent reference: the Wilson score interval in %, from its textbook formula."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return 100 * (centre - half), 100 * (centre + half)


def test_step_metrics_known_values(per_step):
    sm = metrics.step_metrics(per_step)
    assert list(sm["model"].unique()) == ["oracle", "baseline"]
    assert set(sm["protocol"]) == {"paper"}  # no protocol column: the paper's
    last = sm[(sm.model == "baseline") & (sm.step == 2)].iloc[0]
    assert last.n == 5 and last.n_evaluated == 5
    assert last.n_failed == 1 and last.n_label_failed == 1 and last.n_nonfinite == 0  # counted, not dropped
    assert last.n_valid == 4
    assert last.n_diverged_energy == 1
    assert last.n_diverged == 2  # the failed label counts as diverged
    assert last.pct_div == pytest.approx(40.0)  # 2 of all 5 the model was run on
    assert (last.pct_div_low, last.pct_div_high) == pytest.approx(_wilson(2, 5))
    kept_pct = [100.0, 50.0, 95.0]
    assert last.pct_mean == pytest.approx(np.mean(kept_pct))
    assert last.pct_std == pytest.approx(np.std(kept_pct))
    assert last.e_res_mean == pytest.approx(np.mean([0.0, 0.005, 0.0005]) * KCAL)
    assert last.pct_success == pytest.approx(200.0 / 3)  # 2 of the 3 non-diverged
    assert (last.pct_success_low, last.pct_success_high) == pytest.approx(_wilson(2, 3))
    assert last.pct_success_of_all == pytest.approx(40.0)  # 2 of the 5
    # NNP error: every labelled row is off by 1 mHa; the failed row has none.
    assert last.e_err_median == pytest.approx(0.001 * KCAL)
    assert last.e_err_p10 == pytest.approx(0.001 * KCAL)
    assert last.f_err_mean == pytest.approx(0.03)

    start = sm[(sm.model == "baseline") & (sm.step == 0)].iloc[0]
    assert start.pct_mean == 0.0 and start.pct_div == 0.0 and start.n_failed == 0

    oracle = sm[(sm.model == "oracle") & (sm.step == 2)].iloc[0]
    assert oracle.pct_mean == pytest.approx(100.0)
    assert oracle.pct_success == 100.0
    assert np.isnan(oracle.e_err_median) and np.isnan(oracle.f_err_median)  # non-neural: no NNP error


def test_nonfinite_and_failed_labels_count_as_diverged():
    finals = [
        (1, -100.01, "ok"),  # success
        (2, np.nan, "skipped_nonfinite"),  # trajectory blew up: never labelled
        (3, np.nan, "scf_not_converged"),  # final geometry's DFT label failed
        (4, np.nan, "skipped_no_mmff"),  # not run: outside every denominator
    ]
    df = pd.DataFrame(_rows("golf-1", finals))
    s = metrics.summarise(df, final_step=2).iloc[0]
    assert (s.n, s.n_not_run, s.n_evaluated) == (4, 1, 3)
    assert (s.n_nonfinite, s.n_label_failed, s.n_missing, s.n_failed) == (1, 1, 0, 2)
    assert s.n_diverged == 2 and s.n_diverged_energy == 0
    assert s.pct_div == pytest.approx(200.0 / 3)  # the old code said 0 %: failures were left out
    assert s.pct_success == 100.0 and s.pct_success_of_all == pytest.approx(100.0 / 3)
    assert s.e_res_mean == pytest.approx(0.0)
    # An infinite NNP energy is a blown-up trajectory even with a DFT label.
    df.loc[(df.conformer_id == 1) & (df.step == 2), "e_nnp"] = np.inf
    s = metrics.summarise(df, final_step=2).iloc[0]
    assert s.n_nonfinite == 2 and s.n_diverged == 3 and s.pct_div == pytest.approx(100.0)
    assert np.isnan(s.e_res_mean)  # nothing left that did not diverge


def test_a_lower_minimum_than_the_reference_is_counted():
    finals = [
        (1, EOPT - 0.5 / KCAL, "ok"),  # 0.5 kcal/mol below the reference: a success, and counted
        (2, EOPT - 0.05 / KCAL, "ok"),  # within 0.1 kcal/mol: numerical noise, not counted
        (3, EOPT + 2.0 / KCAL, "ok"),
        (4, np.nan, "scf_not_converged"),
    ]
    s = metrics.summarise(pd.DataFrame(_rows("golf-1", finals)), final_step=2).iloc[0]
    assert s.n_below_reference == 1 and s.pct_success == pytest.approx(200.0 / 3)
    assert "n_below_reference" in metrics.step_metrics(pd.DataFrame(_rows("golf-1", finals))).columns


def test_train_rmsd_is_carried_to_the_final_rows(per_step):
    per_step = per_step.assign(train_rmsd=0.1 * per_step["conformer_id"])
    cut = per_step[~((per_step.model == "baseline") & (per_step.conformer_id == 5) & (per_step.step == 2))]
    fin = metrics.final_conformations(cut, final_step=2).set_index(["model", "conformer_id"])
    assert fin.loc[("oracle", 3), "train_rmsd"] == pytest.approx(0.3)
    assert fin.loc[("baseline", 5), "train_rmsd"] == pytest.approx(0.5)  # its final row was lost, not its distance
    assert "train_rmsd" not in metrics.final_conformations(per_step.drop(columns="train_rmsd"), final_step=2)


def test_bad_input_is_a_clear_error(per_step):
    with pytest.raises(MetricsError, match="lacks columns"):
        metrics.step_metrics(per_step.drop(columns="e_opt"))
    with pytest.raises(MetricsError, match="duplicate"):
        metrics.step_metrics(pd.concat([per_step, per_step.iloc[:1]]))
    with pytest.raises(MetricsError, match="DataFrame"):
        metrics.step_metrics(per_step.to_dict())


def test_final_conformations_keeps_a_missing_final_step(per_step):
    # conformer 5 of the baseline stopped at step 1: it must count as diverged at step 2
    cut = per_step[~((per_step.model == "baseline") & (per_step.conformer_id == 5) & (per_step.step == 2))]
    fin = metrics.final_conformations(cut, final_step=2)
    base = fin[fin.model == "baseline"]
    assert len(base) == 5
    assert int(base["failed"].sum()) == 2 and int(base["missing"].sum()) == 1
    row = base[base.conformer_id == 5].iloc[0]
    assert row.dft_status == "missing_step" and not row.valid and row.diverged and row.evaluated
    assert row.e_start == E0 and row.e_opt == EOPT  # the reference energies of its other rows
    s = metrics.summarise(cut, final_step=2).set_index("model").loc["baseline"]
    assert s.n_missing == 1 and s.n_diverged == 3 and s.pct_div == pytest.approx(60.0)


def test_protocol_and_seed_columns(per_step):
    paper = per_step.assign(seed=np.where(per_step.model == "oracle", np.nan, 1))
    capped = paper[paper.model == "baseline"].assign(protocol="capped-0.02")
    seed2 = paper[paper.model == "baseline"].assign(seed=2)
    seed2.loc[seed2.step == 2, ["e_dft", "dft_status"]] = [EOPT, "ok"]  # seed 2 reaches the minimum everywhere
    df = pd.concat([paper, capped, seed2], ignore_index=True)
    s = metrics.summarise(df, final_step=2)
    assert list(zip(s.protocol, s.model, s.seed.fillna(-1), strict=True)) == [
        ("paper", "oracle", -1),
        ("paper", "baseline", 1),
        ("paper", "baseline", 2),
        ("capped-0.02", "oracle", -1),  # the non-neural rows are repeated under every protocol
        ("capped-0.02", "baseline", 1),
    ]
    assert s.pct_div.tolist() == pytest.approx([0.0, 40.0, 0.0, 0.0, 40.0])
    sm = metrics.step_metrics(df)
    assert list(sm.columns[:4]) == ["protocol", "model", "seed", "step"]
    assert len(sm) == 5 * 3
    # COV/MAT: a 5-part key picks the geometries of one protocol and seed
    ref = _embed("CCO")
    refs = {(7, c): ("CCO", ref) for c, _, _ in FINAL}
    far = ref.copy()
    far[2] += [0.0, 2.0, 0.0]
    geoms = {("paper", "baseline", 1, 7, c): ("CCO", ref) for c, _, _ in FINAL}
    geoms |= {("paper", "baseline", 2, 7, c): ("CCO", far) for c, _, _ in FINAL}
    cov = metrics.summarise(df, geoms, refs, final_step=2).set_index(["protocol", "model", "seed"])["cov_pct"]
    assert cov[("paper", "baseline", 1.0)] == 100.0 and cov[("paper", "baseline", 2.0)] == 0.0
    assert np.isnan(cov[("capped-0.02", "baseline", 1.0)])


# --------------------------------------------------------------------------- geometry


def _embed(smiles, seed=7):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=seed) == 0
    return mol.GetConformer().GetPositions()


def _rotate(xyz, angle=0.7, shift=(3.0, -1.0, 2.0)):
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.array(
        [[1.0, 0.0, 0.0], [0.0, np.cos(1.1), -np.sin(1.1)], [0.0, np.sin(1.1), np.cos(1.1)]]
    )
    return xyz @ rot.T + np.asarray(shift)


def _kabsch_rmsd(a, b):
    """Independent reference: RMSD after optimal superposition with a fixed atom mapping."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    u, s, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    s[-1] *= d
    e = (a**2).sum() + (b**2).sum() - 2 * s.sum()
    return float(np.sqrt(max(e, 0.0) / len(a)))


def _heavy(smiles):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    return [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() > 1]


def test_best_rmsd_rigid_motion_is_zero():
    xyz = _embed("CCO")
    assert metrics.best_rmsd("CCO", xyz, _rotate(xyz)) == pytest.approx(0.0, abs=1e-6)
    assert metrics.best_rmsd("CCO", xyz, _rotate(xyz), heavy_atoms=False) == pytest.approx(0.0, abs=1e-6)


def test_best_rmsd_displaced_atom_known_value():
    xyz = _embed("CCO")
    moved = xyz.copy()
    moved[2] += [0.0, 0.9, 0.4]  # the oxygen; CCO has no heavy-atom symmetry, so Kabsch is exact
    h = _heavy("CCO")
    expected = _kabsch_rmsd(xyz[h], moved[h])
    assert expected > 0.1
    assert metrics.best_rmsd("CCO", xyz, _rotate(moved)) == pytest.approx(expected, abs=1e-5)
    # moving a hydrogen changes the all-atom RMSD only
    hmoved = xyz.copy()
    hmoved[-1] += [0.5, 0.0, 0.0]
    assert metrics.best_rmsd("CCO", xyz, hmoved) == pytest.approx(0.0, abs=1e-6)
    assert metrics.best_rmsd("CCO", xyz, hmoved, heavy_atoms=False) > 0.05


def test_best_rmsd_uses_symmetry():
    xyz = _embed("CC(C)C")  # isobutane: the three methyl carbons (0, 2, 3) are equivalent
    swapped = xyz.copy()
    swapped[[0, 2]] = xyz[[2, 0]]
    h = _heavy("CC(C)C")
    assert _kabsch_rmsd(xyz[h], swapped[h]) > 0.3  # fixed mapping sees a difference
    assert metrics.best_rmsd("CC(C)C", xyz, swapped) == pytest.approx(0.0, abs=1e-5)


def test_best_rmsd_bad_geometry():
    with pytest.raises(MetricsError, match="do not fit"):
        metrics.best_rmsd("CCO", np.zeros((3, 3)), np.zeros((3, 3)))
    with pytest.raises(MetricsError, match="cannot parse"):
        metrics.best_rmsd("C1CC", np.zeros((3, 3)), np.zeros((3, 3)))


def test_coverage_matching_hand_made_set():
    ref0 = _embed("CCO")
    ref1 = ref0.copy()
    ref1[2] += [0.0, 2.0, 0.0]  # far from ref0
    h = _heavy("CCO")
    r01 = _kabsch_rmsd(ref0[h], ref1[h])
    assert r01 > 0.5
    # both optimisations of molecule 1 ended in ref0's basin; molecule 2 has no final geometry
    finals = {(1, 0): ("CCO", _rotate(ref0)), (1, 1): ("CCO", _rotate(ref0, 0.2))}
    refs = {(1, 0): ref0, (1, 1): ref1, (2, 0): ("CC", _embed("CC"))}
    cov, mat = metrics.coverage_matching(finals, refs, delta=0.5)
    assert cov == pytest.approx(100.0 / 3)  # 1 of 3 references within 0.5 A
    assert mat == pytest.approx(r01 / 2, abs=1e-5)  # mean of (0, r01); molecule 2 has no term
    # a larger delta covers ref1 too
    assert metrics.coverage_matching(finals, refs, delta=r01 + 0.01).cov == pytest.approx(200.0 / 3)


def test_summarise(per_step):
    ref = _embed("CCO")
    refs = {(7, c): ("CCO", ref) for c, _, _ in FINAL}
    finals = {("baseline", 7, c): ("CCO", _rotate(ref)) for c, _, _ in FINAL}
    finals.update({("oracle", 7, c): ("CCO", ref) for c, _, _ in FINAL})
    s = metrics.summarise(per_step, finals, refs, final_step=2, extra_oracle_calls={"baseline": 0, "oracle": 0})
    assert list(s["model"]) == ["oracle", "baseline"]
    b = s.set_index("model").loc["baseline"]
    assert b.pct_mean == pytest.approx(245.0 / 3)
    assert b.pct_div == pytest.approx(40.0)
    assert b.pct_success == pytest.approx(200.0 / 3)
    assert b.n_failed == 1 and b.n == 5
    assert b.cov_pct == 100.0 and b.mat_angstrom == pytest.approx(0.0, abs=1e-5)
    assert b.extra_oracle_calls == 0
    o = s.set_index("model").loc["oracle"]
    assert o.pct_mean == pytest.approx(100.0) and o.e_res_mean == pytest.approx(0.0)
    # without geometries COV/MAT are NaN, the energy metrics unchanged
    s2 = metrics.summarise(per_step, None, None, final_step=2)
    assert s2["cov_pct"].isna().all() and s2["extra_oracle_calls"].isna().all()
    assert s2.set_index("model").loc["baseline"].pct_div == pytest.approx(40.0)


def test_model_sort_key():
    names = ["traj-600", "golf-10", "mmff", "random-2", "trajeq-60", "traj-60", "golf-2", "baseline", "oracle", "zzz"]
    assert sorted(names, key=metrics.model_sort_key) == [
        "oracle",
        "mmff",
        "baseline",
        "golf-2",
        "golf-10",
        "traj-60",
        "traj-600",
        "trajeq-60",
        "random-2",
        "zzz",
    ]


def test_last_step_summary_agrees_with_step_metrics(per_step):
    """The benches' one-row summary: the same counts and rates as step_metrics at the last step."""
    baseline = per_step[per_step.model == "baseline"]
    row = metrics.last_step_summary("baseline", baseline, molecules=True)
    last = metrics.step_metrics(baseline).iloc[-1]
    assert row["model"] == "baseline" and row["conformations"] == last.n_evaluated == 5
    assert row["failed"] == last.n_failed == 1
    assert row["pct_div"] == pytest.approx(last.pct_div)
    assert row["molecules"] == baseline["molecule_id"].nunique()
    assert "molecules" not in metrics.last_step_summary("baseline", baseline)
