"""Paired statistics: is one model better than another on the same test conformations?

Two models evaluated on the same test conformations are compared conformation by conformation
(paired), which removes the spread between conformations that dominates unpaired comparisons of
a few hundred conformations. Input: ``golf.metrics.final_conformations`` rows (one per protocol,
model, [seed,] molecule_id, conformer_id) with the flags ``evaluated``, ``valid``, ``diverged``,
``success`` and the values ``e_res_kcal`` and ``pct``.

What enters each comparison (a = first model, b = second):

- **Pairs**: conformations evaluated by both models (``evaluated``: the model was run on it and
  it has a reference). Conformations evaluated by one model only are counted (``n_unpaired``),
  never paired.
- **Success and divergence** (every pair): an exact McNemar test, i.e. a two-sided binomial test
  of the discordant pairs against 1/2 (``scipy.stats.binomtest``), and a bootstrap interval of the
  difference in rate (percentage points). A failed label or a non-finite trajectory counts as
  diverged and not successful (``golf.metrics``), so a model cannot improve by exploding.
- **E_res and pct**: the paper excludes diverged conformations from mean E_res and mean pct, so
  a paired difference uses the pairs that are valid and not diverged for **both** models
  (``n_e_res``). The divergence test above covers the rest; the two together describe the models.
- **Intervals**: 95 % BCa bootstrap (``scipy.stats.bootstrap``, 9 999 resamples, a fixed seed so
  the report is deterministic) of the mean of the per-conformation differences a - b.
- **Seeds**: with a ``seed`` column, pairs are formed within a seed (seed s of golf-r is fine-tuned
  from seed s of the baseline; a model without a seed, such as mmff, pairs with every seed). Each
  seed gets its own row. The pooled row (``seed`` = "all") averages each conformation's
  differences over the seeds and bootstraps over conformations: the conformation is the
  independent unit (the same conformation recurs in every seed), and seed-to-seed variation is
  averaged in rather than counted as extra samples. McNemar needs one binary pair per
  conformation, so the pooled row of several seeds decides rates by the bootstrap interval.
- **Verdict**: a model is called better only if at least one of success, divergence, E_res, pct
  differs significantly in its favour (interval excludes zero; McNemar p < 0.05 for rates) and
  none in the other's; otherwise "no significant difference" (or "mixed"). An interval over fewer
  than ``MIN_PAIRS`` pairs is shown but decides nothing (McNemar's exact p is valid at any n).
  No correction for testing four quantities and several comparisons is applied: the table gives
  every p and interval so a reader can apply one.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as sps

__all__ = [
    "ALPHA",
    "CONFIDENCE",
    "N_RESAMPLES",
    "MIN_PAIRS",
    "POOLED",
    "PAIRED_COLUMNS",
    "StatsError",
    "Interval",
    "wilson_interval",
    "mcnemar_exact",
    "bootstrap_mean",
    "paired_frame",
    "compare",
    "significance",
    "verdict",
    "study_comparisons",
    "paired_comparisons",
    "seed_spread",
]

ALPHA = 0.05
CONFIDENCE = 0.95
N_RESAMPLES = 9999
BOOTSTRAP_SEED = 0
# A bootstrap interval of a handful of values is too narrow (it cannot see tails it never
# sampled), so below this many pairs an interval is reported but decides nothing.
MIN_PAIRS = 10
POOLED = "all"  # the seed label of the row pooled over seeds

_FLAGS = ("evaluated", "valid", "diverged", "success")
_VALUES = ("e_res_kcal", "pct")


class StatsError(Exception):
    """Input the paired statistics cannot be computed from."""


class Interval(NamedTuple):
    estimate: float
    low: float
    high: float


def wilson_interval(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of the proportion k/n, in percent; (NaN, NaN) when n == 0.

    scipy's ``binomtest(...).proportion_ci(method="wilson")``: unlike the normal approximation it
    stays inside [0, 100] and does not collapse to a point at 0 or n successes.
    """
    if n <= 0:
        return np.nan, np.nan
    ci = sps.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return 100.0 * float(ci.low), 100.0 * float(ci.high)


