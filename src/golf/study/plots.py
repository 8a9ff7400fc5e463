"""The study report's figures (paper Figs. 1-2 and the success-versus-oracle-calls curve).

Inputs are the tables of ``golf.study.metrics`` (see :mod:`golf.study.report`); the figures show the paper
protocol's rows, seed means. matplotlib's object API with the Agg canvas (no pyplot, no global
backend switch), so the module is safe in headless workers and in tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from golf.study.metrics import SUCCESS_THRESHOLD_KCAL, protocol_column
from golf.study.names import PAPER_PROTOCOL, arm_models, model_sort_key

__all__ = ["PLOTS", "CAPTIONS", "write_plots"]

PLOTS = ("pct_vs_step", "eres_vs_step", "success_vs_oracle_calls", "nnp_error_vs_step", "pct_distribution")
CAPTIONS = {
    "pct_vs_step": "Mean pct and pct_div along the optimisation",
    "eres_vs_step": "Mean E_res and pct_success along the optimisation",
    "success_vs_oracle_calls": "pct_success against extra oracle calls: GOLF rounds as a learning curve",
    "nnp_error_vs_step": "NNP energy and force error along its own trajectory (paper Fig. 1)",
    "pct_distribution": "Final pct per model (paper Fig. 2)",
}


# numbered arm -> (colour map, marker, line style); shades darken with the round or budget
_ARM_STYLES = {
    "golf": ("Blues", "o", "-"),
    "traj": ("Oranges", "s", "--"),
    "trajeq": ("Reds", "P", ":"),
    "random": ("Purples", "v", "-."),
}


def _styles(models: Sequence[str]) -> dict[str, dict]:
    from matplotlib import colormaps

    styles: dict[str, dict] = {}
    for arm, (cmap, marker, ls) in _ARM_STYLES.items():
        members = arm_models(models, arm)
        for i, m in enumerate(members):
            styles[m] = {"color": colormaps[cmap](0.45 + 0.55 * (i + 1) / len(members)), "marker": marker, "ls": ls}
    others = [m for m in models if m not in styles]
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


def _step_panels(steps: pd.DataFrame, styles, panels) -> tuple[Figure, tuple]:
    """Two panels side by side, one metric each along the step (symlog x): ((column, y label), ...)."""
    fig = Figure(figsize=(9, 4))
    axes = fig.subplots(1, 2)
    for ax, (col, label) in zip(axes, panels, strict=True):
        if _step_lines(ax, steps, col, styles):
            ax.set_xscale("symlog", linthresh=1)
            _plain_ticks(ax.xaxis, steps["step"].unique())
            ax.legend(fontsize="small")
        else:
            _no_data(ax, col)
        ax.set_xlabel("optimisation step t")
        ax.set_ylabel(label)
    return fig, axes


def _plot_pct(steps: pd.DataFrame, styles, outdir: Path) -> list[Path]:
    fig, (ax1, ax2) = _step_panels(steps, styles, (("pct_mean", "mean pct (%)"), ("pct_div", "pct_div (%)")))
    ax1.axhline(100, color="grey", lw=0.8, ls=":")
    ax1.set_title("Energy drop reached (non-diverged)")
    ax2.set_title("Diverged: E(s_t) > E(s_0) or no DFT energy")
    return _save(fig, outdir, "pct_vs_step")


def _plot_eres(steps: pd.DataFrame, styles, outdir: Path) -> list[Path]:
    panels = (("e_res_mean", "mean E_res (kcal/mol)"), ("pct_success", "pct_success (%)"))
    fig, (ax1, ax2) = _step_panels(steps, styles, panels)
    ax1.set_yscale("symlog", linthresh=1)
    _plain_ticks(ax1.yaxis)
    ax1.axhline(SUCCESS_THRESHOLD_KCAL, color="grey", lw=0.8, ls=":")
    ax1.set_title("Residual energy (non-diverged)")
    ax2.set_title(f"E_res < {SUCCESS_THRESHOLD_KCAL:g} kcal/mol")
    return _save(fig, outdir, "eres_vs_step")


def _bar(row) -> tuple[float, float]:
    """Error bar lengths (below, above) from the view's bar_low/bar_high; 0 where unknown."""
    y, lo, hi = row["pct_success"], row.get("bar_low", np.nan), row.get("bar_high", np.nan)
    return (float(y - lo) if pd.notna(lo) else 0.0, float(hi - y) if pd.notna(hi) else 0.0)


