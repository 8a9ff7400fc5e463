"""golf.stats: paired comparisons on hand-made per-conformation tables with known answers."""

import numpy as np
import pandas as pd
import pytest

from golf import metrics, stats
from golf.units import HARTREE_TO_KCALPERMOL as KCAL

E0, EOPT = -100.0, -100.01  # every conformation: a drop of 0.01 Ha = 6.275 kcal/mol to the optimum


def _per_step(model, e_res, status=None, seed=None, protocol=None):
    """Rows at steps 0 and 10 of ``model``: conformation i ends at E_res = e_res[i] kcal/mol
    (None: diverged above the start), with DFT status ``status[i]`` ("ok" where not given)."""
    rows = []
    for i, x in enumerate(e_res):
        st = (status or {}).get(i, "ok")
        e_final = E0 + 0.001 if x is None else EOPT + x / KCAL
        for step, e, s in ((0, E0, "ok"), (10, e_final if st == "ok" else np.nan, st)):
            row = {"model": model, "molecule_id": i // 3, "conformer_id": i % 3, "step": step, "e_dft": e}
            row |= {"dft_status": s, "e_start": E0, "e_opt": EOPT, "e_nnp": np.nan, "force_err": np.nan}
            if seed is not None:
                row["seed"] = seed
            if protocol is not None:
                row["protocol"] = protocol
            rows.append(row)
    return pd.DataFrame(rows)


def _finals(*tables):
    return metrics.final_conformations(pd.concat(tables, ignore_index=True))


def test_mcnemar_exact_known_table():
    # 1 vs 8 discordant pairs: p = 2 * P(X <= 1), X ~ Bin(9, 1/2) = 2 * (1 + 9) / 2**9
    assert stats.mcnemar_exact(1, 8) == pytest.approx(20 / 512)
    assert stats.mcnemar_exact(8, 1) == pytest.approx(20 / 512)
    assert stats.mcnemar_exact(4, 4) == pytest.approx(1.0)
    assert stats.mcnemar_exact(0, 0) == 1.0  # no discordant pair: no evidence
    assert stats.mcnemar_exact(0, 5) == pytest.approx(2 / 32)  # 5 to 0 is not yet significant
    assert stats.mcnemar_exact(0, 6) == pytest.approx(2 / 64)


def test_wilson_interval():
    lo, hi = stats.wilson_interval(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-9) and hi == pytest.approx(100 * 3.8415 / 13.8415, rel=1e-4)
    lo, hi = stats.wilson_interval(5, 10)
    assert (lo + hi) / 2 == pytest.approx(50.0) and 20 < lo < 25
    assert all(np.isnan(stats.wilson_interval(0, 0)))


def test_bootstrap_mean_is_deterministic_and_handles_edge_cases():
    rng = np.random.default_rng(3)
    x = 0.5 + rng.normal(0, 1, 40)
    a, b = stats.bootstrap_mean(x), stats.bootstrap_mean(x)
    assert a == b  # seeded
    assert a.low < a.estimate < a.high and a.estimate == pytest.approx(x.mean())
    # the interval has about the width of the normal approximation
    assert (a.high - a.low) == pytest.approx(2 * 1.96 * x.std(ddof=1) / np.sqrt(len(x)), rel=0.3)
    assert stats.bootstrap_mean([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    one = stats.bootstrap_mean([1.5, np.nan])
    assert one.estimate == 1.5 and np.isnan(one.low) and np.isnan(one.high)
    assert all(np.isnan(stats.bootstrap_mean([])))


def test_a_known_difference_is_found():
    rng = np.random.default_rng(0)
    base = rng.uniform(1.0, 4.0, 30)
    better = base - 1.0 + rng.normal(0, 0.2, 30)  # 1 kcal/mol lower on every conformation
    finals = _finals(_per_step("golf-2", list(better)), _per_step("baseline", list(base)))
    (row,) = stats.compare(finals, "golf-2", "baseline")
    assert row["n_pairs"] == 30 and row["n_e_res"] == 30 and row["n_unpaired"] == 0 and row["seed"] == ""
    assert row["e_res_diff"] == pytest.approx(np.mean(better - base))
    assert row["e_res_low"] < row["e_res_diff"] < row["e_res_high"] < 0  # the interval excludes zero
    assert row["pct_low"] > 0  # E_res lower by 1 kcal/mol = pct higher by 100/6.275 points
    assert row["pct_diff"] == pytest.approx(-row["e_res_diff"] / (0.01 * KCAL) * 100)
    succ_a, succ_b = (better < 1).sum(), (base < 1).sum()
    assert row["success_a"] == pytest.approx(100 * succ_a / 30) and row["success_b"] == pytest.approx(100 * succ_b / 30)
    assert row["success_a_only"] == int(((better < 1) & (base >= 1)).sum()) and row["success_b_only"] == 0
    assert row["success_p"] == pytest.approx(stats.mcnemar_exact(row["success_a_only"], 0))
    sign, text = stats.verdict(row)
    assert sign == 1 and text.startswith("golf-2 is better than baseline") and "E_res" in text


def test_identical_models_are_not_different():
    e = [0.2, 0.5, 3.0, None, 2.0, 0.9, 7.0, None, 1.5]
    finals = _finals(_per_step("golf-1", e), _per_step("baseline", e))
    (row,) = stats.compare(finals, "golf-1", "baseline")
    assert row["e_res_low"] <= 0 <= row["e_res_high"] and row["e_res_diff"] == 0
    assert row["success_p"] == 1.0 and row["diverged_p"] == 1.0
    assert stats.significance(row) == {"success": 0, "diverged": 0, "e_res": 0, "pct": 0}
    sign, text = stats.verdict(row)
    assert sign == 0 and text.startswith("no significant difference between golf-1 and baseline")


def test_noise_alone_is_not_a_finding():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0, 4, 12), rng.uniform(0, 4, 12)  # same distribution, 12 conformations
    (row,) = stats.compare(_finals(_per_step("traj-9", list(a)), _per_step("golf-1", list(b))), "golf-1", "traj-9")
    assert row["e_res_low"] < 0 < row["e_res_high"]
    assert stats.verdict(row)[0] == 0


def test_divergence_pairs_and_failed_labels():
    # a diverges (energy) on 0-5 and fails its label on 6; b converges everywhere: 7 discordant
    b = [0.5] * 10
    a = [None] * 6 + [0.5, 0.2, 0.3, 0.4]
    finals = _finals(_per_step("golf-1", a, status={6: "scf_not_converged"}), _per_step("baseline", b))
    (row,) = stats.compare(finals, "golf-1", "baseline")
    assert row["n_pairs"] == 10
    assert row["n_e_res"] == 3  # only conformations valid and not diverged for both enter E_res
    assert row["e_res_diff"] == pytest.approx(np.mean([-0.3, -0.2, -0.1]))
    assert (row["diverged_a_only"], row["diverged_b_only"]) == (7, 0)
    assert row["diverged_a"] == pytest.approx(70.0) and row["diverged_b"] == 0.0
    assert row["diverged_p"] == pytest.approx(2 / 2**7)
    assert row["success_p"] == pytest.approx(2 / 2**7)  # a diverged conformation is no success
    # E_res is lower on the 3 pairs left, but an interval over 3 values decides nothing
    assert row["e_res_high"] < 0 and stats.significance(row)["e_res"] == 0
    sign, text = stats.verdict(row)
    assert sign == -1 and text.startswith("baseline is better than golf-1 (significant in success, divergence)")


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


def test_seeds_pair_within_a_seed_and_pool_per_conformation():
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
    assert pooled["n_seeds"] == 2 and pooled["n_pairs"] == 15  # conformations, not (seed, conformation)
    assert pooled["e_res_diff"] == pytest.approx(np.mean([rows[0]["e_res_diff"], rows[1]["e_res_diff"]]))
    assert np.isnan(pooled["success_p"]) and rows[0]["success_p"] <= 1  # McNemar per seed only
    assert pooled["e_res_high"] < 0 and stats.verdict(pooled)[0] == 1
    mm = stats.compare(finals, "baseline", "mmff")
    assert [r["seed"] for r in mm] == ["1", "2", stats.POOLED] and mm[-1]["n_pairs"] == 15


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
    # unknown budgets: the last round; a random control named by its budget: GOLF by budget
    assert stats.study_comparisons(["golf-1", "golf-2", "traj-9"])[0][0] == "golf-2"
    assert stats.study_comparisons(["golf-1", "golf-2", "random-30"], {"golf-1": 20, "golf-2": 40, "random-30": 30})[
        0
    ] == ("golf-1", "random-30", "GOLF vs random-selection control")


def test_paired_comparisons_by_protocol():
    e = [0.5, 2.0, 3.0, 0.1]
    tables = [_per_step("mmff", e), _per_step("baseline", e), _per_step("golf-1", [0.1] * 4)]
    tables.append(_per_step("baseline", e, protocol="capped-0.02"))
    table = stats.paired_comparisons(_finals(*tables))
    assert list(table.columns) == list(stats.PAIRED_COLUMNS)
    assert table[["protocol", "model_a", "model_b"]].values.tolist() == [
        ["paper", "golf-1", "baseline"],
        ["paper", "baseline", "mmff"],
        ["capped-0.02", "baseline", "mmff"],  # mmff's rows serve every protocol
    ]
    assert table["verdict"].str.len().gt(0).all()


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