def mcnemar_exact(n_a_only: int, n_b_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pair counts.

    Under "no difference" each discordant pair is a fair coin flip, so the count of one kind is
    Binomial(n_a_only + n_b_only, 1/2). Without discordant pairs there is no evidence: p = 1.
    """
    n = int(n_a_only) + int(n_b_only)
    if n == 0:
        return 1.0
    return float(sps.binomtest(int(n_a_only), n, 0.5).pvalue)


def bootstrap_mean(
    values, *, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> Interval:
    """Mean of ``values`` with a BCa bootstrap interval (``scipy.stats.bootstrap``, seeded).

    NaN values are left out. One value has no interval (NaN bounds); values that are all equal
    have a zero-width interval at that value (the bootstrap distribution is a point, where BCa's
    acceleration is undefined).
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return Interval(np.nan, np.nan, np.nan)
    mean = float(x.mean())
    if len(x) == 1:
        return Interval(mean, np.nan, np.nan)
    if np.ptp(x) == 0:
        return Interval(mean, mean, mean)
    ci = None
    for method in ("BCa", "percentile"):  # BCa can fail on near-degenerate samples (few distinct values)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", getattr(sps, "DegenerateDataWarning", RuntimeWarning))
            res = sps.bootstrap(
                (x,),
                np.mean,
                confidence_level=confidence,
                n_resamples=n_resamples,
                method=method,
                rng=np.random.default_rng(seed),
            )
        ci = res.confidence_interval
        if np.isfinite(ci.low) and np.isfinite(ci.high):
            break
    return Interval(mean, float(ci.low), float(ci.high))


# ----------------------------------------------------------------------------------------------
# Pairs
# ----------------------------------------------------------------------------------------------


def _seed_label(x) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)) or pd.isna(x):
        return ""
    return str(int(x)) if float(x).is_integer() else str(x)


def _model_rows(finals: pd.DataFrame, model: str) -> pd.DataFrame:
    rows = finals[finals["model"].astype(str) == model]
    if rows.empty:
        raise StatsError(f"no final rows of model {model!r}; models: {sorted(finals['model'].astype(str).unique())}")
    cols = ["molecule_id", "conformer_id", *_FLAGS, *_VALUES]
    out = rows[cols].copy()
    out["seed"] = rows["seed"].map(_seed_label) if "seed" in rows else ""
    if out.duplicated(["seed", "molecule_id", "conformer_id"]).any():
        raise StatsError(f"model {model!r} has several final rows for one conformation (mixed protocols?)")
    return out


def paired_frame(finals: pd.DataFrame, a: str, b: str) -> tuple[pd.DataFrame, int]:
    """Rows of conformations evaluated by both ``a`` and ``b``, and the count evaluated by one only.

    Columns: seed (string, "" without seeds), molecule_id, conformer_id, and ``<flag>_a``,
    ``<flag>_b`` for evaluated, valid, diverged, success, e_res_kcal and pct. Pairs are formed
    within a seed; a model without seeds pairs with every seed of the other.
    """
    missing = [c for c in ("model", "molecule_id", "conformer_id", *_FLAGS, *_VALUES) if c not in finals]
    if missing:
        raise StatsError(f"final conformations lack columns {missing}")
    ra, rb = _model_rows(finals, a), _model_rows(finals, b)
    on = ["molecule_id", "conformer_id"]
    a_seeded, b_seeded = (ra["seed"] != "").any(), (rb["seed"] != "").any()
    if a_seeded and b_seeded:
        on = ["seed", *on]
    elif a_seeded:
        rb = rb.drop(columns="seed")
    else:
        ra = ra.drop(columns="seed")
    both = ra.merge(rb, on=on, how="outer", suffixes=("_a", "_b"), indicator=True)
    if "seed" not in both:
        both["seed"] = ""
    paired = (both["_merge"] == "both") & both["evaluated_a"].eq(True) & both["evaluated_b"].eq(True)
    n_unpaired = int((~paired & (both["evaluated_a"].eq(True) | both["evaluated_b"].eq(True))).sum())
    out = both[paired].drop(columns="_merge").reset_index(drop=True)
    for col in _FLAGS:
        out[f"{col}_a"] = out[f"{col}_a"].astype(bool)
        out[f"{col}_b"] = out[f"{col}_b"].astype(bool)
    return out, n_unpaired


