"""The study report: summary.md (the paper's Table 2 for this study), paired.csv and the plots
of :mod:`golf.study.plots`.

:func:`build_report` is the report rule's work: it reads every model's evaluation, computes the
metrics and calls :func:`write_report`. Its contract with the evaluation (so the report can tell
repeats and protocols apart):

- per-step CSVs: the columns of ``golf.study.metrics``; optional ``protocol`` ("paper", or e.g.
  "capped-0.02" for a step-capped row set; absent = "paper") and ``seed`` (absent = one seed).
- evaluation label files: file attributes ``model`` and, optionally, ``protocol`` and ``seed``,
  the same values as in the CSV rows, so final geometries (COV/MAT) match their rows.
- the test-set file of :mod:`golf.study.evaluate`: its minima and which references did not converge.

:func:`write_report`'s inputs are the tables of ``golf.study.metrics``: ``summarise`` (one row per
protocol, model and seed), ``step_metrics`` (one row per protocol, model, seed and step) and
``final_conformations`` (one row per protocol, model, seed and conformation at the final step).
The paper protocol's rows come first; any other protocol (e.g. a step cap) is a second, labelled
row set. Verdicts come from the paired comparisons of ``golf.study.stats``, never from two rates side
by side.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from golf import data
from golf.data.dataset import Dataset
from golf.study import evaluate, metrics, plots, stats
from golf.study.budget import arm_budgets, extra_oracle_calls
from golf.study.metrics import COV_DELTA, SUCCESS_THRESHOLD_KCAL, protocol_column
from golf.study.names import PAPER_PROTOCOL, arm_models, capped_displacement, model_sort_key, seed_of_path
from golf.study.paper import PAPER_README_TABLE2, PAPER_TABLE2

__all__ = [
    "ReportError",
    "write_report",
    "build_report",
    "unconverged_references",
    "with_validation_error",
]

log = logging.getLogger(__name__)


class ReportError(Exception):
    """Report input that lacks what a table or plot needs."""


_SUMMARY_NEEDS = ("model", "pct_mean", "pct_std", "pct_div", "e_res_mean", "pct_success")
_STEPS_NEEDS = ("model", "step", "pct_mean", "pct_div", "e_res_mean", "pct_success")
_PAIRED_NEEDS = ("molecule_id", "conformer_id", "evaluated", "valid", "diverged", "success", "e_res_kcal")


# ----------------------------------------------------------------------------------------------
# Formatting helpers
# ----------------------------------------------------------------------------------------------


def _f(x, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)) or pd.isna(x):
        return "–"
    return f"{float(x):.{digits}f}"


def _signed(x, digits: int = 1) -> str:
    return "–" if x is None or pd.isna(x) else f"{float(x):+.{digits}f}"


def _calls(x) -> str:
    if x is None or pd.isna(x):
        return "–"
    return f"{float(x):,.0f}"


def _int(x) -> str:
    return "–" if x is None or pd.isna(x) else str(int(x))


def _seed(x) -> str:
    return "–" if x is None or pd.isna(x) or x == "" else (str(int(x)) if float(x).is_integer() else str(x))


def _md_table(frame: pd.DataFrame) -> list[str]:
    """A pipe table (``DataFrame.to_markdown``, tabulate) of preformatted string cells."""
    cells = frame.astype(str).apply(lambda col: col.str.replace("|", "\\|", regex=False))
    return cells.to_markdown(index=False, disable_numparse=True).splitlines()


def _flatten(settings: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(dotted key, value) pairs of nested settings (``pd.json_normalize``); values that are not
    strings as JSON. An empty nested mapping has no leaf and does not appear."""
    if not settings:
        return []
    flat = pd.json_normalize(dict(settings), sep=".").iloc[0].to_dict()
    return [(k, v if isinstance(v, str) else json.dumps(v, default=str)) for k, v in flat.items()]


def _protocols(*frames: pd.DataFrame) -> list[str]:
    """Every protocol in the tables, the paper's first."""
    names = {p for f in frames for p in protocol_column(f)}
    return sorted(names, key=lambda p: (p != PAPER_PROTOCOL, p))


def _describe_protocol(protocol: str) -> str:
    if protocol == PAPER_PROTOCOL:
        return "the paper's L-BFGS (lr 1, max_iter 5, history 100, no step cap)"
    cap = capped_displacement(protocol)
    if cap is not None:
        return f"L-BFGS with each step capped at {cap} Å per atom: not the paper's protocol"
    return f"protocol {protocol!r}: not the paper's protocol"


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------


def _ci(lo, hi) -> str:
    return f"[{_f(lo)}, {_f(hi)}]" if pd.notna(lo) and pd.notna(hi) else ""


