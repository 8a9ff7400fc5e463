"""golf.study.report and golf.study.plots: summary.md, paired.csv and every plot from a small synthetic study."""

import re

import numpy as np
import pandas as pd
import pytest

from golf import data
from golf.study import evaluate, metrics, paper, plots, report
from golf.study.budget import BudgetError, arm_budgets, extra_oracle_calls
from golf.study.report import ReportError

STEPS = (0, 1, 2, 3, 5, 8)
# model -> (fraction of the oracle's drop reached at the last step, NNP error scale in Hartree or None)
MODELS = {
    "oracle": (1.0, None),
    "mmff": (0.85, None),
    "baseline": (0.7, 3e-3),
    "golf-1": (0.9, 1e-3),
    "golf-2": (0.99, 3e-4),
    "traj-60": (0.95, 5e-4),
}


def _synthetic(n_conf=6, seed=0, models=MODELS, steps=STEPS):
    """Per-step rows; the test set is the same for every ``seed``, which draws the models' noise."""
    test_set = np.random.default_rng(100)
    e_start = -300.0 - test_set.uniform(0, 1, n_conf)
    drop = test_set.uniform(0.005, 0.03, n_conf)  # Hartree
    rng = np.random.default_rng(seed)
    rows = []
    for model, (reach, err) in models.items():
        for c in range(n_conf):
            for step in steps:
                frac = reach * (1 - np.exp(-step / 2)) / (1 - np.exp(-steps[-1] / 2)) if steps[-1] else 0.0
                e = e_start[c] - drop[c] * (frac + (rng.normal(0, 0.05) if model != "oracle" and step else 0.0))
                status = "ok"
                if model == "baseline" and c == 0 and step == steps[-1]:
                    e, status = np.nan, "scf_not_converged"
                if model == "baseline" and c == 1 and step == steps[-1]:
                    e = e_start[c] + 0.002  # diverged
                rows.append(
                    {
                        "model": model,
                        "molecule_id": c // 2,
                        "conformer_id": c % 2,
                        "step": step,
                        "e_dft": e,
                        "dft_status": status,
                        "e_start": e_start[c],
                        "e_opt": e_start[c] - drop[c],
                        "e_nnp": e + err * rng.normal() * (1 + step) if err else np.nan,
                        "force_err": err * (1 + step) ** 0.5 if err else np.nan,
                    }
                )
    return pd.DataFrame(rows)


def _report_inputs(per_step):
    steps = metrics.step_metrics(per_step)
    final = metrics.final_conformations(per_step)
    calls = {"baseline": 0, "golf-1": 30, "golf-2": 60, "traj-60": 60, "mmff": 0}
    summary = metrics.summarise(per_step, None, None, extra_oracle_calls=calls)
    summary["cov_pct"] = [50.0] * len(summary)  # COV/MAT are tested in test_metrics; any number works here
    summary["mat_angstrom"] = [0.4] * len(summary)
    return summary, steps, final