def _per_conformation(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per-(seed, conformation) differences a - b: rates in percentage points, NaN where undefined."""
    both_kept = pairs["valid_a"] & ~pairs["diverged_a"] & pairs["valid_b"] & ~pairs["diverged_b"]
    d = pairs[["seed", "molecule_id", "conformer_id"]].copy()
    d["e_res"] = np.where(both_kept, pairs["e_res_kcal_a"] - pairs["e_res_kcal_b"], np.nan)
    d["pct"] = np.where(both_kept, pairs["pct_a"] - pairs["pct_b"], np.nan)
    for flag in ("success", "diverged"):
        d[flag] = 100.0 * (pairs[f"{flag}_a"].astype(float) - pairs[f"{flag}_b"].astype(float))
        d[f"{flag}_a"] = pairs[f"{flag}_a"].astype(float)
        d[f"{flag}_b"] = pairs[f"{flag}_b"].astype(float)
    return d


PAIRED_COLUMNS = (
    "protocol",
    "model_a",
    "model_b",
    "comparison",
    "seed",
    "n_seeds",
    "n_pairs",
    "n_unpaired",
    "n_e_res",
    "e_res_diff",
    "e_res_low",
    "e_res_high",
    "pct_diff",
    "pct_low",
    "pct_high",
    "success_a",
    "success_b",
    "success_diff",
    "success_low",
    "success_high",
    "success_a_only",
    "success_b_only",
    "success_p",
    "diverged_a",
    "diverged_b",
    "diverged_diff",
    "diverged_low",
    "diverged_high",
    "diverged_a_only",
    "diverged_b_only",
    "diverged_p",
    "verdict",
)


def _row(d: pd.DataFrame, n_seeds: int, seed: int) -> dict:
    # Average over the seeds of a conformation first, then bootstrap over conformations.
    per_conf = d.groupby(["molecule_id", "conformer_id"])[
        ["e_res", "pct", "success", "diverged", "success_a", "success_b", "diverged_a", "diverged_b"]
    ].mean()
    out: dict = {"n_seeds": n_seeds, "n_pairs": int(len(per_conf)), "n_e_res": int(per_conf["e_res"].notna().sum())}
    for name in ("e_res", "pct", "success", "diverged"):
        iv = bootstrap_mean(per_conf[name], seed=seed)
        out[f"{name}_diff"], out[f"{name}_low"], out[f"{name}_high"] = iv
    for flag in ("success", "diverged"):
        out[f"{flag}_a"] = 100.0 * float(per_conf[f"{flag}_a"].mean()) if len(per_conf) else np.nan
        out[f"{flag}_b"] = 100.0 * float(per_conf[f"{flag}_b"].mean()) if len(per_conf) else np.nan
        out[f"{flag}_a_only"] = int((d[flag] > 0).sum())  # discordant pairs over every (seed, conformation)
        out[f"{flag}_b_only"] = int((d[flag] < 0).sum())
        # Exact McNemar needs one binary pair per conformation: a single seed.
        out[f"{flag}_p"] = mcnemar_exact(out[f"{flag}_a_only"], out[f"{flag}_b_only"]) if n_seeds <= 1 else np.nan
    return out


def compare(finals: pd.DataFrame, a: str, b: str, *, seed: int = BOOTSTRAP_SEED) -> list[dict]:
    """Paired comparison of ``a`` against ``b`` (differences are a - b): one row per seed when
    there are several, then the pooled row (``seed`` = "all"; the only row without seeds, with
    ``seed`` = ""). Columns as in ``PAIRED_COLUMNS`` less protocol, comparison and verdict."""
    pairs, n_unpaired = paired_frame(finals, a, b)
    d = _per_conformation(pairs)
    seeds = sorted(d["seed"].unique(), key=lambda s: (len(s), s))
    rows = []
    if len(seeds) > 1:
        for s in seeds:
            rows.append(
                {"model_a": a, "model_b": b, "seed": s, "n_unpaired": np.nan, **_row(d[d["seed"] == s], 1, seed)}
            )
    label = POOLED if len(seeds) > 1 else (seeds[0] if seeds else "")
    rows.append({"model_a": a, "model_b": b, "seed": label, "n_unpaired": n_unpaired, **_row(d, len(seeds), seed)})
    return rows


# ----------------------------------------------------------------------------------------------
# Verdict
# ----------------------------------------------------------------------------------------------

# quantity -> (label, +1 if larger is better for the first model, unit)
_QUANTITIES = {
    "success": ("success", 1, "pp"),
    "diverged": ("divergence", -1, "pp"),
    "e_res": ("E_res", -1, "kcal/mol"),
    "pct": ("pct", 1, "pp"),
}


def _excludes_zero(low, high) -> bool:
    return bool(pd.notna(low) and pd.notna(high) and (low > 0 or high < 0))


def significance(row: Mapping, alpha: float = ALPHA) -> dict[str, int]:
    """{quantity: +1 (favours model_a), -1 (favours model_b), 0 (not significant)}.

    Rates: McNemar p < ``alpha`` where a p-value exists (one seed), else the bootstrap interval.
    E_res and pct: the interval excludes zero. ``alpha`` only applies to McNemar; the intervals
    are the ``CONFIDENCE`` ones they were computed with, and need ``MIN_PAIRS`` pairs.
    """
    out = {}
    for q, (_, better, _) in _QUANTITIES.items():
        diff = row.get(f"{q}_diff")
        rate = q in ("success", "diverged")
        p = row.get(f"{q}_p", np.nan) if rate else np.nan
        n = row.get("n_pairs" if rate else "n_e_res", 0)
        if pd.notna(p):
            sig = p < alpha and pd.notna(diff) and diff != 0
        else:
            sig = n >= MIN_PAIRS and _excludes_zero(row.get(f"{q}_low"), row.get(f"{q}_high"))
        out[q] = int(np.sign(diff) * better) if sig else 0
    return out


def _fmt(x, digits: int = 1) -> str:
    return "–" if x is None or pd.isna(x) else f"{float(x):+.{digits}f}"


def _clause(row: Mapping, q: str) -> str:
    label, _, unit = _QUANTITIES[q]
    digits = 2 if q == "e_res" else 1
    ci = f"[{_fmt(row.get(f'{q}_low'), digits)}, {_fmt(row.get(f'{q}_high'), digits)}]"
    text = f"Δ{label} {_fmt(row.get(f'{q}_diff'), digits)} {unit} {ci}"
    p = row.get(f"{q}_p", np.nan)
    if q in ("success", "diverged") and pd.notna(p):
        text += f" (McNemar p = {p:.3g})"
    return text


def verdict(row: Mapping, alpha: float = ALPHA) -> tuple[int, str]:
    """(+1 a better / -1 b better / 0 neither, a sentence) for one paired row.

    A model is better only when some quantity favours it significantly and none favours the
    other; both ways is "mixed", neither way "no significant difference".
    """
    a, b = row["model_a"], row["model_b"]
    sig = significance(row, alpha)
    detail = "; ".join(_clause(row, q) for q in _QUANTITIES)
    n = f"{row.get('n_pairs', 0)} paired conformations, {row.get('n_e_res', 0)} valid for both in E_res/pct"
    favour_a = [_QUANTITIES[q][0] for q, s in sig.items() if s > 0]
    favour_b = [_QUANTITIES[q][0] for q, s in sig.items() if s < 0]
    if not row.get("n_pairs"):
        return 0, f"{a} vs {b}: no conformation evaluated by both, no comparison."
    if favour_a and favour_b:
        head, sign = f"mixed: {a} better in {', '.join(favour_a)}, {b} better in {', '.join(favour_b)}", 0
    elif favour_a:
        head, sign = f"{a} is better than {b} (significant in {', '.join(favour_a)})", 1
    elif favour_b:
        head, sign = f"{b} is better than {a} (significant in {', '.join(favour_b)})", -1
    else:
        head, sign = f"no significant difference between {a} and {b}", 0
    if 0 < row.get("n_e_res", 0) < MIN_PAIRS:
        n += f"; under {MIN_PAIRS}, too few for an E_res/pct verdict"
    return sign, f"{head}; {a} − {b}: {detail} ({n})."


# ----------------------------------------------------------------------------------------------
# The study's comparisons
# ----------------------------------------------------------------------------------------------


def _index(model: str, prefix: str) -> int | None:
    m = re.fullmatch(rf"{prefix}-(\d+)", model)
    return int(m.group(1)) if m else None


def _golf_at_budget(golf: list[str], calls: Mapping[str, float], budget) -> str:
    """The GOLF round with the most extra oracle calls not above ``budget`` (else the cheapest;
    the last round when the calls are unknown)."""
    known = [g for g in golf if pd.notna(calls.get(g))]
    if pd.isna(budget) or not known:
        return golf[-1]
    cheaper = [g for g in known if calls[g] <= budget]
    return max(cheaper, key=lambda g: (calls[g], _index(g, "golf"))) if cheaper else min(known, key=calls.get)


def study_comparisons(models: Sequence[str], calls: Mapping[str, float] | None = None) -> list[tuple[str, str, str]]:
    """(model_a, model_b, what) pairs the report tests, the first model being the one on trial.

    The last GOLF round vs the baseline; GOLF at equal or smaller budget vs each traj-<k>; GOLF vs
    each random-selection control ``random-<n>`` (golf-<n> where it exists, since the control's
    round n spends round n's budget, else by budget as for traj-k); the baseline vs mmff.
    """
    calls = dict(calls or {})
    models = [str(m) for m in models]
    golf = sorted((m for m in models if _index(m, "golf") is not None), key=lambda m: _index(m, "golf"))
    out: list[tuple[str, str, str]] = []
    if golf and "baseline" in models:
        out.append((golf[-1], "baseline", "last GOLF round vs baseline"))
    for t in sorted((m for m in models if _index(m, "traj") is not None), key=lambda m: _index(m, "traj")):
        if golf:
            out.append((_golf_at_budget(golf, calls, calls.get(t)), t, "GOLF vs traj-k at equal or smaller budget"))
    for r in sorted((m for m in models if _index(m, "random") is not None), key=lambda m: _index(m, "random")):
        if golf:
            g = f"golf-{_index(r, 'random')}"
            g = g if g in golf else _golf_at_budget(golf, calls, calls.get(r))
            out.append((g, r, "GOLF vs random-selection control"))
    if "baseline" in models and "mmff" in models:
        out.append(("baseline", "mmff", "NNP baseline vs RDKit MMFF"))
    return out


def paired_comparisons(
    finals: pd.DataFrame, calls: Mapping[str, float] | None = None, *, seed: int = BOOTSTRAP_SEED
) -> pd.DataFrame:
    """Every ``study_comparisons`` pair within each protocol, as a table of ``PAIRED_COLUMNS``."""
    rows = []
    protocols = finals["protocol"] if "protocol" in finals else pd.Series("paper", index=finals.index)
    for protocol in protocols.unique():
        f = finals[protocols == protocol]
        for a, b, what in study_comparisons(list(f["model"].astype(str).unique()), calls):
            for row in compare(f, a, b, seed=seed):
                row = {"protocol": protocol, "comparison": what, **row}
                row["verdict"] = verdict(row)[1] if row["seed"] in ("", POOLED) else ""
                rows.append(row)
    return pd.DataFrame(rows, columns=list(PAIRED_COLUMNS))


def seed_spread(summary: pd.DataFrame, columns: Sequence[str] = ("pct_mean", "pct_div", "e_res_mean", "pct_success")):
    """Per (protocol, model) over seeds: n_seeds and the mean, std (ddof=1), min and max of ``columns``.

    None when the summary has no ``seed`` column or no model has more than one seed.
    """
    if "seed" not in summary or not summary["seed"].notna().any():
        return None
    seeded = summary[summary["seed"].notna()]
    keys = [k for k in ("protocol", "model") if k in seeded]
    if seeded.groupby(keys)["seed"].nunique().max() < 2:
        return None
    agg = seeded.groupby(keys, sort=False)[list(columns)].agg(["mean", "std", "min", "max"])
    agg.columns = [f"{c}_{s}" for c, s in agg.columns]
    agg.insert(0, "n_seeds", seeded.groupby(keys, sort=False)["seed"].nunique())
    return agg.reset_index()
