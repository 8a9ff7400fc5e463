"""golf.study.stats: paired comparisons on hand-made per-conformation tables with known answers."""

import time

import numpy as np
import pandas as pd
import pytest

from golf.study import metrics, stats
from golf.units import HARTREE_TO_KCALPERMOL as KCAL

E0, EOPT = -100.0, -100.01  # every conformation: a drop of 0.01 Ha = 6.275 kcal/mol to the optimum


def _per_step(model, e_res, status=None, seed=None, protocol=None, molecules=None):
    """Rows at steps 0 and 10 of ``model``: conformation i ends at E_res = e_res[i] kcal/mol
    (None: diverged above the start), with DFT status ``status[i]`` ("ok" where not given).
    ``molecules[i]``: its molecule (default: every conformation its own molecule)."""
    molecules = list(range(len(e_res))) if molecules is None else list(molecules)
    rows = []
    for i, x in enumerate(e_res):
        st = (status or {}).get(i, "ok")
        e_final = E0 + 0.001 if x is None else EOPT + x / KCAL
        conformer = molecules[:i].count(molecules[i])
        for step, e, s in ((0, E0, "ok"), (10, e_final if st == "ok" else np.nan, st)):
            row = {"model": model, "molecule_id": molecules[i], "conformer_id": conformer, "step": step, "e_dft": e}
            row |= {"dft_status": s, "e_start": E0, "e_opt": EOPT, "e_nnp": np.nan, "force_err": np.nan}
            if seed is not None:
                row["seed"] = seed
            if protocol is not None:
                row["protocol"] = protocol
            rows.append(row)
    return pd.DataFrame(rows)


def _finals(*tables):
    return metrics.final_conformations(pd.concat(tables, ignore_index=True))


def _judged(row):
    """The row as the report judges it: Holm-corrected over its own three quantities."""
    return stats.holm_family(pd.DataFrame([row])).iloc[0].to_dict()


def test_wilson_interval():
    lo, hi = stats.wilson_interval(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-9) and hi == pytest.approx(100 * 3.8415 / 13.8415, rel=1e-4)
    lo, hi = stats.wilson_interval(5, 10)
    assert (lo + hi) / 2 == pytest.approx(50.0) and 20 < lo < 25
    assert all(np.isnan(stats.wilson_interval(0, 0)))


def test_resample_counts_draw_n_with_replacement():
    counts = stats.resample_counts(np.random.default_rng(0), 7, 500)
    assert counts.shape == (500, 7) and (counts.sum(axis=1) == 7).all()
    assert counts.mean() == pytest.approx(1.0) and counts.max() > 1  # with replacement
    assert (stats.resample_counts(np.random.default_rng(0), 1, 3) == 1).all()  # one unit: always drawn


def test_holm_known_values():
    p = [0.01, 0.04, 0.03, 0.005, np.nan]
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> running max 0.06; NaN not counted
    np.testing.assert_allclose(stats.holm(p), [0.03, 0.06, 0.06, 0.02, np.nan])
    assert stats.holm([0.9, 0.8]).tolist() == [1.0, 1.0]  # capped at 1
    assert stats.holm([]).size == 0


def test_bootstrap_p():
    assert stats.bootstrap_p(np.ones(999)) == pytest.approx(2 / 1000)  # every resample on one side
    assert stats.bootstrap_p(np.zeros(999)) == 1.0  # no difference at all
    assert stats.bootstrap_p(np.r_[-np.ones(500), np.ones(499)]) == 1.0
    assert stats.bootstrap_p(np.r_[-np.ones(10), np.ones(989)]) == pytest.approx(2 * 11 / 1000)
    assert np.isnan(stats.bootstrap_p([np.nan, np.nan]))


