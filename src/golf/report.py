"""The study report: summary.md (the paper's Table 2 for this study) and plots (PNG and SVG).

Inputs are the tables of ``golf.metrics``: ``summarise`` (one row per model), ``step_metrics``
(one row per model and step) and ``final_conformations`` (one row per model and conformation at
the final step). Plots use matplotlib's object API with the Agg canvas (no pyplot, no global
backend switch), so the module is safe in headless workers and in tests.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from golf.metrics import COV_DELTA, SUCCESS_THRESHOLD_KCAL, model_sort_key

__all__ = ["PaperRow", "PAPER_TABLE2", "PAPER_README_TABLE2", "PLOTS", "ReportError", "paper_table", "write_report"]


class ReportError(Exception):
    """Report input that lacks what a table or plot needs."""


class PaperRow(NamedTuple):
    method: str
    pct_mean: float  # %
    pct_std: float  # %
    pct_div: float  # %
    e_res_mean: float  # kcal/mol
    pct_success: float  # %
    cov_pct: float  # %, delta = 0.5 A
    mat_angstrom: float
    extra_oracle_calls: float | None  # DFT calls beyond D0; None where the paper does not say


# Final paper, Table 2 (nablaDFT D_test, 19 477 conformations, T = 100) [reference/golf-paper.md §7].
# Extra oracle calls from §2 and §8; f_rdkit's and the generative models' DFT use is not stated.
PAPER_TABLE2: tuple[PaperRow, ...] = (
    PaperRow("RDKit (MMFF)", 85.5, 8.8, 0.6, 5.5, 4.1, 54.9, 0.61, 0),
    PaperRow("TD", 23.8, 19.8, 61.4, 33.8, 0.0, 10.0, 1.42, None),
    PaperRow("ConfOpt", 39.1, 22.8, 71.1, 27.9, 0.2, 25.0, 1.13, None),
    PaperRow("Uni-Mol+", 54.6, 20.4, 8.1, 18.6, 0.2, 56.3, 0.53, None),
    PaperRow("f_baseline", 77.9, 21.3, 7.5, 8.6, 8.2, 58.8, 0.55, 0),
    PaperRow("f_rdkit", 93.0, 11.6, 4.4, 2.8, 35.4, 63.8, 0.51, None),
    PaperRow("f_traj-10k", 95.1, 7.6, 4.5, 2.0, 37.0, 63.3, 0.52, 1e4),
    PaperRow("f_traj-100k", 96.2, 8.6, 2.8, 1.5, 52.7, 65.6, 0.49, 1e5),
    PaperRow("f_traj-500k", 98.8, 7.6, 2.0, 0.5, 73.4, 67.0, 0.48, 5e5),
    PaperRow("f_GOLF-1k", 97.3, 5.1, 3.9, 1.1, 62.9, 71.0, 0.42, 1e3),
    PaperRow("f_GOLF-10k", 98.8, 5.0, 3.0, 0.5, 77.3, 71.2, 0.42, 1e4),
)

# README table (Nov 2023, probably arXiv v1): an acceptable band around Table 2 (§7 ⚠).
PAPER_README_TABLE2: tuple[PaperRow, ...] = (
    PaperRow("RDKit (MMFF)", 84.92, 10.6, 0.05, 5.5, 4.1, 62.24, 0.509, 0),
    PaperRow("TD", 25.63, 21.4, 46.9, 33.8, 0.0, 11.3, 1.333, None),
    PaperRow("ConfOpt", 36.48, 23.0, 84.5, 27.9, 0.2, 19.88, 1.05, None),
    PaperRow("Uni-Mol+", 62.20, 17.2, 2.8, 18.6, 0.2, 68.79, 0.407, None),
    PaperRow("f_baseline", 76.8, 22.4, 7.5, 8.6, 8.2, 65.22, 0.482, 0),
    PaperRow("f_rdkit", 93.09, 11.9, 3.8, 2.8, 35.4, 71.6, 0.426, None),
    PaperRow("f_traj-10k", 95.3, 7.3, 4.5, 2.0, 37.0, 70.55, 0.440, 1e4),
    PaperRow("f_traj-100k", 96.3, 9.8, 2.9, 1.5, 52.7, 71.43, 0.432, 1e5),
    PaperRow("f_traj-500k", 98.4, 9.2, 1.8, 0.5, 73.4, 72.15, 0.442, 5e5),
    PaperRow("f_GOLF-1k", 98.5, 5.3, 3.6, 1.1, 62.9, 76.54, 0.349, 1e3),
    PaperRow("f_GOLF-10k", 99.4, 5.2, 2.4, 0.5, 77.3, 76.84, 0.355, 1e4),
)

PLOTS = ("pct_vs_step", "eres_vs_step", "success_vs_oracle_calls", "nnp_error_vs_step", "pct_distribution")
_SUMMARY_NEEDS = ("model", "pct_mean", "pct_std", "pct_div", "e_res_mean", "pct_success")
_STEPS_NEEDS = ("model", "step", "pct_mean", "pct_div", "e_res_mean", "pct_success")


def paper_table(rows: Sequence[PaperRow] = PAPER_TABLE2) -> pd.DataFrame:
    """The paper's rows as a DataFrame with the column names of ``golf.metrics.summarise``."""
    return pd.DataFrame([r._asdict() for r in rows])