def _check_files(paths, outdir):
    names = {p.name for p in paths}
    assert "summary.md" in names and "paired.csv" in names
    for plot in plots.PLOTS:
        for ext in ("png", "svg"):
            f = outdir / f"{plot}.{ext}"
            assert f in paths
            assert f.stat().st_size > 1000, f
    assert (outdir / "pct_vs_step.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (outdir / "pct_vs_step.svg").read_bytes()[:2000]


def _rows(md_section):
    """{first cell: [cells]} of every pipe-table row of a markdown text (header and rule skipped)."""
    out = {}
    for line in md_section.splitlines():
        if line.startswith("|") and not line.startswith("|:"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            out.setdefault(cells[0], cells)
    return out


def _section(md, title):
    """The text of the markdown section starting with heading ``title`` up to the next ## heading."""
    start = md.index(title)
    nxt = md.find("\n## ", start + len(title))
    return md[start : nxt if nxt > 0 else len(md)]


def test_write_report_full(tmp_path):
    summary, steps, final = _report_inputs(_synthetic())
    settings = {"rounds": 2, "oracle": {"method": "hf", "basis": "sto-3g"}, "models": ["baseline", "golf-2"]}
    paths = report.write_report(summary, steps, final, tmp_path / "report", settings)
    outdir = tmp_path / "report"
    _check_files(paths, outdir)
    md = (outdir / "summary.md").read_text()
    ours = _rows(_section(md, "## This study: the paper's protocol").split("### Paired")[0])
    assert set(MODELS) <= set(ours)
    b = summary.set_index("model").loc["baseline"]
    header = ours["model"]
    row = dict(zip(header, ours["baseline"], strict=True))
    assert row["mean pct_T (%) ↑"] == f"{b.pct_mean:.1f} ± {b.pct_std:.1f}"
    assert row["pct_div (%) ↓ [95 % CI]"] == f"{b.pct_div:.1f} [{b.pct_div_low:.1f}, {b.pct_div_high:.1f}]"
    assert b.pct_div == pytest.approx(100 / 3)  # the diverged and the failed label of 6
    assert row["diverged: E↑/non-finite/label failed/missing"] == "1/0/1/0"
    assert row["n evaluated (not run, no ref.)"] == "6 (0, 0)"
    paper_rows = _rows(_section(md, "## The paper's Table 2"))
    assert {r.method for r in paper.PAPER_TABLE2} <= set(paper_rows)
    assert paper_rows["f_GOLF-10k"][4] == "77.3"  # GOLF-10k's pct_success in the paper
    settings_rows = _rows(_section(md, "## Settings"))
    assert settings_rows["oracle.method"] == ["oracle.method", "`hf`"]
    assert settings_rows["models"] == ["models", '`["baseline", "golf-2"]`']
    # the paired comparisons: table, csv and the verdicts
    paired = pd.read_csv(outdir / "paired.csv", keep_default_na=False)
    assert paired[["model_a", "model_b"]].values.tolist() == [
        ["golf-2", "baseline"],
        ["golf-2", "traj-60"],
        ["baseline", "mmff"],
    ]
    assert (paired["n_pairs"] == 6).all() and (paired["protocol"] == "paper").all()
    assert (paired["n_molecules"] == 3).all() and (paired["n_conformations"] == 6).all()
    pairs = _rows(_section(md, "### Paired comparisons (paper)"))
    assert set(pairs) == {"a − b", "golf-2 − baseline", "golf-2 − traj-60", "baseline − mmff"}
    findings = _section(md, "## What this shows")
    for _, r in paired.iterrows():
        assert r["verdict"].split(";")[0] in findings
    # 3 molecules: an interval over fewer than 10 molecules decides nothing, however large the difference
    assert "no significant difference between golf-2 and baseline" in findings
    assert "is better" not in md and (paired["family_size"] == 0).all()
    assert "## Test conformations without a converged reference" in md and "(not given" in md
    assert "6 test conformations of 3 molecules are evaluated" in md and "Distance from training: not known" in md
    for plot in plots.PLOTS:
        assert f"({plot}.png)" in md


def test_enough_molecules_decide_and_trajeq_is_compared(tmp_path):
    models = dict(MODELS) | {"trajeq-60": (0.97, 5e-4)}
    summary, steps, final = _report_inputs(_synthetic(n_conf=24, models=models))  # 12 molecules
    paths = report.write_report(summary, steps, final, tmp_path)
    _check_files(paths, tmp_path)
    paired = pd.read_csv(tmp_path / "paired.csv")
    assert paired[["model_a", "model_b"]].values.tolist() == [
        ["golf-2", "baseline"],
        ["golf-2", "traj-60"],
        ["golf-2", "trajeq-60"],
        ["baseline", "mmff"],
        ["traj-60", "trajeq-60"],
    ]
    assert (paired["family_size"] == 15).all() and (paired["n_molecules"] == 12).all()
    md = (tmp_path / "summary.md").read_text()
    assert "golf-2 is better than baseline (Holm-adjusted p < 0.05" in _section(md, "## What this shows")
    results = _rows(_section(md, "## This study").split("### Paired")[0])
    below = dict(zip(results["model"], results["golf-2"], strict=True))["below ref. (E_res < −0.1)"]
    assert below == str(int(summary.set_index("model").loc["golf-2", "n_below_reference"]))


def test_identical_models_get_no_verdict(tmp_path):
    per_step = _synthetic(n_conf=12, models={"baseline": (0.9, 1e-3)})
    twin = per_step.assign(model="golf-1")
    summary, steps, final = _report_inputs(pd.concat([per_step, twin], ignore_index=True))
    report.write_report(summary, steps, final, tmp_path)
    md = (tmp_path / "summary.md").read_text()
    (row,) = pd.read_csv(tmp_path / "paired.csv").to_dict("records")
    assert (row["e_res_diff"], row["e_res_low"], row["e_res_high"]) == (0.0, 0.0, 0.0)
    assert row["success_p"] == 1.0 and row["diverged_p"] == 1.0 and row["e_res_p"] == 1.0
    assert "last GOLF round vs baseline: no significant difference between golf-1 and baseline" in md
    assert "is better" not in md


def test_paper_protocol_first_and_capped_rows_apart(tmp_path):
    paper = _synthetic()
    capped = _synthetic(seed=5, models={m: v for m, v in MODELS.items() if m not in ("mmff", "oracle")})
    per_step = pd.concat([paper, capped.assign(protocol="capped-0.02")], ignore_index=True)
    summary, steps, final = _report_inputs(per_step)
    assert summary["protocol"].tolist()[:6] == ["paper"] * 6
    report.write_report(summary, steps, final, tmp_path)
    md = (tmp_path / "summary.md").read_text()
    first, second = md.index("## This study: the paper's protocol"), md.index("## Second row set: capped-0.02")
    assert first < second
    capped_section = _section(md, "## Second row set: capped-0.02")
    assert "not the paper's protocol" in capped_section and "0.02 Å" in capped_section
    capped_rows = _rows(capped_section.split("### Paired")[0])
    assert {"oracle", "mmff", "baseline", "golf-2"} <= set(capped_rows)  # non-neural rows repeated for reference
    capped_baseline = summary[(summary.protocol == "capped-0.02") & (summary.model == "baseline")].iloc[0]
    cells = dict(zip(capped_rows["model"], capped_rows["baseline"], strict=True))
    assert cells["mean pct_T (%) ↑"] == f"{capped_baseline.pct_mean:.1f} ± {capped_baseline.pct_std:.1f}"
    paired = pd.read_csv(tmp_path / "paired.csv")
    assert paired.groupby("protocol").size().to_dict() == {"paper": 3, "capped-0.02": 3}
    assert "[capped-0.02, not the paper's protocol]" in _section(md, "## What this shows")


def test_seeds_give_per_seed_rows_and_a_spread(tmp_path):
    nnp = {m: v for m, v in MODELS.items() if m not in ("mmff", "oracle")}
    fixed = _synthetic(n_conf=24, models={m: MODELS[m] for m in ("mmff", "oracle")})
    seeded = [_synthetic(n_conf=24, seed=s, models=nnp).assign(seed=s) for s in (1, 2)]
    summary, steps, final = _report_inputs(pd.concat([fixed, *seeded], ignore_index=True))
    assert len(summary) == 2 + 2 * len(nnp)  # per (model, seed); mmff and oracle once
    report.write_report(summary, steps, final, tmp_path)
    md = (tmp_path / "summary.md").read_text()
    spread = _rows(_section(md, "### Spread across seeds (paper)"))
    assert set(spread) == {"model", *nnp}
    cells = dict(zip(spread["model"], spread["golf-2"], strict=True))
    g = summary[summary.model == "golf-2"]["pct_div"]
    assert cells["seeds"] == "2"
    assert cells["pct_div (%): mean ± std (min–max)"].endswith(f"({g.min():.1f}–{g.max():.1f})")
    paired = pd.read_csv(tmp_path / "paired.csv", dtype={"seed": str}, keep_default_na=False)
    first = paired[(paired.model_a == "golf-2") & (paired.model_b == "baseline")]
    assert first["seed"].tolist() == ["1", "2", "all"]
    assert first["verdict"].tolist()[:2] == ["", ""] and first["verdict"].iloc[2]  # verdicts on the pooled row
    assert first["success_p_holm"].tolist()[:2] == ["", ""]  # per-seed rows: raw p, outside the family
    assert first["n_seeds"].tolist() == [1, 1, 2]
    per_seed = _rows(_section(md, "### Paired comparisons per seed (paper)"))
    assert per_seed["golf-2 − baseline"][1] == "1"  # a row per seed, the first being seed 1
    note = _section(md, "### Paired comparisons (paper)")
    assert "resample **test molecules**" in note and "2 seeds, resampled with replacement" in note
    family = int(paired[paired["seed"] == "all"]["family_size"].iloc[0])
    assert family == 9  # 3 comparisons x 3 quantities, each over 12 molecules
    assert f"{family} tests over at least 10 molecules, with Holm's correction" in note


def test_unconverged_references_are_listed(tmp_path):
    summary, steps, final = _report_inputs(_synthetic(n_conf=2))
    lost = pd.DataFrame({"molecule_id": [4], "conformer_id": [1], "smiles": ["CC(=O)OC"], "end": ["step limit"]})
    report.write_report(summary, steps, final, tmp_path, unconverged=lost)
    md = (tmp_path / "summary.md").read_text()
    rows = _rows(_section(md, "## Test conformations without a converged reference"))
    assert rows["4"] == ["4", "1", "CC(=O)OC", "step limit"]
    assert "1 test conformation(s) have no converged reference" in md
    report.write_report(summary, steps, final, tmp_path, unconverged=lost.iloc[:0])
    assert "None: every reference optimisation converged." in (tmp_path / "summary.md").read_text()


def test_write_report_tiny_set(tmp_path):
    # one conformation, two steps, a non-neural model only and one NNP whose final label failed
    models = {"mmff": (0.8, None), "baseline": (0.6, 1e-3)}
    per_step = _synthetic(n_conf=1, models=models, steps=(0, 1))
    summary, steps, final = _report_inputs(per_step)
    paths = report.write_report(summary, steps, final, tmp_path, {})
    _check_files(paths, tmp_path)
    md = (tmp_path / "summary.md").read_text()
    assert {"mmff", "baseline"} <= set(_rows(_section(md, "## This study")))
    assert "(none given)" in md


def test_write_report_no_nnp_rows(tmp_path):
    per_step = _synthetic(n_conf=2, models={"oracle": (1.0, None)}, steps=(0, 3))
    summary, steps, final = _report_inputs(per_step)
    assert steps["e_err_median"].isna().all()
    _check_files(report.write_report(summary, steps, final, tmp_path), tmp_path)


def test_write_report_rejects_incomplete_tables(tmp_path):
    summary, steps, final = _report_inputs(_synthetic(n_conf=2))
    with pytest.raises(ReportError, match="summary lacks columns"):
        report.write_report(summary.drop(columns="pct_div"), steps, final, tmp_path)
    with pytest.raises(ReportError, match="per_conformation_final"):
        report.write_report(summary, steps, final.drop(columns="pct"), tmp_path)


def test_paper_table_matches_reference():
    t = paper.paper_table()
    golf10k = t.set_index("method").loc["f_GOLF-10k"]
    assert (golf10k.pct_mean, golf10k.pct_div, golf10k.e_res_mean, golf10k.pct_success) == (98.8, 3.0, 0.5, 77.3)
    assert len(paper.PAPER_TABLE2) == 11
    assert [r.method for r in paper.PAPER_TABLE2] == [r.method for r in paper.PAPER_README_TABLE2]


def test_unconverged_references_from_the_reference_optimisations():
    ref = data.Dataset({0: data.Molecule(0, "O", "water", split="test"), 1: data.Molecule(1, "C", "methane")})
    water = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    methane = np.array(
        [[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63], [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63]]
    )
    # traj 0 converged, 1 stopped at the step limit, 2 ended on an oracle failure (methane)
    for traj, mid, xyz, end in ((0, 0, water, "converged"), (1, 0, water, "step_limit"), (2, 1, methane, "failed")):
        species = [8, 1, 1] if mid == 0 else [6, 1, 1, 1, 1]
        for step, e in ((0, -74.90), (1, -74.95)):
            props = {"traj": traj, "step": step} | ({"end": end} if step == 1 else {})
            ref.conformers.append(
                data.Conformer(mid, traj, species, xyz * (1 + 0.01 * step), energy=e, forces=np.zeros(xyz.shape),
                               status="ok", props=props)
            )  # fmt: skip
    table = report.unconverged_references(evaluate.reference_test_set(ref))
    assert table[["molecule_id", "conformer_id", "smiles", "reason"]].values.tolist() == [
        [0, 1, "O", "stopped at the step limit"],
        [1, 2, "C", "oracle failure"],
    ]
    assert table["frames"].tolist() == [2, 2]
    ref.conformers = [c for c in ref.conformers if c.props["traj"] == 0]
    assert report.unconverged_references(evaluate.reference_test_set(ref)).empty


def _water_reference():
    ref = data.Dataset({0: data.Molecule(0, "O", "water", split="test")})
    water = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    for traj, end in enumerate(("converged", "converged", "step_limit")):
        for step, e in ((0, -74.90 - 0.001 * traj), (1, -74.95)):
            props = {"traj": traj, "step": step} | ({"end": end} if step == 1 else {"train_rmsd": 0.3 + 0.1 * traj})
            ref.conformers.append(
                data.Conformer(0, traj, [8, 1, 1], water * (1 + 0.01 * step + 0.02 * traj), energy=e, status="ok",
                               forces=np.zeros((3, 3)), props=props)
            )  # fmt: skip
    return ref


def test_build_report_reads_protocols_and_lists_unconverged(tmp_path):
    ref = _water_reference()
    data.write(tmp_path / "test_set.h5", evaluate.reference_test_set(ref))
    starts = evaluate.evaluable(evaluate.reference_test_set(ref))
    assert len(starts) == 2  # traj 2 did not converge: not a test conformation
    csvs, labels = [], []
    for model, protocol, e_final in (("baseline", "paper", -74.949), ("baseline", "capped-0.02", -74.80)):
        rows = []
        frames = data.Dataset(dict(ref.molecules), [], {"model": model, "protocol": protocol})
        for c in starts:
            e0, eopt = c.energy, c.props["e_opt"]
            for step, e in ((0, e0), (4, e_final)):
                rows.append({"model": model, "protocol": protocol, "molecule_id": 0, "conformer_id": c.conformer_id,
                             "step": step, "e_dft": e, "dft_status": "ok", "e_start": e0, "e_opt": eopt,
                             "e_nnp": e + 1e-3, "force_err": 0.01})  # fmt: skip
            frames.conformers.append(
                data.Conformer(0, c.conformer_id, [8, 1, 1], c.props["opt_coordinates"], energy=e_final,
                               forces=np.zeros((3, 3)), status="ok", props={"traj": c.props["traj"], "step": 4})
            )  # fmt: skip
        csvs.append(tmp_path / f"{model}-{protocol}.csv")
        pd.DataFrame(rows).to_csv(csvs[-1], index=False)
        labels.append(tmp_path / f"eval-{model}-{protocol}.h5")
        data.write(labels[-1], frames)
    out = tmp_path / "report"
    d0 = _labels(tmp_path / "d0.h5", [np.eye(3)])
    round_1 = _labels(tmp_path / "labels/round-1.h5", [np.eye(3), 2 * np.eye(3)], None, {"oracle_calls": 1})
    report.build_report(
        csvs, labels, [], [], tmp_path / "test_set.h5", {"timelimit": 4, "cov_delta": 0.5}, {}, out,
        d0=d0, budget_labels=[round_1],
    )  # fmt: skip
    summary = pd.read_csv(out / "summary.csv")
    assert summary[["protocol", "model"]].values.tolist() == [
        ["paper", "oracle"],
        ["paper", "baseline"],
        ["capped-0.02", "oracle"],
        ["capped-0.02", "baseline"],
    ]
    s = summary.set_index(["protocol", "model"])
    assert s.loc[("paper", "baseline"), "pct_div"] == 0.0 and s.loc[("capped-0.02", "baseline"), "pct_div"] == 100.0
    assert s.loc[("paper", "baseline"), "cov_pct"] == 100.0  # its final geometries are the minima
    assert s.loc[("capped-0.02", "oracle"), "pct_mean"] == pytest.approx(100.0)
    unconverged = pd.read_csv(out / "unconverged_references.csv")
    assert unconverged[["conformer_id", "reason"]].values.tolist() == [[2, "stopped at the step limit"]]
    md = (out / "summary.md").read_text()
    listed = _rows(_section(md, "## Test conformations without a converged reference"))
    assert listed["0"] == ["0", "2", "O", "water", "stopped at the step limit", "2"]
    assert "did not converge (2 of 3 converged, 66.7 %)" in md
    assert "excluded from every metric and comparison" in md
    test_set = _section(md, "## Test set")
    assert "2 test conformations of 1 molecules are evaluated (1 more have no converged reference" in test_set
    assert "min 0.30, median 0.35, max 0.40 Å" in test_set  # the unconverged one's 0.5 is not a test conformation
    budget = pd.read_csv(out / "budget.csv")
    assert budget[["model", "oracle_calls", "labelled", "new_conformations"]].values.tolist() == [["golf-1", 1, 2, 1]]
    assert _rows(_section(md, "## Budget per arm"))["–"][1:] == ["golf-1", "1", "–", "2", "1"]  # no seed, no hits
    assert md.index("## This study: the paper's protocol") < md.index("## Second row set: capped-0.02")


def _labels(path, coords, statuses=None, attrs=None, props=None):
    """A label file of water conformations with the given coordinates (one geometry per row)."""
    ds = data.Dataset({0: data.Molecule(0, "O")}, [], dict(attrs or {}))
    for i, xyz in enumerate(coords):
        status = (statuses or {}).get(i, "ok")
        ds.conformers.append(
            data.Conformer(0, i, [8, 1, 1], xyz, -75.0, np.zeros((3, 3)), status=status, props=(props or [{}] * 99)[i])
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    data.write(path, ds)
    return path


def test_arm_budgets_count_real_calls_and_new_conformations(tmp_path):
    def geom(i):
        return np.eye(3) * (1 + 0.01 * i)

    d0 = _labels(tmp_path / "d0.h5", [geom(0), geom(1)])
    files = []
    for seed in (0, 1):
        run = tmp_path / f"seed-{seed}"
        # round 1: a D0 conformation again (no new one), two new ones, one failed label
        files.append(_labels(run / "labels/round-1.h5", [geom(0), geom(2), geom(3), geom(4)], {3: "scf_not_converged"},
                             {"oracle_calls": 3 - seed, "cache_hits": 1 + seed}))  # fmt: skip
        # round 2: round 1's geom(2) again and one new one, twice
        files.append(_labels(run / "labels/round-2.h5", [geom(2), geom(5), geom(5)], None,
                             {"oracle_calls": 1, "cache_hits": 2}))  # fmt: skip
        # the random control: its own arm, so geom(2) is new there
        files.append(
            _labels(run / "labels/random-1.h5", [geom(2), geom(1)], None, {"oracle_calls": 1, "cache_hits": 1})
        )
        # the trajectories: frame 0 is a D0 start, frames 1-2 new
        steps = [{"traj": 0, "step": k} for k in range(3)]
        files.append(_labels(run / "optimisation/traj.h5", [geom(0), geom(6), geom(7)], None, {"oracle_calls": 2},
                             props=steps))  # fmt: skip
    budget = arm_budgets(files, ["traj-2", "trajeq-2"], d0)
    assert list(budget.columns) == [
        "seed", "model", "arm", "rounds", "oracle_calls", "cache_hits", "labelled", "new_conformations"
    ]  # fmt: skip
    b = budget.set_index(["seed", "model"])
    assert b.loc[(0.0, "golf-1"), ["oracle_calls", "cache_hits", "labelled", "new_conformations"]].tolist() == [
        3, 1, 3, 2
    ]  # fmt: skip
    assert b.loc[(1.0, "golf-1"), "oracle_calls"] == 2  # per seed, as its files say
    assert b.loc[(0.0, "golf-2"), ["oracle_calls", "cache_hits", "labelled", "new_conformations"]].tolist() == [
        4, 3, 6, 3
    ]  # fmt: skip
    assert b.loc[(0.0, "random-1"), ["labelled", "new_conformations"]].tolist() == [2, 1]
    for model in ("traj-2", "trajeq-2"):  # one set of trajectories, two training schemes
        assert b.loc[(0.0, model), ["oracle_calls", "labelled", "new_conformations"]].tolist() == [2, 2, 2]
        assert b.loc[(0.0, model), "arm"] == model.split("-")[0]
    assert budget["model"].tolist()[:5] == ["golf-1", "golf-2", "traj-2", "trajeq-2", "random-1"]  # seed 0 first
    without_d0 = arm_budgets(files, ["traj-2"])
    assert without_d0["new_conformations"].isna().all()  # not known without D0
    lines = "\n".join(report._budget_lines(budget))
    assert "| 1      | golf-2" in lines and "golf-1" not in lines  # the last round per arm; budget.csv has all


def test_extra_oracle_calls_count_golf_and_random_rounds_apart(tmp_path):
    """golf-r and random-r each count the labels of their own rounds 1..r (failed labels excluded)."""

    def labels(path, statuses):
        ds = data.Dataset({0: data.Molecule(0, "O")}, [], {})
        for i, status in enumerate(statuses):
            ds.conformers.append(data.Conformer(0, i, [8, 1, 1], np.eye(3), -75.0, np.zeros((3, 3)), status=status))
        data.write(path, ds)
        return path

    seed_0, seed_1 = tmp_path / "seed-0/labels", tmp_path / "seed-1/labels"
    seed_0.mkdir(parents=True), seed_1.mkdir(parents=True)
    # in any order, and with another seed's files beside them: the rounds are read from the names
    golf = [labels(seed_0 / "round-2.h5", ["ok", "scf_not_converged"]), labels(seed_0 / "round-1.h5", ["ok", "ok"])]
    golf.append(labels(seed_1 / "round-1.h5", ["ok"]))
    rand = [labels(seed_0 / "random-1.h5", ["ok", "scf_not_converged"]), labels(seed_0 / "random-2.h5", ["ok", "ok"])]
    calls = extra_oracle_calls(golf, [], [], rand)
    assert (calls["golf-1"], calls["golf-2"], calls["random-1"], calls["random-2"]) == (2, 3, 1, 3)
    assert "random-1" not in extra_oracle_calls(golf, [], [])
    with pytest.raises(BudgetError, match="not a round's label file"):
        extra_oracle_calls([labels(tmp_path / "g1.h5", ["ok"])], [], [])


def test_validation_force_error_comes_from_the_step_training_returned(tmp_path):
    from golf.study.report import with_validation_error

    history = pd.DataFrame({
        "step": [100, 200, 300], "val_loss": [0.3, 0.1, 0.2], "val_force_mae_kcalmol_per_A": [9.0, 2.5, 4.0],
    })  # fmt: skip
    for seed in (0, 1):
        (tmp_path / f"seed-{seed}/models").mkdir(parents=True)
        history.assign(val_force_mae_kcalmol_per_A=history["val_force_mae_kcalmol_per_A"] + seed).to_csv(
            tmp_path / f"seed-{seed}/models/baseline.metrics.csv", index=False
        )
    summary = pd.DataFrame({"model": ["baseline", "baseline", "mmff"], "seed": [0, 1, np.nan]})
    out = with_validation_error(summary, sorted(tmp_path.rglob("*.metrics.csv")))
    assert out["val_force_mae"].iloc[:2].tolist() == [2.5, 3.5]  # lowest validation loss, per seed
    assert np.isnan(out["val_force_mae"].iloc[2])  # MMFF has no training