def test_a_known_difference_is_found():
    rng = np.random.default_rng(0)
    base = rng.uniform(1.0, 4.0, 30)
    better = base - 1.0 + rng.normal(0, 0.2, 30)  # 1 kcal/mol lower on every conformation
    finals = _finals(_per_step("golf-2", list(better)), _per_step("baseline", list(base)))
    (row,) = stats.compare(finals, "golf-2", "baseline")
    assert (row["n_molecules"], row["n_conformations"], row["n_pairs"], row["n_e_res"]) == (30, 30, 30, 30)
    assert row["n_unpaired"] == 0 and row["seed"] == "" and row["n_seeds"] == 1
    assert row["e_res_diff"] == pytest.approx(np.mean(better - base))
    assert row["e_res_low"] < row["e_res_diff"] < row["e_res_high"] < 0  # the interval excludes zero
    assert row["e_res_p"] == pytest.approx(2 / (stats.N_RESAMPLES + 1))  # no resample reaches zero
    succ_a, succ_b = (better < 1).sum(), (base < 1).sum()
    assert row["success_a"] == pytest.approx(100 * succ_a / 30) and row["success_b"] == pytest.approx(100 * succ_b / 30)
    assert row["success_diff"] == pytest.approx(100 * (succ_a - succ_b) / 30)
    judged = _judged(row)
    assert judged["family_size"] == 3 and judged["e_res_p_holm"] == pytest.approx(3 * row["e_res_p"])
    sign, text = stats.verdict(judged)
    assert sign == 1 and text.startswith("golf-2 is better than baseline") and "E_res" in text
    assert "30 molecules" in text


def test_the_molecule_is_the_resampling_unit():
    """Three identical conformations of one molecule are one molecule's worth of evidence."""
    rng = np.random.default_rng(4)
    a, b = rng.uniform(0, 3, 15), rng.uniform(0.5, 3.5, 15)
    one = stats.compare(_finals(_per_step("golf-1", list(a)), _per_step("baseline", list(b))), "golf-1", "baseline")[0]
    mols = np.repeat(np.arange(15), 3)  # every conformation three times, as one molecule
    three = _finals(
        _per_step("golf-1", list(a[mols]), molecules=mols), _per_step("baseline", list(b[mols]), molecules=mols)
    )
    (tripled,) = stats.compare(three, "golf-1", "baseline")
    assert (tripled["n_molecules"], tripled["n_conformations"]) == (15, 45)
    for q in stats.QUANTITIES:
        for key in ("diff", "low", "high", "p"):
            assert tripled[f"{q}_{key}"] == pytest.approx(one[f"{q}_{key}"], abs=1e-12), (q, key)
    # counted as 45 independent molecules, the same numbers would look three times as informative
    many = _finals(_per_step("golf-1", list(a[mols])), _per_step("baseline", list(b[mols])))
    (naive,) = stats.compare(many, "golf-1", "baseline")
    assert naive["e_res_high"] - naive["e_res_low"] < 0.7 * (one["e_res_high"] - one["e_res_low"])


def test_identical_models_are_not_different():
    e = [0.2, 0.5, 3.0, None, 2.0, 0.9, 7.0, None, 1.5, 0.1, 0.3, 4.0]
    finals = _finals(_per_step("golf-1", e), _per_step("baseline", e))
    row = _judged(stats.compare(finals, "golf-1", "baseline")[0])
    assert (row["e_res_diff"], row["e_res_low"], row["e_res_high"]) == (0.0, 0.0, 0.0)
    assert row["success_p"] == 1.0 and row["diverged_p"] == 1.0 and row["e_res_p"] == 1.0
    assert stats.significance(row) == {"e_res": 0, "success": 0, "diverged": 0}
    sign, text = stats.verdict(row)
    assert sign == 0 and text.startswith("no significant difference between golf-1 and baseline")


def test_noise_alone_is_not_a_finding():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0, 4, 12), rng.uniform(0, 4, 12)  # same distribution, 12 molecules
    (row,) = stats.compare(_finals(_per_step("traj-9", list(a)), _per_step("golf-1", list(b))), "golf-1", "traj-9")
    assert row["e_res_low"] < 0 < row["e_res_high"] and row["e_res_p"] > 0.05
    assert stats.verdict(_judged(row))[0] == 0