# ----------------------------------------------------------------------------------------------
# Formatting helpers
# ----------------------------------------------------------------------------------------------


def _f(x, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)) or pd.isna(x):
        return "–"
    return f"{float(x):.{digits}f}"


def _calls(x) -> str:
    if x is None or pd.isna(x):
        return "–"
    return f"{float(x):,.0f}"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return lines


def _golf_round(model: str) -> int | None:
    m = re.fullmatch(r"golf-(\d+)", model)
    return int(m.group(1)) if m else None


def _flatten(settings: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out += _flatten(value, name + ".")
        else:
            out.append((name, value if isinstance(value, str) else json.dumps(value, default=str)))
    return out


# ----------------------------------------------------------------------------------------------
# "What this shows": sentences generated from the numbers
# ----------------------------------------------------------------------------------------------


def _se_success(row) -> float:
    """Binomial standard error of pct_success (percentage points) over its denominator."""
    n = row.get("n_valid", row.get("n", np.nan))
    n_kept = n * (1 - row["pct_div"] / 100.0) if pd.notna(row.get("pct_div")) else n
    p = row["pct_success"] / 100.0
    if not (pd.notna(n_kept) and n_kept > 0 and pd.notna(p)):
        return np.nan
    # Wilson-like floor: with p = 0 or 1 the plain formula says 0, which overstates certainty.
    p = min(max(p, 0.5 / n_kept), 1 - 0.5 / n_kept)
    return 100.0 * math.sqrt(p * (1 - p) / n_kept)


def _se_rate(pct: float, n: float) -> float:
    """Binomial standard error (percentage points) of a rate in % over n, with a floor at 0 or 100 %."""
    if not (pd.notna(pct) and pd.notna(n) and n > 0):
        return np.nan
    p = min(max(pct / 100.0, 0.5 / n), 1 - 0.5 / n)
    return 100.0 * math.sqrt(p * (1 - p) / n)


def _compare(a, b, label_a: str, label_b: str) -> tuple[str, int]:
    """Compare two summary rows; return a clause and -1/0/1 (a worse/tie/better).

    First pct_success (the paper's, over non-diverged conformations; where a model diverged on
    every conformation, the share of all labelled ones); when that does not separate them,
    pct_div (lower is better). A difference counts only beyond two unpaired standard errors.
    """
    key = "pct_success"
    if (pd.isna(a["pct_success"]) or pd.isna(b["pct_success"])) and "pct_success_of_valid" in a:
        key = "pct_success_of_valid"
    sa, sb = a[key], b[key]
    parts, sign = [], 0
    if pd.notna(sa) and pd.notna(sb):
        se = _se_success if key == "pct_success" else (lambda r: _se_rate(r[key], r.get("n_valid", r.get("n"))))
        noise = 2.0 * math.sqrt(np.nansum([se(a) ** 2, se(b) ** 2]))
        label = "pct_success" if key == "pct_success" else "success over all labelled"
        parts.append(f"{label} {_f(sa)} % vs {_f(sb)} % (±{_f(noise)})")
        if abs(sa - sb) > noise:
            sign = 1 if sa > sb else -1
    da, db = a.get("pct_div"), b.get("pct_div")
    if pd.notna(da) and pd.notna(db):
        noise = 2.0 * math.sqrt(np.nansum([_se_rate(da, a.get("n_valid")) ** 2, _se_rate(db, b.get("n_valid")) ** 2]))
        parts.append(f"pct_div {_f(da)} % vs {_f(db)} % (±{_f(noise)})")
        if sign == 0 and abs(da - db) > noise:
            sign = 1 if da < db else -1
    parts.append(f"mean E_res {_f(a['e_res_mean'], 2)} vs {_f(b['e_res_mean'], 2)} kcal/mol")
    verdict = {1: f"{label_a} is better", -1: f"{label_b} is better", 0: "no clear difference"}[sign]
    return f"{', '.join(parts)}: {verdict}", sign


def _findings(summary: pd.DataFrame) -> list[str]:
    s = summary.set_index("model", drop=False)
    models = list(s.index)
    out: list[str] = []
    n = int(s["n"].max()) if "n" in s and s["n"].notna().any() else None
    final = sorted({int(x) for x in s["final_step"].dropna()}) if "final_step" in s else []
    if n is not None:
        failed = int(s["n_failed"].sum()) if "n_failed" in s else 0
        out.append(
            f"Each model was evaluated on up to {n} test conformations"
            + (f" at step {', '.join(map(str, final))}" if final else "")
            + f"; {failed} final DFT label{'s' if failed != 1 else ''} failed in total (counted in n_failed, "
            "left out of the energy metrics)."
            + (
                " With so few conformations a single conformation moves pct_success by several points."
                if n < 50
                else ""
            )
        )
    golf = sorted((m for m in models if _golf_round(m) is not None), key=_golf_round)
    if "baseline" in s.index and golf:
        last = golf[-1]
        clause, sign = _compare(s.loc[last], s.loc["baseline"], last, "baseline")
        calls = _calls(s.loc[last].get("extra_oracle_calls"))
        head = {1: "GOLF improved on the baseline", 0: "GOLF did not clearly improve on the baseline", -1: ""}[sign]
        head = head or "GOLF did worse than the baseline"
        out.append(f"{head}: {last} ({calls} extra oracle calls) vs baseline, {clause}.")
    trajs = sorted((m for m in models if re.fullmatch(r"traj-\d+", m)), key=model_sort_key)
    for t in trajs:
        if not golf:
            break
        t_calls = s.loc[t].get("extra_oracle_calls")
        with_calls = [g for g in golf if pd.notna(s.loc[g].get("extra_oracle_calls"))]
        if pd.isna(t_calls) or not with_calls:
            g = golf[-1]
            budget = "(oracle-call counts not given)"
        else:
            cheaper = [g for g in with_calls if s.loc[g]["extra_oracle_calls"] <= t_calls]
            g = cheaper[-1] if cheaper else min(with_calls, key=lambda m: s.loc[m]["extra_oracle_calls"])
            budget = f"({_calls(s.loc[g]['extra_oracle_calls'])} vs {_calls(t_calls)} extra oracle calls)"
        clause, sign = _compare(s.loc[g], s.loc[t], g, t)
        head = {1: "GOLF beat", 0: "GOLF is not clearly different from", -1: "GOLF lost to"}[sign]
        out.append(f"{head} the trajectory baseline at equal or smaller budget: {g} vs {t} {budget}, {clause}.")
    match = [m for m in models if m != "oracle" and pd.notna(s.loc[m]["e_res_mean"]) and s.loc[m]["e_res_mean"] < 1]
    out.append(
        "Models that match the oracle (mean E_res < 1 kcal/mol, the paper's criterion): "
        + (", ".join(match) if match else "none")
        + "."
    )
    if "mmff" in s.index and "baseline" in s.index:
        clause, _ = _compare(s.loc["baseline"], s.loc["mmff"], "baseline", "mmff")
        out.append(f"NNP baseline vs RDKit MMFF optimisation: {clause}.")
    div = s["pct_div"].dropna()
    if len(div) and div.max() > 0:
        worst = div.idxmax()
        out.append(f"The highest divergence rate is {worst}'s ({_f(div.max())} % of labelled conformations).")
    if "oracle" in s.index and pd.notna(s.loc["oracle"]["pct_mean"]) and abs(s.loc["oracle"]["pct_mean"] - 100) > 1:
        out.append(
            f"Warning: the oracle's own mean pct is {_f(s.loc['oracle']['pct_mean'])} %, not 100 %: "
            "the reference energies and the evaluated geometries disagree."
        )
    out.append(
        "The paper's numbers come from 19 477 test conformations and 10^3-5x10^5 extra DFT calls at "
        "ωB97X-D/def2-SVP; compare this study's ordering of the models with the paper's, not the values."
    )
    return out


# ----------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------


def _styles(models: Sequence[str]) -> dict[str, dict]:
    from matplotlib import colormaps

    golf = sorted((m for m in models if _golf_round(m) is not None), key=_golf_round)
    trajs = sorted((m for m in models if re.fullmatch(r"traj-\d+", m)), key=model_sort_key)
    others = [m for m in models if m not in golf and m not in trajs]
    styles: dict[str, dict] = {}
    for i, m in enumerate(golf):
        styles[m] = {"color": colormaps["Blues"](0.45 + 0.55 * (i + 1) / len(golf)), "marker": "o", "ls": "-"}
    for i, m in enumerate(trajs):
        styles[m] = {"color": colormaps["Oranges"](0.45 + 0.55 * (i + 1) / len(trajs)), "marker": "s", "ls": "--"}
    fixed = {
        "baseline": {"color": "black", "marker": "D", "ls": "-"},
        "mmff": {"color": "tab:green", "marker": "^", "ls": ":"},
        "oracle": {"color": "grey", "marker": "*", "ls": "-."},
    }
    cycle = colormaps["tab10"]
    for i, m in enumerate(others):
        styles[m] = fixed.get(m, {"color": cycle(i % 10), "marker": "x", "ls": "-"})
    return styles


def _save(fig: Figure, outdir: Path, name: str) -> list[Path]:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    paths = []
    for ext in ("png", "svg"):
        path = outdir / f"{name}.{ext}"
        fig.savefig(path, dpi=150 if ext == "png" else None)
        paths.append(path)
    return paths


def _plain_ticks(axis, ticks=None) -> None:
    """Log/symlog axes: plain numbers, ticks at the evaluated steps when there are few of them."""
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    if ticks is not None and 0 < len(ticks) <= 12:
        axis.set_major_locator(FixedLocator(sorted(ticks)))
    axis.set_major_formatter(ScalarFormatter())
    axis.set_minor_formatter(NullFormatter())


def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what}", ha="center", va="center", transform=ax.transAxes, color="grey")