def _results_table(summary: pd.DataFrame) -> list[str]:
    seeded = "seed" in summary and summary["seed"].notna().any()
    rows = []
    for _, r in summary.iterrows():
        row = {"model": r["model"]}
        if seeded:
            row["seed"] = _seed(r["seed"])
        div_kinds = "/".join(
            _int(r.get(c)) for c in ("n_diverged_energy", "n_nonfinite", "n_label_failed", "n_missing")
        )
        row |= {
            "mean pct_T (%) ↑": f"{_f(r['pct_mean'])} ± {_f(r['pct_std'])}",
            "pct_div (%) ↓ [95 % CI]": f"{_f(r['pct_div'])} {_ci(r.get('pct_div_low'), r.get('pct_div_high'))}".strip(),
            "diverged: E↑/non-finite/label failed/missing": div_kinds,
            "mean E_res_T (kcal/mol) ↓": _f(r["e_res_mean"], 2),
            "below ref. (E_res < −0.1)": _int(r.get("n_below_reference")),
            "pct_success (%) ↑ [95 % CI]": (
                f"{_f(r['pct_success'])} {_ci(r.get('pct_success_low'), r.get('pct_success_high'))}".strip()
            ),
            "COV (%) ↑": _f(r.get("cov_pct")),
            "MAT (Å) ↓": _f(r.get("mat_angstrom"), 2),
            "extra oracle calls": _calls(r.get("extra_oracle_calls")),
            "val. force MAE (kcal/mol/Å)": _f(r.get("val_force_mae"), 2),
            "n evaluated (not run, no ref.)": f"{_int(r.get('n_evaluated', r.get('n')))} "
            f"({_int(r.get('n_not_run'))}, {_int(r.get('n_no_reference'))})",
        }
        rows.append(row)
    return _md_table(pd.DataFrame(rows))


def _paper_tables() -> list[str]:
    header = ["model", "mean pct_T (%) ↑", "pct_div (%) ↓", "mean E_res_T (kcal/mol) ↓", "pct_success (%) ↑"]
    header += ["COV (%) ↑", "MAT (Å) ↓", "extra oracle calls"]
    paper = pd.DataFrame(
        [
            [p.method, f"{_f(p.pct_mean)} ± {_f(p.pct_std)}", _f(p.pct_div), _f(p.e_res_mean), _f(p.pct_success)]
            + [_f(p.cov_pct), _f(p.mat_angstrom, 2), _calls(p.extra_oracle_calls)]
            for p in PAPER_TABLE2
        ],
        columns=header,
    )
    readme = {p.method: p for p in PAPER_README_TABLE2}
    band = pd.DataFrame(
        [
            [p.method]
            + [f"{getattr(p, c):g} / {getattr(readme[p.method], c):g}" for c in ("pct_mean", "pct_div", "cov_pct")]
            + [f"{p.mat_angstrom:g} / {readme[p.method].mat_angstrom:g}"]
            for p in PAPER_TABLE2
            if p.method in readme
        ],
        columns=["method", "pct_T", "pct_div", "COV", "MAT"],
    )
    lines = ["## The paper's Table 2 (for reference)", ""]
    lines += [
        "Tsypin et al., ICLR 2024, Table 2: nablaDFT D_test, 19 477 conformations, T = 100, "
        "ωB97X-D/def2-SVP, PaiNN NNPs.",
        "",
    ]
    lines += _md_table(paper)
    lines += [
        "",
        "The authors' README (Nov 2023) gives different pct_T, pct_div, COV and MAT; the band is final paper / README:",
    ]
    return lines + [""] + _md_table(band)


def _quantity_cell(r, q: str, holm: bool = True) -> str:
    """ "−3.30 [−4.05, −2.66], p 0.0002 (Holm 0.002)": a difference, its interval and p-values."""
    digits = stats.QUANTITIES[q][3]
    text = f"{_signed(r.get(f'{q}_diff'), digits)} [{_signed(r.get(f'{q}_low'), digits)}, "
    text += f"{_signed(r.get(f'{q}_high'), digits)}], p {stats.format_p(r.get(f'{q}_p'))}"
    if holm:
        p_holm = r.get(f"{q}_p_holm")
        text += f" (Holm {stats.format_p(p_holm)})" if pd.notna(p_holm) else " (decides nothing)"
    return text


_VERDICT_WORD = {1: "{a} better", -1: "{b} better"}