def test_divergence_pairs_and_failed_labels():
    # a diverges (energy) on 0-5 and fails its label on 6; b converges everywhere; 10 molecules
    b = [0.5] * 10
    a = [None] * 6 + [0.5, 0.2, 0.3, 0.4]
    finals = _finals(_per_step("golf-1", a, status={6: "scf_not_converged"}), _per_step("baseline", b))
    (row,) = stats.compare(finals, "golf-1", "baseline")
    assert row["n_pairs"] == 10 and row["n_molecules"] == 10
    assert row["n_e_res"] == 3 and row["n_e_res_molecules"] == 3  # valid and not diverged for both
    assert row["e_res_diff"] == pytest.approx(np.mean([-0.3, -0.2, -0.1]))
    assert (row["diverged_a"], row["diverged_b"], row["diverged_diff"]) == pytest.approx((70.0, 0.0, 70.0))
    assert row["success_diff"] == pytest.approx(-70.0)  # a diverged conformation is no success
    judged = _judged(row)
    # E_res is lower on the 3 pairs left, but 3 molecules decide nothing: not even in the family
    assert row["e_res_high"] < 0 and np.isnan(judged["e_res_p_holm"]) and judged["family_size"] == 2
    assert stats.significance(judged) == {"e_res": 0, "success": -1, "diverged": -1}
    sign, text = stats.verdict(judged)
    assert sign == -1 and text.startswith(
        "baseline is better than golf-1 (Holm-adjusted p < 0.05 in success, divergence)"
    )
    assert "fewer than 10 molecules decides nothing" in text


def test_fewer_than_ten_molecules_decide_nothing():
    finals = _finals(_per_step("golf-1", [0.1] * 9), _per_step("baseline", [5.0] * 9))
    row = _judged(stats.compare(finals, "golf-1", "baseline")[0])
    assert row["e_res_p"] < 0.05 and row["family_size"] == 0
    assert stats.verdict(row)[0] == 0


def test_holm_decides_and_mixed_results_are_no_win():
    row = {"model_a": "golf-1", "model_b": "traj-9", "n_pairs": 40, "n_molecules": 20, "n_e_res_molecules": 20}
    row |= {"e_res_diff": -0.5, "e_res_p": 0.02, "success_diff": 5.0, "success_p": 0.03}
    row |= {"diverged_diff": -2.0, "diverged_p": 0.04}
    # every raw p < 0.05, none after Holm (0.06, 0.06, 0.06)
    judged = _judged(row)
    assert [judged[f"{q}_p_holm"] for q in stats.QUANTITIES] == pytest.approx([0.06] * 3)
    assert stats.verdict(judged)[0] == 0
    judged = _judged(row | {"e_res_p": 0.001})  # 0.003: E_res decides
    assert stats.verdict(judged)[0] == 1
    judged = _judged(row | {"e_res_p": 0.001, "diverged_diff": 3.0, "diverged_p": 0.002})  # against a
    sign, text = stats.verdict(judged)
    assert sign == 0 and text.startswith("mixed: golf-1 better in E_res, success but traj-9 better in divergence")


def test_unpaired_conformations_are_counted_not_paired():
    finals = _finals(_per_step("golf-1", [0.5] * 6), _per_step("baseline", [0.5] * 4))
    (row,) = stats.compare(finals, "golf-1", "baseline")
    assert row["n_pairs"] == 4 and row["n_unpaired"] == 2
    # MMFF not run on a conformation (no parameters): not a pair either
    finals = _finals(_per_step("baseline", [0.5] * 4), _per_step("mmff", [0.5] * 4, status={0: "skipped_no_mmff"}))
    (row,) = stats.compare(finals, "baseline", "mmff")
    assert row["n_pairs"] == 3 and row["n_unpaired"] == 1
    with pytest.raises(stats.StatsError, match="no final rows of model 'golf-9'"):
        stats.compare(finals, "golf-9", "baseline")