def _ordered(models) -> list[str]:
    return sorted({str(m) for m in models}, key=model_sort_key)


def _step_lines(ax, steps: pd.DataFrame, column: str, styles: dict, *, logx: bool = False) -> bool:
    drawn = False
    for m in _ordered(steps["model"]):
        d = steps[(steps["model"] == m) & steps[column].notna()].sort_values("step")
        if logx:
            d = d[d["step"] > 0]
        if d.empty:
            continue
        st = styles[m]
        ax.plot(d["step"], d[column], color=st["color"], ls=st["ls"], marker=st["marker"], ms=4, label=m)
        drawn = True
    return drawn


def _plot_pct(steps: pd.DataFrame, styles, outdir: Path) -> list[Path]:
    fig = Figure(figsize=(9, 4))
    ax1, ax2 = fig.subplots(1, 2)
    for ax, col, label in ((ax1, "pct_mean", "mean pct (%)"), (ax2, "pct_div", "pct_div (%)")):
        if _step_lines(ax, steps, col, styles):
            ax.set_xscale("symlog", linthresh=1)
            _plain_ticks(ax.xaxis, steps["step"].unique())
            ax.legend(fontsize="small")
        else:
            _no_data(ax, col)
        ax.set_xlabel("optimisation step t")
        ax.set_ylabel(label)
    ax1.axhline(100, color="grey", lw=0.8, ls=":")
    ax1.set_title("Energy drop reached (non-diverged)")
    ax2.set_title("Diverged: E(s_t) > E(s_0)")
    return _save(fig, outdir, "pct_vs_step")