def _verdict_word(r) -> str:
    sig = stats.significance(r)
    mixed = any(v > 0 for v in sig.values()) and any(v < 0 for v in sig.values())
    word = "mixed" if mixed else _VERDICT_WORD.get(stats.verdict(r)[0], "no significant difference")
    return word.format(a=r["model_a"], b=r["model_b"])


def _paired_table(paired: pd.DataFrame) -> list[str]:
    rows = []
    for _, r in paired.iterrows():
        rows.append(
            {
                "a − b": f"{r['model_a']} − {r['model_b']}",
                "molecules / conformations / seeds": (
                    f"{_int(r['n_molecules'])} / {_int(r['n_conformations'])} / {_int(r['n_seeds'])}"
                ),
                "ΔE_res (kcal/mol) [95 %], p": _quantity_cell(r, "e_res"),
                "Δsuccess (pp) [95 %], p": _quantity_cell(r, "success"),
                "Δdivergence (pp) [95 %], p": _quantity_cell(r, "diverged"),
                "success a / b (%)": f"{_f(r['success_a'])} / {_f(r['success_b'])}",
                "diverged a / b (%)": f"{_f(r['diverged_a'])} / {_f(r['diverged_b'])}",
                "verdict": _verdict_word(r),
            }
        )
    return _md_table(pd.DataFrame(rows))


def _per_seed_table(per_seed: pd.DataFrame) -> list[str]:
    """Each seed's own paired intervals (molecule bootstrap within the seed; raw p, no verdict)."""
    rows = []
    for _, r in per_seed.iterrows():
        rows.append(
            {
                "a − b": f"{r['model_a']} − {r['model_b']}",
                "seed": _seed(r["seed"]),
                "molecules / conformations": f"{_int(r['n_molecules'])} / {_int(r['n_conformations'])}",
                "ΔE_res (kcal/mol) [95 %], p": _quantity_cell(r, "e_res", holm=False),
                "Δsuccess (pp) [95 %], p": _quantity_cell(r, "success", holm=False),
                "Δdivergence (pp) [95 %], p": _quantity_cell(r, "diverged", holm=False),
            }
        )
    return _md_table(pd.DataFrame(rows))


def _statistics_note(pooled: pd.DataFrame) -> str:
    """What the paired rows are: the resampling unit, the seeds, the family and its correction."""
    n_mol = int(pooled["n_molecules"].max()) if pooled["n_molecules"].notna().any() else 0
    n_seeds = int(pooled["n_seeds"].max()) if pooled["n_seeds"].notna().any() else 0
    family = int(pooled["family_size"].max()) if pooled["family_size"].notna().any() else 0
    seeds = (
        f"{n_seeds} seeds, resampled with replacement before the molecules, so the interval carries "
        "seed-to-seed variation (pairs are formed within a seed)"
        if n_seeds > 1
        else "1 seed"
    )
    return (
        f"Intervals and p-values resample **test molecules** (all conformations of a drawn molecule "
        f"together; up to {n_mol} molecules) with {seeds}: {stats.N_RESAMPLES:,} seeded resamples, 95 % "
        f"percentile intervals, two-sided bootstrap p. Family: the {len(pooled)} comparisons above × "
        f"{len(stats.QUANTITIES)} quantities (ΔE_res, Δsuccess, Δdivergence), {family} tests over at least "
        f"{stats.MIN_MOLECULES} molecules, with Holm's correction. A model is called better only when a "
        f"Holm-adjusted p < {stats.ALPHA:g} favours it and nothing significant is against it; a quantity "
        f"over fewer than {stats.MIN_MOLECULES} molecules decides nothing."
    )


def _spread_table(spread: pd.DataFrame) -> list[str]:
    rows = []
    for _, r in spread.iterrows():
        row = {"model": r["model"], "seeds": _int(r["n_seeds"])}
        for col, label, digits in (
            ("pct_mean", "mean pct_T (%)", 1),
            ("pct_div", "pct_div (%)", 1),
            ("e_res_mean", "mean E_res_T (kcal/mol)", 2),
            ("pct_success", "pct_success (%)", 1),
        ):
            row[f"{label}: mean ± std (min–max)"] = (
                f"{_f(r[f'{col}_mean'], digits)} ± {_f(r[f'{col}_std'], digits)} "
                f"({_f(r[f'{col}_min'], digits)}–{_f(r[f'{col}_max'], digits)})"
            )
        rows.append(row)
    return _md_table(pd.DataFrame(rows))