def test_seeds_pair_within_a_seed_and_are_resampled():
    rng = np.random.default_rng(2)
    base = rng.uniform(1.0, 4.0, 15)
    tables = [_per_step("mmff", list(base))]  # no seed: pairs with every seed
    for seed in (1, 2):
        tables.append(_per_step("golf-3", list(base - 0.8 + rng.normal(0, 0.1, 15)), seed=seed))
        tables.append(_per_step("baseline", list(base + rng.normal(0, 0.1, 15)), seed=seed))
    finals = _finals(*tables)
    rows = stats.compare(finals, "golf-3", "baseline")
    assert [r["seed"] for r in rows] == ["1", "2", stats.POOLED]
    pooled = rows[-1]
    assert (pooled["n_seeds"], pooled["n_molecules"], pooled["n_conformations"], pooled["n_pairs"]) == (2, 15, 15, 30)
    assert pooled["e_res_diff"] == pytest.approx(np.mean([rows[0]["e_res_diff"], rows[1]["e_res_diff"]]))
    assert pooled["e_res_high"] < 0 and stats.verdict(_judged(pooled))[0] == 1
    # a seed's own row is the molecule bootstrap of that seed alone
    alone = stats.compare(finals[finals["seed"].isin([1.0]) | finals["seed"].isna()], "golf-3", "baseline")
    assert [r["seed"] for r in alone] == ["1"]
    assert {k: alone[0][k] for k in ("e_res_low", "e_res_high", "success_p")} == {
        k: rows[0][k] for k in ("e_res_low", "e_res_high", "success_p")
    }
    mm = stats.compare(finals, "baseline", "mmff")
    assert [r["seed"] for r in mm] == ["1", "2", stats.POOLED] and mm[-1]["n_conformations"] == 15


def test_one_seed_is_the_molecule_bootstrap():
    rng = np.random.default_rng(5)
    a, b = list(rng.uniform(0, 3, 20)), list(rng.uniform(0, 3, 20))
    plain = stats.compare(_finals(_per_step("golf-1", a), _per_step("baseline", b)), "golf-1", "baseline")[0]
    seeded = stats.compare(
        _finals(_per_step("golf-1", a, seed=7), _per_step("baseline", b, seed=7)), "golf-1", "baseline"
    )[0]
    assert seeded["seed"] == "7" and seeded["n_seeds"] == 1
    for q in stats.QUANTITIES:
        assert (seeded[f"{q}_low"], seeded[f"{q}_high"], seeded[f"{q}_p"]) == (
            plain[f"{q}_low"], plain[f"{q}_high"], plain[f"{q}_p"]
        )  # fmt: skip


def test_seed_to_seed_variation_is_inside_the_interval():
    """Each seed alone is clearly different from the baseline, in opposite directions: resampling
    the seeds makes the pooled interval cover both and decide nothing."""
    rng = np.random.default_rng(3)
    base = rng.uniform(1.0, 4.0, 20)
    tables = []
    for seed, shift in ((1, -1.0), (2, 0.3)):
        tables.append(_per_step("golf-1", list(base + shift + rng.normal(0, 0.05, 20)), seed=seed))
        tables.append(_per_step("baseline", list(base), seed=seed))
    one, two, pooled = stats.compare(_finals(*tables), "golf-1", "baseline")
    assert one["e_res_high"] < 0 < two["e_res_low"] and one["e_res_p"] < 0.01 and two["e_res_p"] < 0.01
    assert pooled["e_res_low"] < -0.9 and pooled["e_res_high"] > 0.2  # both seeds' values inside
    assert pooled["e_res_p"] > 0.05 and stats.verdict(_judged(pooled))[0] == 0


def test_bootstrap_is_seeded_and_vectorised():
    rng = np.random.default_rng(6)
    sums = {"num": rng.normal(size=(5, 100)), "den": rng.integers(1, 4, (5, 100)).astype(float)}
    start = time.perf_counter()
    first = stats.cluster_bootstrap(sums, 10_000)
    elapsed = time.perf_counter() - start
    again = stats.cluster_bootstrap(sums, 10_000)
    assert first["num"].shape == (10_000,) and np.array_equal(first["num"], again["num"])
    assert elapsed < 1.0  # 10^4 resamples of 5 seeds x 100 molecules: milliseconds, not seconds
    with pytest.raises(stats.StatsError, match="shapes"):
        stats.cluster_bootstrap({"a": np.ones((2, 3)), "b": np.ones((3, 3))})