def _plot_eres(steps: pd.DataFrame, styles, outdir: Path) -> list[Path]:
    fig = Figure(figsize=(9, 4))
    ax1, ax2 = fig.subplots(1, 2)
    for ax, col, label in ((ax1, "e_res_mean", "mean E_res (kcal/mol)"), (ax2, "pct_success", "pct_success (%)")):
        if _step_lines(ax, steps, col, styles):
            ax.set_xscale("symlog", linthresh=1)
            _plain_ticks(ax.xaxis, steps["step"].unique())
            ax.legend(fontsize="small")
        else:
            _no_data(ax, col)
        ax.set_xlabel("optimisation step t")
        ax.set_ylabel(label)
    ax1.set_yscale("symlog", linthresh=1)
    _plain_ticks(ax1.yaxis)
    ax1.axhline(SUCCESS_THRESHOLD_KCAL, color="grey", lw=0.8, ls=":")
    ax1.set_title("Residual energy (non-diverged)")
    ax2.set_title(f"E_res < {SUCCESS_THRESHOLD_KCAL:g} kcal/mol")
    return _save(fig, outdir, "eres_vs_step")


def _plot_success_calls(summary: pd.DataFrame, styles, outdir: Path) -> list[Path]:
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    s = summary.set_index("model", drop=False)
    calls = s["extra_oracle_calls"] if "extra_oracle_calls" in s else pd.Series(np.nan, index=s.index)
    drawn = False
    # GOLF learning curve: baseline (round 0, no extra calls) then every round in order.
    curve = (["baseline"] if "baseline" in s.index else []) + sorted(
        (m for m in s.index if _golf_round(m) is not None), key=_golf_round
    )
    x = [0.0 if m == "baseline" and pd.isna(calls[m]) else calls[m] for m in curve]
    pts = [(xi, s.loc[m, "pct_success"], m) for xi, m in zip(x, curve, strict=True)]
    pts = [p for p in pts if pd.notna(p[0]) and pd.notna(p[1])]
    se = {m: _se_success(s.loc[m]) for m in s.index}  # error bars: one binomial standard error
    if len(pts) > 1 or (pts and pts[0][2] != "baseline"):
        ax.errorbar(
            [p[0] for p in pts],
            [p[1] for p in pts],
            yerr=[se[p[2]] for p in pts],
            color="tab:blue",
            marker="o",
            capsize=3,
            label="GOLF rounds",
        )
        drawn = True
    for xi, yi, m in pts:
        ax.annotate(m, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize="x-small")
    if "baseline" in s.index and pd.notna(s.loc["baseline", "pct_success"]):
        ax.plot([0.0], [s.loc["baseline", "pct_success"]], "D", color="black", label="baseline")
        drawn = True
    for m in s.index:
        if m in curve or m == "oracle" or pd.isna(s.loc[m, "pct_success"]):
            continue
        xm = calls[m] if pd.notna(calls[m]) else (0.0 if m == "mmff" else np.nan)
        if pd.isna(xm):
            continue
        st = styles[m]
        ax.errorbar(
            [xm], [s.loc[m, "pct_success"]], yerr=[se[m]], marker=st["marker"], color=st["color"], ms=8, ls="none",
            capsize=3, label=m,
        )  # fmt: skip
        ax.annotate(m, (xm, s.loc[m, "pct_success"]), textcoords="offset points", xytext=(4, -10), fontsize="x-small")
        drawn = True
    if drawn:
        ax.legend(fontsize="small")
    else:
        _no_data(ax, "pct_success / oracle-call data")
    ax.set_xlabel("extra oracle (DFT) calls beyond D0")
    ax.set_ylabel(f"pct_success (%): E_res < {SUCCESS_THRESHOLD_KCAL:g} kcal/mol")
    ax.set_title("Success vs oracle budget (bars: ±1 standard error)")
    return _save(fig, outdir, "success_vs_oracle_calls")