def _plot_success_calls(summary: pd.DataFrame, styles, outdir: Path) -> list[Path]:
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    s = summary.set_index("model", drop=False)
    calls = s["extra_oracle_calls"] if "extra_oracle_calls" in s else pd.Series(np.nan, index=s.index)
    drawn = False
    # GOLF learning curve: baseline (round 0, no extra calls) then every round in order.
    curve = (["baseline"] if "baseline" in s.index else []) + arm_models(s.index, "golf")
    x = [0.0 if m == "baseline" and pd.isna(calls[m]) else calls[m] for m in curve]
    pts = [(xi, s.loc[m, "pct_success"], m) for xi, m in zip(x, curve, strict=True)]
    pts = [p for p in pts if pd.notna(p[0]) and pd.notna(p[1])]
    bars = {m: _bar(s.loc[m]) for m in s.index}
    if len(pts) > 1 or (pts and pts[0][2] != "baseline"):
        ax.errorbar(
            [p[0] for p in pts],
            [p[1] for p in pts],
            yerr=np.array([bars[p[2]] for p in pts]).T,
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
            [xm], [s.loc[m, "pct_success"]], yerr=np.array([bars[m]]).T, marker=st["marker"], color=st["color"], ms=8,
            ls="none",
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
    label = s["bar_label"].iloc[0] if "bar_label" in s and len(s) else "95 % Wilson interval"
    ax.set_title(f"Success vs oracle budget (bars: {label})")
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


def _plot_view(summary: pd.DataFrame, steps: pd.DataFrame, final: pd.DataFrame):
    """The paper protocol's rows for the plots: seed means per model (step), and for the success
    plot's bars the seeds' min-max, or the 95 % Wilson interval with a single seed."""
    summary = summary[protocol_column(summary) == PAPER_PROTOCOL]
    steps = steps[protocol_column(steps) == PAPER_PROTOCOL]
    final = final[protocol_column(final) == PAPER_PROTOCOL]
    if "seed" in steps:
        steps = steps.groupby(["model", "step"], as_index=False, sort=False).mean(numeric_only=True)
    if "seed" in summary and summary["seed"].nunique() > 1:
        g = summary.groupby("model", sort=False)
        view = g.mean(numeric_only=True)
        view["bar_low"] = g["pct_success"].min()
        view["bar_high"] = g["pct_success"].max()
        view["bar_label"] = "min–max over seeds"
        summary = view.reset_index()
    else:
        summary = summary.assign(
            bar_low=summary.get("pct_success_low", np.nan),
            bar_high=summary.get("pct_success_high", np.nan),
            bar_label="95 % Wilson interval",
        )
    return summary, steps, final


def write_plots(summary: pd.DataFrame, steps: pd.DataFrame, final: pd.DataFrame, outdir: Path) -> list[Path]:
    """Every plot of :data:`PLOTS`, PNG and SVG, in ``outdir``; returns the paths written."""
    styles = _styles(_ordered(list(summary["model"]) + list(steps["model"]) + list(final["model"])))
    summary, steps, final = _plot_view(summary, steps, final)
    return [
        *_plot_pct(steps, styles, outdir),
        *_plot_eres(steps, styles, outdir),
        *_plot_success_calls(summary, styles, outdir),
        *_plot_nnp_error(steps, styles, outdir),
        *_plot_distribution(final, styles, outdir),
    ]