def test_study_comparisons():
    models = ["oracle", "mmff", "baseline", "golf-1", "golf-2", "golf-3", "traj-40", "traj-200", "random-2"]
    calls = {"golf-1": 20, "golf-2": 40, "golf-3": 60, "traj-40": 40, "traj-200": 200, "random-2": 41}
    assert stats.study_comparisons(models, calls) == [
        ("golf-3", "baseline", "last GOLF round vs baseline"),
        ("golf-2", "traj-40", "GOLF vs traj-k at equal or smaller budget"),
        ("golf-3", "traj-200", "GOLF vs traj-k at equal or smaller budget"),
        ("golf-2", "random-2", "GOLF vs random-selection control"),
        ("baseline", "mmff", "NNP baseline vs RDKit MMFF"),
    ]
    # trajeq-k: GOLF against it at its budget, and traj-k against it (same data)
    with_eq = stats.study_comparisons([*models, "trajeq-40"], calls | {"trajeq-40": 40})
    assert ("golf-2", "trajeq-40", "GOLF vs trajeq-k (traj-k's data trained as GOLF) at equal or smaller budget") in (
        with_eq
    )
    assert with_eq[-1] == ("traj-40", "trajeq-40", "traj-k vs trajeq-k: the same data, two training schemes")
    assert len(with_eq) == 7  # the five above and these two
    # unknown budgets: the last round; a random control named by its budget: GOLF by budget
    assert stats.study_comparisons(["golf-1", "golf-2", "traj-9"])[0][0] == "golf-2"
    assert stats.study_comparisons(["golf-1", "golf-2", "random-30"], {"golf-1": 20, "golf-2": 40, "random-30": 30})[
        0
    ] == ("golf-1", "random-30", "GOLF vs random-selection control")


def test_paired_comparisons_by_protocol_one_family_each():
    e = [0.5, 2.0, 3.0, 0.1] * 3
    tables = [_per_step("mmff", e), _per_step("baseline", e), _per_step("golf-1", [0.1] * 12)]
    tables.append(_per_step("baseline", e, protocol="capped-0.02"))
    table = stats.paired_comparisons(_finals(*tables), n_resamples=2000)
    assert list(table.columns) == list(stats.PAIRED_COLUMNS)
    assert table[["protocol", "model_a", "model_b"]].values.tolist() == [
        ["paper", "golf-1", "baseline"],
        ["paper", "baseline", "mmff"],
        ["capped-0.02", "baseline", "mmff"],  # mmff's rows serve every protocol
    ]
    assert table["verdict"].str.len().gt(0).all() and stats.is_pooled(table).all()
    # the paper family: 2 comparisons x 3 quantities (identical mmff/baseline: p = 1, still tested)
    assert table["family_size"].tolist() == [6, 6, 3]
    assert table.loc[0, "verdict"].startswith("golf-1 is better than baseline")


def test_paired_comparisons_keep_per_seed_rows_without_verdict():
    tables = []
    for seed in (0, 1):
        tables.append(_per_step("golf-1", [0.2] * 12, seed=seed))
        tables.append(_per_step("baseline", [2.0] * 12, seed=seed))
    table = stats.paired_comparisons(_finals(*tables), n_resamples=2000)
    assert table["seed"].tolist() == ["0", "1", stats.POOLED]
    assert table["verdict"].tolist()[:2] == ["", ""] and table["family_size"].isna().tolist() == [True, True, False]
    assert table["e_res_p_holm"].isna().tolist() == [True, True, False]
    assert (table["n_seeds"].tolist(), table["n_molecules"].tolist()) == ([1, 1, 2], [12, 12, 12])


def test_seed_spread():
    summary = pd.DataFrame(
        {
            "protocol": ["paper"] * 4,
            "model": ["mmff", "baseline", "baseline", "golf-1"],
            "seed": [np.nan, 1, 2, 1],
            "pct_div": [0.0, 10.0, 30.0, 5.0],
            "e_res_mean": [3.0, 2.0, 4.0, 1.0],
        }
    )
    spread = stats.seed_spread(summary, ("pct_div", "e_res_mean")).set_index("model")
    assert spread.loc["baseline", "n_seeds"] == 2
    assert spread.loc["baseline", "pct_div_mean"] == 20.0
    assert spread.loc["baseline", "pct_div_std"] == pytest.approx(np.std([10, 30], ddof=1))
    assert (spread.loc["baseline", "e_res_mean_min"], spread.loc["baseline", "e_res_mean_max"]) == (2.0, 4.0)
    assert "mmff" not in spread.index
    assert stats.seed_spread(summary.drop(columns="seed")) is None
    assert stats.seed_spread(summary[summary.model != "baseline"], ("pct_div",)) is None  # one seed each