def _plot_nnp_error(steps: pd.DataFrame, styles, outdir: Path) -> list[Path]:
    fig = Figure(figsize=(9, 4))
    ax1, ax2 = fig.subplots(1, 2)
    panels = (
        (ax1, "e_err", "|E_NNP - E_DFT| (kcal/mol)", "Energy error"),
        (ax2, "f_err", "force error (Ha/Å)", "Force error"),
    )
    for ax, prefix, ylabel, title in panels:
        drawn = False
        needed = [f"{prefix}_median", f"{prefix}_p10", f"{prefix}_p90"]
        if all(c in steps for c in needed):
            for m in _ordered(steps["model"]):
                d = steps[(steps["model"] == m) & (steps["step"] > 0)].sort_values("step")
                d = d[d[f"{prefix}_median"] > 0]  # log axes: step 0 and exact zeros cannot be drawn
                if d.empty:
                    continue  # non-neural models (mmff, oracle) have no NNP error
                st = styles[m]
                ax.plot(d["step"], d[f"{prefix}_median"], color=st["color"], ls=st["ls"], marker=st["marker"], ms=4)
                lo = d[f"{prefix}_p10"].clip(lower=d[f"{prefix}_median"].min() * 1e-3)
                ax.fill_between(d["step"], lo, d[f"{prefix}_p90"], color=st["color"], alpha=0.15, lw=0)
                ax.lines[-1].set_label(m)
                drawn = True
        if drawn:
            ax.set_xscale("log")
            ax.set_yscale("log")
            _plain_ticks(ax.xaxis, [t for t in steps["step"].unique() if t > 0])
            ax.legend(fontsize="small")
        else:
            _no_data(ax, "NNP error data")
        ax.set_xlabel("optimisation step t")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title}: median, 10-90 % band")
    return _save(fig, outdir, "nnp_error_vs_step")


