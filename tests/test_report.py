"""golf.report: summary.md and every plot from a small synthetic study."""

import numpy as np
import pandas as pd
import pytest

from golf import metrics, report
from golf.report import ReportError

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
    rng = np.random.default_rng(seed)
    rows = []
    e_start = -300.0 - rng.uniform(0, 1, n_conf)
    drop = rng.uniform(0.005, 0.03, n_conf)  # Hartree
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
    assert "summary.md" in names
    for plot in report.PLOTS:
        for ext in ("png", "svg"):
            f = outdir / f"{plot}.{ext}"
            assert f in paths
            assert f.stat().st_size > 1000, f
    assert (outdir / "pct_vs_step.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (outdir / "pct_vs_step.svg").read_bytes()[:2000]


def test_write_report_full(tmp_path):
    summary, steps, final = _report_inputs(_synthetic())
    settings = {"rounds": 2, "oracle": {"method": "hf", "basis": "sto-3g"}, "models": ["baseline", "golf-2"]}
    paths = report.write_report(summary, steps, final, tmp_path / "report", settings)
    outdir = tmp_path / "report"
    _check_files(paths, outdir)
    md = (outdir / "summary.md").read_text()
    for model in MODELS:
        assert f"| {model} |" in md
    b = summary.set_index("model").loc["baseline"]
    assert f"| baseline | {b.pct_mean:.1f} ± {b.pct_std:.1f} | {b.pct_div:.1f} |" in md
    assert "| 6 (1) |" in md  # baseline: 6 conformations, 1 failed label
    for row in report.PAPER_TABLE2:
        assert f"| {row.method} |" in md
    assert "| 77.3 |" in md  # GOLF-10k's pct_success in the paper
    assert "`hf`" in md and "oracle.method" in md and '["baseline", "golf-2"]' in md
    assert "## What this shows" in md
    assert "golf-2" in md.split("## What this shows")[1]  # the verdict names the last round
    assert "traj-60" in md.split("## What this shows")[1]  # and the equal-budget comparison
    for plot in report.PLOTS:
        assert f"({plot}.png)" in md


def test_write_report_tiny_set(tmp_path):
    # one conformation, two steps, a non-neural model only and one NNP whose final label failed
    models = {"mmff": (0.8, None), "baseline": (0.6, 1e-3)}
    per_step = _synthetic(n_conf=1, models=models, steps=(0, 1))
    summary, steps, final = _report_inputs(per_step)
    paths = report.write_report(summary, steps, final, tmp_path, {})
    _check_files(paths, tmp_path)
    md = (tmp_path / "summary.md").read_text()
    assert "| mmff |" in md and "| baseline |" in md
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
    t = report.paper_table()
    golf10k = t.set_index("method").loc["f_GOLF-10k"]
    assert (golf10k.pct_mean, golf10k.pct_div, golf10k.e_res_mean, golf10k.pct_success) == (98.8, 3.0, 0.5, 77.3)
    assert len(report.PAPER_TABLE2) == 11
    assert [r.method for r in report.PAPER_TABLE2] == [r.method for r in report.PAPER_README_TABLE2]