def _unconverged_lines(unconverged: pd.DataFrame | None, n_converged: int | None) -> list[str]:
    lines = ["## Test conformations without a converged reference", ""]
    if unconverged is None:
        return lines + ["(not given: the report was built without the reference optimisations' convergence)"]
    if unconverged.empty:
        return lines + ["None: every reference optimisation converged."]
    rate = ""
    if n_converged is not None:
        total = n_converged + len(unconverged)
        rate = f" ({n_converged} of {total} converged, {100.0 * n_converged / total:.1f} %)"
    lines += [
        f"{len(unconverged)} test conformation(s) whose oracle optimisation did not converge{rate} are "
        "excluded from every metric and comparison (a non-minimum as reference would make pct too high and "
        "E_res too small); they are listed here and in unconverged_references.csv:",
        "",
    ]
    return lines + _md_table(unconverged.fillna("–"))


# ----------------------------------------------------------------------------------------------
# "What this shows": sentences generated from the numbers
# ----------------------------------------------------------------------------------------------


def _findings(summary: pd.DataFrame, paired: pd.DataFrame, unconverged: pd.DataFrame | None) -> list[str]:
    out: list[str] = []
    paper = summary[protocol_column(summary) == PAPER_PROTOCOL]
    n = int(paper["n"].max()) if "n" in paper and paper["n"].notna().any() else None
    final = sorted({int(x) for x in paper["final_step"].dropna()}) if "final_step" in paper else []
    if n is not None:
        kinds = {c: int(paper[c].sum()) if c in paper else 0 for c in ("n_nonfinite", "n_label_failed", "n_missing")}
        out.append(
            f"Each model was evaluated on up to {n} test conformations"
            + (f" at step {', '.join(map(str, final))}" if final else "")
            + f"; over all models, {kinds['n_nonfinite']} trajectory(ies) went non-finite, "
            f"{kinds['n_label_failed']} final DFT label(s) failed and {kinds['n_missing']} final row(s) were "
            "missing: all count as diverged."
            + (
                " With so few conformations a single conformation moves a rate by several points; "
                "trust the paired tests, not the difference of two rates."
                if n < 50
                else ""
            )
        )
    if unconverged is not None and len(unconverged):
        out.append(
            f"{len(unconverged)} test conformation(s) have no converged reference: excluded from every metric "
            "(listed below)."
        )
    for protocol in _protocols(paired) if len(paired) else []:
        rows = paired[(protocol_column(paired) == protocol) & stats.is_pooled(paired)]
        where = "" if protocol == PAPER_PROTOCOL else f" [{protocol}, not the paper's protocol]"
        for _, r in rows.iterrows():  # the verdict's head; its numbers are in the paired section
            out.append(f"{r['comparison']}{where}: {r['verdict'].split(';')[0]}.")
    s = paper.groupby("model", sort=False)[["e_res_mean", "pct_div", "pct_mean"]].mean()
    match = [m for m in s.index if m != "oracle" and pd.notna(s.loc[m, "e_res_mean"]) and s.loc[m, "e_res_mean"] < 1]
    out.append(
        "Models that match the oracle (mean E_res < 1 kcal/mol, the paper's criterion, paper protocol): "
        + (", ".join(match) if match else "none")
        + "."
    )
    div = s["pct_div"].dropna()
    if len(div) and div.max() > 0:
        out.append(
            f"The highest divergence rate is {div.idxmax()}'s ({_f(div.max())} % of the evaluated conformations)."
        )
    out += _below_reference_finding(paper)
    out.append(
        "The paper's numbers come from 19 477 test conformations and 10^3-5x10^5 extra DFT calls at "
        "ωB97X-D/def2-SVP; compare this study's ordering of the models with the paper's, not the values."
    )
    return out


def _below_reference_finding(paper: pd.DataFrame) -> list[str]:
    """How often a model ended clearly below the oracle's reference minimum (E_res < -0.1 kcal/mol):
    such a conformation counts as a success, but there the reference fell short, not the model.
    (The oracle's own rows are pct = 100 by construction, so they cannot check the references.)"""
    if "n_below_reference" not in paper or not paper["n_below_reference"].fillna(0).gt(0).any():
        return []
    per_model = paper.groupby("model", sort=False)["n_below_reference"].sum()
    per_model = per_model[per_model > 0].sort_values(ascending=False)
    listed = ", ".join(f"{m} {int(n)}" for m, n in per_model.items())
    return [
        f"{int(per_model.sum())} final geometries (over all models and seeds: {listed}) ended more than "
        f"{-metrics.BELOW_REFERENCE_KCAL:g} kcal/mol below their reference minimum: they count as successes, "
        "but the oracle's reference optimisation found a higher minimum there (column n_below_reference)."
    ]


# ----------------------------------------------------------------------------------------------
# Test set and budget
# ----------------------------------------------------------------------------------------------