def _plot_distribution(final: pd.DataFrame, styles, outdir: Path) -> list[Path]:
    fig = Figure(figsize=(max(5.0, 1.1 * final["model"].nunique() + 2), 4.5))
    ax = fig.subplots()
    models = _ordered(final["model"]) if len(final) else []
    data, labels = [], []
    for m in models:
        d = final[final["model"] == m]
        valid = d["valid"].astype(bool) if "valid" in d else d["pct"].notna()
        div = d["diverged"].astype(bool) if "diverged" in d else pd.Series(False, index=d.index)
        vals = d.loc[valid & ~div, "pct"].dropna().to_numpy(dtype=np.float64)
        data.append(vals)
        labels.append(f"{m}\nn={len(vals)}, div={int((valid & div).sum())}, fail={int((~valid).sum())}")
    pos = np.arange(1, len(models) + 1)
    kde_ok = [i for i, v in enumerate(data) if len(v) >= 2 and np.ptp(v) > 0]  # a KDE needs spread
    if kde_ok:
        parts = ax.violinplot([data[i] for i in kde_ok], positions=pos[kde_ok], showmedians=True, widths=0.8)
        for key in ("cmedians", "cmins", "cmaxes", "cbars"):
            parts[key].set_color("dimgrey")
        for body, i in zip(parts["bodies"], kde_ok, strict=True):
            body.set_facecolor(styles[models[i]]["color"])
            body.set_alpha(0.5)
    rng = np.random.default_rng(0)
    for i, v in enumerate(data):
        if len(v):
            ax.scatter(pos[i] + rng.uniform(-0.08, 0.08, len(v)), v, s=6, color=styles[models[i]]["color"], zorder=3)
    if not any(len(v) for v in data):
        _no_data(ax, "final pct values")
    ax.set_xticks(pos, labels, fontsize="x-small")
    ax.axhline(100, color="grey", lw=0.8, ls=":")
    ax.set_ylabel("pct at the final step (%)")
    ax.set_title("Distribution of final pct (non-diverged conformations)")
    return _save(fig, outdir, "pct_distribution")


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------


def _require(df: pd.DataFrame, needs: Sequence[str], what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise ReportError(f"{what} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in needs if c not in df.columns]
    if missing:
        raise ReportError(f"{what} lacks columns {missing}")


def _summary_lines(summary: pd.DataFrame, settings: Mapping[str, Any]) -> list[str]:
    header = [
        "model",
        "mean pct_T (%) ↑",
        "pct_div (%) ↓",
        "mean E_res_T (kcal/mol) ↓",
        "pct_success (%) ↑",
        "COV (%) ↑",
        "MAT (Å) ↓",
        "extra oracle calls",
        "n (failed)",
    ]
    rows = []
    for _, r in summary.iterrows():
        n = f"{int(r['n'])} ({int(r.get('n_failed', 0))})" if "n" in r and pd.notna(r["n"]) else "–"
        rows.append(
            [
                r["model"],
                f"{_f(r['pct_mean'])} ± {_f(r['pct_std'])}",
                _f(r["pct_div"]),
                _f(r["e_res_mean"], 2),
                _f(r["pct_success"]),
                _f(r.get("cov_pct")),
                _f(r.get("mat_angstrom"), 2),
                _calls(r.get("extra_oracle_calls")),
                n,
            ]
        )
    paper_rows = [
        [
            p.method,
            f"{_f(p.pct_mean)} ± {_f(p.pct_std)}",
            _f(p.pct_div),
            _f(p.e_res_mean),
            _f(p.pct_success),
            _f(p.cov_pct),
            _f(p.mat_angstrom, 2),
            _calls(p.extra_oracle_calls),
        ]
        for p in PAPER_TABLE2
    ]
    readme = {p.method: p for p in PAPER_README_TABLE2}
    band_rows = [
        [
            p.method,
            f"{p.pct_mean:g} / {readme[p.method].pct_mean:g}",
            f"{p.pct_div:g} / {readme[p.method].pct_div:g}",
            f"{p.cov_pct:g} / {readme[p.method].cov_pct:g}",
            f"{p.mat_angstrom:g} / {readme[p.method].mat_angstrom:g}",
        ]
        for p in PAPER_TABLE2
        if p.method in readme
    ]
    lines = ["# GOLF study report", ""]
    lines += ["## This study", ""]
    lines += _md_table(header, rows)
    lines += [
        "",
        "Definitions (reference/golf-paper.md §6.2): pct = 100·(E_0 − E_T)/(E_0 − E_opt); diverged = "
        "E_T > E_0, pct_div over the conformations with a DFT label; mean pct, std, mean E_res and "
        f"pct_success (E_res < {SUCCESS_THRESHOLD_KCAL:g} kcal/mol) over the labelled, non-diverged ones. "
        f"COV/MAT: RDKit GetBestRMS over all atoms (symmetry-aware) within a molecule, δ = {COV_DELTA:g} Å. "
        "n (failed): conformations evaluated (DFT labels that failed at the final step, excluded from "
        "the energy metrics). Oracle: the DFT optimisation itself, pct = 100 by definition.",
        "",
        "## The paper's Table 2 (for reference)",
        "",
        "Tsypin et al., ICLR 2024, Table 2: nablaDFT D_test, 19 477 conformations, T = 100, "
        "ωB97X-D/def2-SVP, PaiNN NNPs.",
        "",
    ]
    lines += _md_table(header[:-1], paper_rows)
    lines += [
        "",
        "The authors' README (Nov 2023) gives different pct_T, pct_div, COV and MAT; the band is final paper / README:",
        "",
    ]
    lines += _md_table(["method", "pct_T", "pct_div", "COV", "MAT"], band_rows)
    lines += ["", "## Settings", ""]
    flat = _flatten(settings)
    lines += _md_table(["setting", "value"], [[k, f"`{v}`"] for k, v in flat]) if flat else ["(none given)"]
    lines += ["", "## What this shows", ""]
    lines += [f"- {s}" for s in _findings(summary)]
    lines += ["", "## Plots", ""]
    captions = {
        "pct_vs_step": "Mean pct and pct_div along the optimisation",
        "eres_vs_step": "Mean E_res and pct_success along the optimisation",
        "success_vs_oracle_calls": "pct_success against extra oracle calls: GOLF rounds as a learning curve",
        "nnp_error_vs_step": "NNP energy and force error along its own trajectory (paper Fig. 1)",
        "pct_distribution": "Final pct per model (paper Fig. 2)",
    }
    for name in PLOTS:
        lines += [f"![{captions[name]}]({name}.png)", "", f"*{captions[name]}* ([SVG]({name}.svg))", ""]
    return lines


def write_report(
    summary: pd.DataFrame,
    steps: pd.DataFrame,
    per_conformation_final: pd.DataFrame,
    outdir: str | Path,
    settings: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write ``outdir/summary.md`` and the plots (``PLOTS``, each as PNG and SVG); return the paths.

    ``summary``: ``golf.metrics.summarise`` output (needs model, pct_mean, pct_std, pct_div,
    e_res_mean, pct_success; uses cov_pct, mat_angstrom, extra_oracle_calls, n, n_failed,
    final_step when present). ``steps``: ``golf.metrics.step_metrics`` output.
    ``per_conformation_final``: ``golf.metrics.final_conformations`` output (needs model and pct;
    uses valid and diverged). ``settings``: the study settings, nested dicts allowed, listed as
    they are. Models without NNP error (mmff, oracle) and tiny sets are drawn as far as they go;
    a plot without any data says so instead of failing.
    """
    _require(summary, _SUMMARY_NEEDS, "summary")
    _require(steps, _STEPS_NEEDS, "steps")
    _require(per_conformation_final, ("model", "pct"), "per_conformation_final")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    summary = summary.copy()
    summary["model"] = summary["model"].astype(str)
    summary = summary.iloc[sorted(range(len(summary)), key=lambda i: model_sort_key(summary["model"].iat[i]))]
    steps = steps.assign(model=steps["model"].astype(str))
    final = per_conformation_final.assign(model=per_conformation_final["model"].astype(str))
    styles = _styles(_ordered(list(summary["model"]) + list(steps["model"]) + list(final["model"])))

    md = outdir / "summary.md"
    md.write_text("\n".join(_summary_lines(summary, settings or {})) + "\n", encoding="utf-8")
    written = [md]
    written += _plot_pct(steps, styles, outdir)
    written += _plot_eres(steps, styles, outdir)
    written += _plot_success_calls(summary, styles, outdir)
    written += _plot_nnp_error(steps, styles, outdir)
    written += _plot_distribution(final, styles, outdir)
    return written