def _test_set_lines(test_set: pd.DataFrame | None, unconverged: pd.DataFrame | None) -> list[str]:
    """How many test conformations and molecules every metric is over, and how far they are from
    training (``train_rmsd``), or that this is not known."""
    lines = ["## Test set", ""]
    if test_set is None or not len(test_set):
        return lines + ["(not given: the report was built without the test set)"]
    n_conf = len(test_set[["molecule_id", "conformer_id"]].drop_duplicates())
    n_mol = test_set["molecule_id"].nunique()
    text = f"{n_conf} test conformations of {n_mol} molecules are evaluated"
    if unconverged is not None and len(unconverged):
        text += f" ({len(unconverged)} more have no converged reference and are excluded from every metric)"
    text += ". "
    rmsd = test_set["train_rmsd"].dropna() if "train_rmsd" in test_set else pd.Series(dtype=float)
    if len(rmsd):
        of = "" if len(rmsd) == n_conf else f" (known for {len(rmsd)} of {n_conf})"
        text += (
            "Distance from training (train_rmsd: all-atom RMSD after best superposition to the nearest "
            f"training conformation of the same molecule): min {rmsd.min():.2f}, median {rmsd.median():.2f}, "
            f"max {rmsd.max():.2f} Å{of}."
        )
    else:
        text += (
            "Distance from training: not known (the test set does not record train_rmsd: an imported test "
            "set, test molecules without training conformations, or a test set made before it was recorded)."
        )
    return lines + [text]


def _budget_lines(budget: pd.DataFrame | None) -> list[str]:
    lines = ["## Budget per arm", ""]
    if budget is None or not len(budget):
        return lines + ["(not given: the report was built without the arms' label files)"]
    # The last round of each numbered arm and seed, plus traj-k/trajeq-k; budget.csv has every round.
    last = budget.groupby([budget["seed"].fillna(-1.0), "arm"], sort=False)["rounds"].transform("max")
    shown = budget[(budget["rounds"] == last) | budget["arm"].isin(["traj", "trajeq"])]
    rows = []
    for _, r in shown.iterrows():
        rows.append(
            {
                "seed": _seed(r["seed"]),
                "model": r["model"],
                "real oracle calls": _calls(r["oracle_calls"]),
                "cache hits": _calls(r["cache_hits"]),
                "labels (status ok)": _calls(r["labelled"]),
                "new conformations": _calls(r["new_conformations"]),
            }
        )
    note = (
        "Real oracle calls: the calls the labelling jobs made (cache misses; a rerun that finds its labels in "
        "the cache makes none). Labels: rows with status ok the model was trained on beyond D0 (for traj-k, "
        "the trajectory frames after the start; trajeq-k trains on the same frames). New conformations: "
        "distinct labelled geometries that are not in D0 or an earlier round of the same arm and seed "
        "(exact coordinates)"
    )
    if budget["new_conformations"].isna().all():
        note += "; not known here: the report was built without D0"
    return lines + _md_table(pd.DataFrame(rows)) + ["", note + ". budget.csv has every round."]


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------


def _require(df: pd.DataFrame, needs: Sequence[str], what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise ReportError(f"{what} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in needs if c not in df.columns]
    if missing:
        raise ReportError(f"{what} lacks columns {missing}")


def _section(protocol: str, summary: pd.DataFrame, paired: pd.DataFrame) -> list[str]:
    s = summary[protocol_column(summary) == protocol]
    mine = paired[protocol_column(paired) == protocol] if len(paired) else paired
    p = mine[stats.is_pooled(mine)] if len(mine) else mine
    title = "This study: the paper's protocol" if protocol == PAPER_PROTOCOL else f"Second row set: {protocol}"
    lines = [f"## {title}", "", f"Every NNP row optimised with {_describe_protocol(protocol)}.", ""]
    lines += _results_table(s)
    lines += ["", f"### Paired comparisons ({protocol})", ""]
    if len(p):
        lines += _paired_table(p)
        lines += ["", _statistics_note(p), ""]
        lines += [f"- {r['comparison']}: {r['verdict']}" for _, r in p.iterrows()]
        per_seed = mine[~stats.is_pooled(mine)]
        if len(per_seed):
            lines += ["", f"### Paired comparisons per seed ({protocol})", ""]
            lines += [
                "Each seed alone: molecule bootstrap within the seed, raw p-values, no correction and no "
                "verdict (the verdicts come from the rows above, which resample the seeds too).",
                "",
            ]
            lines += _per_seed_table(per_seed)
    else:
        lines += ["(no pair of models to compare)"]
    spread = stats.seed_spread(s)
    if spread is not None:
        lines += ["", f"### Spread across seeds ({protocol})", ""]
        lines += _spread_table(spread)
    return lines + [""]


_DEFINITIONS = (
    "Definitions (reference/golf-paper.md §6.2): pct = 100·(E_0 − E_T)/(E_0 − E_opt); diverged = "
    "E_T > E_0, or no DFT energy of the final geometry (the trajectory went non-finite, the DFT label "
    "failed, or the final row is missing); pct_div over every conformation the model was run on "
    "(n evaluated); mean pct, std, mean E_res and pct_success (E_res < {thr:g} kcal/mol) over the "
    "labelled, non-diverged ones, as in the paper. below ref.: E_res < {below:g} kcal/mol, a lower "
    "minimum than the oracle's reference (counted as a success). Rate intervals: 95 % Wilson. COV/MAT: "
    "RDKit GetBestRMS over all atoms (symmetry-aware) within a molecule, δ = {delta:g} Å. Oracle: the "
    "DFT optimisation itself, pct = 100 by construction. Paired comparisons (golf.study.stats): a − b over the "
    "conformations evaluated by both models, pairs formed within a seed; ΔE_res over the pairs valid "
    "and not diverged for both, Δsuccess and Δdivergence as differences of two proportions over every "
    "pair (percentage points); bootstrap over test molecules (and seeds), 95 % percentile intervals, "
    "two-sided bootstrap p, Holm's correction over each protocol's family of comparisons × quantities. "
    "A model is called better only when a Holm-adjusted p < {alpha:g} is in its favour and nothing is "
    "significant against it. paired.csv has every row, per seed too."
)


def _summary_lines(
    summary: pd.DataFrame,
    paired: pd.DataFrame,
    settings: Mapping[str, Any],
    unconverged: pd.DataFrame | None,
    test_set: pd.DataFrame | None = None,
    budget: pd.DataFrame | None = None,
) -> list[str]:
    lines = ["# GOLF study report", ""]
    protocols = _protocols(summary)
    if PAPER_PROTOCOL not in protocols:
        lines += ["**No row was evaluated with the paper's protocol**: every table below is a departure from it.", ""]
    for protocol in protocols:
        lines += _section(protocol, summary, paired)
    lines += [
        _DEFINITIONS.format(
            thr=SUCCESS_THRESHOLD_KCAL, below=metrics.BELOW_REFERENCE_KCAL, delta=COV_DELTA, alpha=stats.ALPHA
        ),
        "",
    ]
    lines += _test_set_lines(test_set, unconverged) + [""]
    lines += _budget_lines(budget) + [""]
    oracle = summary[(summary["model"] == "oracle") & (summary["protocol"] == PAPER_PROTOCOL)]
    n_converged = int(oracle["n"].iloc[0]) if len(oracle) and "n" in oracle and pd.notna(oracle["n"].iloc[0]) else None
    lines += _unconverged_lines(unconverged, n_converged) + [""]
    lines += _paper_tables()
    lines += ["", "## Settings", ""]
    flat = _flatten(settings)
    lines += _md_table(pd.DataFrame(flat, columns=["setting", "value"]).assign(value=lambda d: "`" + d["value"] + "`"))
    lines += [] if flat else ["(none given)"]
    lines += ["", "## What this shows", ""]
    lines += [f"- {s}" for s in _findings(summary, paired, unconverged)]
    lines += ["", "## Plots (paper protocol)", ""]
    for name in plots.PLOTS:
        caption = plots.CAPTIONS[name]
        lines += [f"![{caption}]({name}.png)", "", f"*{caption}* ([SVG]({name}.svg))", ""]
    return lines


def write_report(
    summary: pd.DataFrame,
    steps: pd.DataFrame,
    per_conformation_final: pd.DataFrame,
    outdir: str | Path,
    settings: Mapping[str, Any] | None = None,
    *,
    unconverged: pd.DataFrame | None = None,
    test_set: pd.DataFrame | None = None,
    budget: pd.DataFrame | None = None,
) -> list[Path]:
    """Write ``outdir/summary.md``, ``outdir/paired.csv`` and the plots (``PLOTS``, PNG and SVG).

    ``summary``: ``golf.study.metrics.summarise`` output (needs model, pct_mean, pct_std, pct_div,
    e_res_mean, pct_success; uses protocol, seed, the count columns, the Wilson bounds, cov_pct,
    mat_angstrom, extra_oracle_calls, final_step when present). ``steps``:
    ``golf.study.metrics.step_metrics`` output. ``per_conformation_final``:
    ``golf.study.metrics.final_conformations`` output (needs model and pct; with evaluated, valid,
    diverged, success and e_res_kcal the paired comparisons of ``golf.study.stats`` are made).
    ``settings``: the study settings, nested dicts allowed, listed flattened. ``unconverged``:
    test conformations whose reference optimisation did not converge, one row each, listed as
    given (None: the report says it was not given). ``test_set``: the evaluated test conformations,
    one row each (molecule_id, conformer_id, optionally train_rmsd); None: taken from
    ``per_conformation_final``'s evaluated rows. ``budget``: :func:`golf.study.budget.arm_budgets` (None: not given).
    Rows of the paper's protocol come first; any
    other protocol is a second, labelled row set. Plots show the paper's protocol (seed means).
    Returns the paths written.
    """
    _require(summary, _SUMMARY_NEEDS, "summary")
    _require(steps, _STEPS_NEEDS, "steps")
    _require(per_conformation_final, ("model", "pct"), "per_conformation_final")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    summary = summary.assign(model=summary["model"].astype(str), protocol=protocol_column(summary))
    summary = summary.iloc[
        sorted(
            range(len(summary)),
            key=lambda i: (
                (summary["protocol"].iat[i] != PAPER_PROTOCOL, summary["protocol"].iat[i])
                + model_sort_key(summary["model"].iat[i])
            ),
        )
    ]
    steps = steps.assign(model=steps["model"].astype(str))
    final = per_conformation_final.assign(model=per_conformation_final["model"].astype(str))
    if all(c in final for c in _PAIRED_NEEDS):
        calls = dict(zip(summary["model"], summary.get("extra_oracle_calls", np.nan), strict=True))
        paired = stats.paired_comparisons(final, calls)
    else:
        paired = pd.DataFrame(columns=list(stats.PAIRED_COLUMNS))

    md = outdir / "summary.md"
    if test_set is None and "evaluated" in final:
        test_set = final[final["evaluated"].astype(bool)]
    lines = _summary_lines(summary, paired, settings or {}, unconverged, test_set, budget)
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    paired.to_csv(outdir / "paired.csv", index=False)
    return [md, outdir / "paired.csv", *plots.write_plots(summary, steps, final, outdir)]


# ----------------------------------------------------------------------------------------------
# The report rule: reading the study's files
# ----------------------------------------------------------------------------------------------


def validation_force_error(metrics_csv) -> float:
    """A model's force MAE (kcal/mol/A) on training's held-out validation conformations, at the
    step training returned (the lowest validation loss; golf.train.trainer)."""
    history = pd.read_csv(metrics_csv).dropna(subset=["val_loss"])
    if not len(history):
        return float("nan")
    return float(history.loc[history["val_loss"].idxmin(), "val_force_mae_kcalmol_per_A"])


def with_validation_error(summary: pd.DataFrame, model_metrics) -> pd.DataFrame:
    """``summary`` with column ``val_force_mae`` from each model's training metrics CSV
    (``.../seed-<s>/models/<model>.metrics.csv``; outside a seed directory it has no seed); NaN for
    models without one (MMFF, the oracle, an imported baseline)."""
    rows = []
    for path in model_metrics:
        path = Path(path)
        seed = seed_of_path(path)
        rows.append({
            "model": path.name.removesuffix(".metrics.csv"),
            "seed_key": None if seed is None else float(seed),
            "val_force_mae": validation_force_error(path),
        })  # fmt: skip
    summary = summary.copy()
    errors = {(r["model"], r["seed_key"]): r["val_force_mae"] for r in rows}
    seeds = summary["seed"] if "seed" in summary else pd.Series(np.nan, index=summary.index)
    summary["val_force_mae"] = [
        errors.get((m, metrics.seed_key(s)), np.nan) for m, s in zip(summary["model"], seeds, strict=True)
    ]
    return summary


_END_REASON = {"step_limit": "stopped at the step limit", "failed": "oracle failure"}


def unconverged_references(test_set: Dataset) -> pd.DataFrame:
    """Test conformations whose reference optimisation gives no minimum: one row each with
    molecule_id, conformer_id, smiles, name, the reason and the number of frames.

    ``evaluate.evaluable`` leaves them out of every evaluation (a non-minimum reference would
    make pct too high and E_res too small); this lists them so the report can say which.
    """
    rows = []
    for c in test_set:
        if not c.labelled:
            reason = f"start not labelled ({c.status})"
        elif c.props["end"] != "converged":
            reason = _END_REASON.get(c.props["end"], f"ended {c.props['end']}")
        else:
            continue
        mol = test_set.molecules[c.molecule_id]
        rows.append(
            {
                "molecule_id": c.molecule_id,
                "conformer_id": c.conformer_id,
                "smiles": mol.smiles,
                "name": mol.name,
                "reason": reason,
                "frames": c.props.get("reference_frames", -1),
            }
        )
    return pd.DataFrame(rows, columns=["molecule_id", "conformer_id", "smiles", "name", "reason", "frames"])


def _group_of(frames: Dataset) -> tuple[str, str, float | None]:
    """(protocol, model, seed) of an evaluation label file, from its attributes."""
    seed = frames.attrs.get("seed")
    protocol = frames.attrs.get("protocol") or PAPER_PROTOCOL
    return str(protocol), str(frames.attrs["model"]), None if seed is None or pd.isna(seed) else float(seed)


def build_report(
    per_step_csvs,
    eval_labels,
    round_labels,
    traj,
    test_set,
    evaluation: dict,
    settings: dict,
    outdir,
    random_labels=(),
    model_metrics=(),
    d0=None,
    budget_labels=(),
) -> None:
    """summary.md, summary.csv, steps.csv, paired.csv, unconverged_references.csv, budget.csv and
    the plots in ``outdir``.

    ``round_labels``, ``random_labels``: the label files of GOLF's and the control's rounds,
    ``seed-<s>/labels/round-<r>.h5`` and ``seed-<s>/labels/random-<r>.h5`` of every seed;
    ``traj``: every seed's trajectory baseline (``seed-<s>/optimisation/traj.h5``). They give the
    models' extra oracle calls (used to match budgets) and the budget per seed and arm.
    Optional: ``d0`` (a seed's ``d0.h5``), so the budget can tell new conformations from D0's;
    ``budget_labels``: other files for the budget (default: the files above).
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    final_step = evaluation["timelimit"]
    all_rows = data.read(test_set)
    rows = evaluate.evaluable(all_rows)
    unconverged = unconverged_references(all_rows)
    per_step = pd.concat(
        [pd.read_csv(path) for path in per_step_csvs] + [evaluate.oracle_table(rows, final_step)],
        ignore_index=True,
    )
    final_geoms = {}
    for path in eval_labels:
        frames = data.read(path)
        group = _group_of(frames)
        for c in frames:
            if c.props["step"] == final_step and c.labelled:
                final_geoms[(*group, c.molecule_id, c.conformer_id)] = (frames.smiles(c), c.coordinates)
    # Minima read from a test file have energies only (no opt_coordinates): no COV/MAT for them.
    reference_geoms = {
        (c.molecule_id, c.conformer_id): (rows.smiles(c), c.props["opt_coordinates"])
        for c in rows
        if "opt_coordinates" in c.props and np.isfinite(c.props["opt_coordinates"]).all()
    }
    for (mid, cid), geom in reference_geoms.items():
        final_geoms[("oracle", mid, cid)] = geom  # every protocol: the oracle's rows do not depend on it

    # traj-k and trajeq-k train on the same trajectories: the same extra calls.
    models = per_step["model"].unique()
    traj_models = sorted([*arm_models(models, "traj"), *arm_models(models, "trajeq")])
    extra_calls = extra_oracle_calls(round_labels, traj, traj_models, random_labels)
    budget = arm_budgets(list(budget_labels) or [*round_labels, *random_labels, *traj], traj_models, d0)

    # All atoms, not heavy atoms: the default study's molecules have 2-7 heavy atoms, where a
    # heavy-atom RMSD hardly distinguishes conformers (RDKit's GetBestRMS handles H symmetry).
    summary = metrics.summarise(
        per_step,
        final_geoms,
        reference_geoms,
        final_step=final_step,
        extra_oracle_calls=extra_calls,
        delta=evaluation["cov_delta"],
        heavy_atoms=False,
    )
    steps = metrics.step_metrics(per_step)
    finals = metrics.final_conformations(per_step, final_step)
    summary = with_validation_error(summary, model_metrics)
    summary.to_csv(outdir / "summary.csv", index=False)
    steps.to_csv(outdir / "steps.csv", index=False)
    unconverged.to_csv(outdir / "unconverged_references.csv", index=False)
    budget.to_csv(outdir / "budget.csv", index=False)
    if len(unconverged):
        log.warning(
            "%d test conformations have no converged reference: excluded from every metric, listed in the report",
            len(unconverged),
        )
    tested = pd.DataFrame(
        {
            "molecule_id": [c.molecule_id for c in rows],
            "conformer_id": [c.conformer_id for c in rows],
            "train_rmsd": [evaluate.train_rmsd(c) for c in rows],
        }
    )
    write_report(summary, steps, finals, outdir, settings, unconverged=unconverged, test_set=tested, budget=budget)
