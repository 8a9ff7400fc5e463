"""Paired statistics: is one model better than another on the same test conformations?

Two models evaluated on the same test conformations are compared conformation by conformation
(paired). Input: ``golf.study.metrics.final_conformations`` rows (one per protocol, model, [seed,]
molecule_id, conformer_id) with the flags ``evaluated``, ``valid``, ``diverged``, ``success`` and
the value ``e_res_kcal``.

What enters each comparison (a = first model, b = second):

- **Pairs**: a and b on the same conformation and, with seeds, of the same seed (seed s of golf-r
  is fine-tuned from seed s of the baseline; a model without a seed, such as mmff, pairs with
  every seed). Only conformations evaluated by both (``evaluated``: the model was run on it and it
  has a reference) are pairs; the others are counted (``n_unpaired``), never paired.
- **Quantities** (differences a - b), each a ratio of sums over the pairs:
  ΔE_res (kcal/mol), the mean difference over the pairs valid and not diverged for **both**
  (the paper leaves diverged conformations out of E_res; ``n_e_res`` pairs);
  Δsuccess and Δdivergence (percentage points), the difference of the two proportions over every
  pair. A failed label or a non-finite trajectory counts as diverged and not successful
  (``golf.study.metrics``), so a model cannot improve by exploding.
- **Resampling unit: the test molecule.** Conformations of one molecule are not independent (a
  model that has learnt the molecule gets all of them right), so the bootstrap draws molecules
  with replacement and takes all their conformations together. Duplicating every conformation of
  a molecule changes nothing.
- **Seeds inside the interval**: with several seeds, each resample first draws seeds with
  replacement, then molecules with replacement (one draw of molecules for all drawn seeds: the
  seeds share the test molecules), and sums the drawn seeds' pairs on the drawn molecules. The
  interval thus carries seed-to-seed variation; with one seed it is exactly the molecule
  bootstrap. Each seed also gets its own row (molecule bootstrap within the seed), which is
  descriptive: no correction, no verdict.
- **Intervals and p-values**: ``N_RESAMPLES`` resamples with a fixed seed (the same numbers on
  every run); 95 % percentile interval; two-sided bootstrap p-value, twice the smaller share of
  resamples on either side of zero (counting zero on both sides), +1 corrected.
- **Family and correction**: every comparison x quantity the verdicts of one protocol draw on
  (the pooled rows; a quantity over fewer than ``MIN_MOLECULES`` molecules decides nothing and is
  left out) is one family; its p-values get Holm's step-down correction (``holm``).
- **Verdict**: a model is called better only when a Holm-adjusted p < ``ALPHA`` is in its favour
  and nothing significant is against it; significant both ways is "mixed"; otherwise "no
  significant difference".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as sps

from golf.study.names import arm_models, model_name, parse_model

__all__ = [
    "ALPHA",
    "CONFIDENCE",
    "N_RESAMPLES",
    "MIN_MOLECULES",
    "POOLED",
    "QUANTITIES",
    "PAIRED_COLUMNS",
    "StatsError",
    "Estimate",
    "wilson_interval",
    "resample_counts",
    "cluster_bootstrap",
    "bootstrap_p",
    "holm",
    "paired_frame",
    "compare",
    "holm_family",
    "significance",
    "verdict",
    "study_comparisons",
    "paired_comparisons",
    "seed_spread",
    "is_pooled",
    "format_p",
]

ALPHA = 0.05
CONFIDENCE = 0.95
N_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
# An interval over a handful of molecules is too narrow (it cannot see tails it never sampled),
# so below this many molecules a quantity is reported but decides nothing.
MIN_MOLECULES = 10
POOLED = "all"  # the seed label of the row pooled over seeds

_FLAGS = ("evaluated", "valid", "diverged", "success")
_VALUES = ("e_res_kcal",)

# quantity -> (label, +1 if larger is better for the first model, unit, digits, molecule count column)
QUANTITIES = {
    "e_res": ("E_res", -1, "kcal/mol", 2, "n_e_res_molecules"),
    "success": ("success", 1, "pp", 1, "n_molecules"),
    "diverged": ("divergence", -1, "pp", 1, "n_molecules"),
}


class StatsError(Exception):
    """Input the paired statistics cannot be computed from."""


class Estimate(NamedTuple):
    estimate: float
    low: float
    high: float
    p: float  # two-sided bootstrap p-value of "no difference"


def wilson_interval(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of the proportion k/n, in percent; (NaN, NaN) when n == 0.

    scipy's ``binomtest(...).proportion_ci(method="wilson")``: unlike the normal approximation it
    stays inside [0, 100] and does not collapse to a point at 0 or n successes.
    """
    if n <= 0:
        return np.nan, np.nan
    ci = sps.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return 100.0 * float(ci.low), 100.0 * float(ci.high)


# ----------------------------------------------------------------------------------------------
# The bootstrap
# ----------------------------------------------------------------------------------------------


def resample_counts(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """(size, n) float counts: how often each of n units is drawn in each of ``size`` resamples of
    n draws with replacement. One bincount over all resamples, no Python loop."""
    draws = rng.integers(0, n, (size, n)) + n * np.arange(size)[:, None]
    return np.bincount(draws.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)


def cluster_bootstrap(
    sums: Mapping[str, np.ndarray], n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> dict[str, np.ndarray]:
    """Resampled totals of per-(seed, molecule) sums: {name: (n_resamples,) array}.

    ``sums``: arrays of one shape (n_seeds, n_molecules). Each resample draws the molecules with
    replacement, then the seeds with replacement, and totals ``w_seed[s] * w_molecule[m] *
    sums[s, m]``; every array gets the same draws, so ratios of two totals are resampled ratios.
    Molecules are drawn first so that one seed (whose draw is always that seed) gives exactly the
    molecule bootstrap of the same ``seed``.
    """
    shapes = {a.shape for a in sums.values()}
    if len(shapes) != 1:
        raise StatsError(f"per-(seed, molecule) sums of different shapes: {sorted(shapes)}")
    ((n_seeds, n_molecules),) = shapes
    rng = np.random.default_rng(seed)
    w_mol = resample_counts(rng, n_molecules, n_resamples)
    w_seed = resample_counts(rng, n_seeds, n_resamples)
    return {k: ((w_seed @ a) * w_mol).sum(axis=1) for k, a in sums.items()}


def bootstrap_p(samples: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "the quantity is zero" from its resampled values.

    Twice the smaller share of resamples on either side of zero, a resample at exactly zero
    counting on both sides (conservative for the many ties of rate differences), with the +1 of
    the observed sample, at most 1. NaN resamples (an empty denominator) are left out. It is below
    1 - CONFIDENCE exactly when the percentile interval excludes zero (up to the +1).
    """
    x = np.asarray(samples, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return np.nan
    below, above = int((x <= 0).sum()), int((x >= 0).sum())
    return float(min(1.0, 2.0 * (min(below, above) + 1) / (len(x) + 1)))


def _ratio(num, den) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, np.asarray(num, dtype=np.float64) / np.where(den > 0, den, 1.0), np.nan)


def _estimate(num: np.ndarray, den: np.ndarray, boot: dict, key: str, scale: float = 1.0) -> Estimate:
    """Point estimate sum(num)/sum(den) with its percentile interval and bootstrap p."""
    estimate = float(_ratio(num.sum(), den.sum())) * scale
    samples = _ratio(boot[key], boot[f"{key}_den"]) * scale
    if not np.isfinite(estimate) or not np.isfinite(samples).any():
        return Estimate(estimate, np.nan, np.nan, np.nan)
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.nanpercentile(samples, [tail, 100 - tail])
    return Estimate(estimate, float(low), float(high), bootstrap_p(samples))


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and is not counted in the family).

    The i-th smallest of m p-values is multiplied by m - i + 1, the running maximum keeps the
    order, and the result is capped at 1: a family-wise error rate of alpha for any dependence.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if len(ok) == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    scaled = np.minimum(1.0, p[order] * (m - np.arange(m)))
    out[order] = np.maximum.accumulate(scaled)
    return out


# ----------------------------------------------------------------------------------------------
# Pairs
# ----------------------------------------------------------------------------------------------


def _seed_label(x) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)) or pd.isna(x):
        return ""
    return str(int(x)) if float(x).is_integer() else str(x)


def _seed_order(s: str) -> tuple:
    return (len(s), s)


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
    ``<flag>_b`` for evaluated, valid, diverged, success and e_res_kcal. Pairs are formed within a
    seed; a model without seeds pairs with every seed of the other.
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


def _cluster_sums(pairs: pd.DataFrame) -> tuple[list[str], dict[str, np.ndarray]]:
    """The seeds in order and per-(seed, molecule) sums of the pairs, each (n_seeds, n_molecules).

    Keys: ``n`` (pairs), ``n_e_res`` (pairs valid and not diverged for both), ``e_res`` (their
    summed E_res differences, kcal/mol) and, for success and diverged, the summed differences and
    each model's count (``success_a`` ...). Every quantity is a ratio of two of these.
    """
    seeds = sorted(pairs["seed"].unique(), key=_seed_order)
    molecules = np.unique(pairs["molecule_id"].to_numpy())
    s = pd.Categorical(pairs["seed"], categories=seeds).codes.astype(np.int64)
    m = np.searchsorted(molecules, pairs["molecule_id"].to_numpy())
    flat, shape = s * len(molecules) + m, (len(seeds), len(molecules))

    def total(values) -> np.ndarray:
        w = np.asarray(values, dtype=np.float64)
        return np.bincount(flat, weights=w, minlength=shape[0] * shape[1]).reshape(shape)

    kept = (pairs["valid_a"] & ~pairs["diverged_a"] & pairs["valid_b"] & ~pairs["diverged_b"]).to_numpy()
    diff = np.where(kept, pairs["e_res_kcal_a"].to_numpy(np.float64) - pairs["e_res_kcal_b"].to_numpy(np.float64), 0)
    sums = {"n": total(np.ones(len(pairs))), "n_e_res": total(kept), "e_res": total(diff)}
    for flag in ("success", "diverged"):
        a, b = pairs[f"{flag}_a"].to_numpy(np.float64), pairs[f"{flag}_b"].to_numpy(np.float64)
        sums |= {flag: total(a - b), f"{flag}_a": total(a), f"{flag}_b": total(b)}
    return seeds, sums


PAIRED_COLUMNS = (
    "protocol",
    "model_a",
    "model_b",
    "comparison",
    "seed",
    "n_seeds",
    "n_molecules",
    "n_conformations",
    "n_pairs",
    "n_unpaired",
    "n_e_res",
    "n_e_res_molecules",
    "e_res_diff",
    "e_res_low",
    "e_res_high",
    "e_res_p",
    "e_res_p_holm",
    "success_a",
    "success_b",
    "success_diff",
    "success_low",
    "success_high",
    "success_p",
    "success_p_holm",
    "diverged_a",
    "diverged_b",
    "diverged_diff",
    "diverged_low",
    "diverged_high",
    "diverged_p",
    "diverged_p_holm",
    "family_size",
    "verdict",
)


def _row(pairs: pd.DataFrame, n_resamples: int, seed: int) -> dict:
    """Counts, estimates, intervals and raw p-values of one set of pairs (one seed or all)."""
    seeds, sums = _cluster_sums(pairs)
    out: dict = {
        "n_seeds": len(seeds),
        "n_molecules": int(sums["n"].any(axis=0).sum()),
        "n_conformations": int(len(pairs[["molecule_id", "conformer_id"]].drop_duplicates())),
        "n_pairs": len(pairs),
        "n_e_res": int(sums["n_e_res"].sum()),
        "n_e_res_molecules": int(sums["n_e_res"].any(axis=0).sum()),
    }
    if not len(pairs):
        return out
    n, n_e = sums["n"], sums["n_e_res"]
    boot = cluster_bootstrap(
        {"e_res": sums["e_res"], "e_res_den": n_e, "success": sums["success"], "success_den": n,
         "diverged": sums["diverged"], "diverged_den": n},
        n_resamples, seed,
    )  # fmt: skip
    est = {"e_res": _estimate(sums["e_res"], n_e, boot, "e_res")}
    for flag in ("success", "diverged"):
        est[flag] = _estimate(sums[flag], n, boot, flag, scale=100.0)
        out[f"{flag}_a"] = 100.0 * sums[f"{flag}_a"].sum() / n.sum()
        out[f"{flag}_b"] = 100.0 * sums[f"{flag}_b"].sum() / n.sum()
    for q, e in est.items():
        out |= {f"{q}_diff": e.estimate, f"{q}_low": e.low, f"{q}_high": e.high, f"{q}_p": e.p}
    return out


def compare(
    finals: pd.DataFrame, a: str, b: str, *, n_resamples: int = N_RESAMPLES, rng_seed: int = BOOTSTRAP_SEED
) -> list[dict]:
    """Paired comparison of ``a`` against ``b`` (differences are a - b): one row per seed when
    there are several (molecule bootstrap within the seed), then the pooled row (``seed`` = "all":
    seeds and molecules resampled; the only row without seeds, with ``seed`` = "" or the one seed).
    Columns as in ``PAIRED_COLUMNS`` less protocol, comparison, the Holm columns and verdict
    (:func:`holm_family` adds those over a family of rows)."""
    pairs, n_unpaired = paired_frame(finals, a, b)
    seeds = sorted(pairs["seed"].unique(), key=_seed_order)
    rows = []
    if len(seeds) > 1:
        for s in seeds:
            own = pairs[pairs["seed"] == s]
            rows.append(
                {"model_a": a, "model_b": b, "seed": s, "n_unpaired": np.nan, **_row(own, n_resamples, rng_seed)}
            )
    label = POOLED if len(seeds) > 1 else (seeds[0] if seeds else "")
    pooled = _row(pairs, n_resamples, rng_seed)
    rows.append({"model_a": a, "model_b": b, "seed": label, "n_unpaired": n_unpaired, **pooled})
    return rows


# ----------------------------------------------------------------------------------------------
# Family, significance and verdict
# ----------------------------------------------------------------------------------------------


def _decides(row: Mapping, q: str) -> bool:
    """Whether quantity ``q`` of ``row`` can decide anything: a p-value over enough molecules."""
    n = row.get(QUANTITIES[q][4], 0)
    return bool(pd.notna(row.get(f"{q}_p")) and pd.notna(n) and n >= MIN_MOLECULES)


def holm_family(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with ``<quantity>_p_holm`` and ``family_size``: Holm's correction over every
    (row, quantity) that can decide (a p-value over at least ``MIN_MOLECULES`` molecules). The
    rows given are the family; the others get NaN."""
    rows = rows.reset_index(drop=True).copy()
    tests = [(i, q) for i, r in rows.iterrows() for q in QUANTITIES if _decides(r, q)]
    adjusted = holm([rows.at[i, f"{q}_p"] for i, q in tests])
    for q in QUANTITIES:
        rows[f"{q}_p_holm"] = np.nan
    for (i, q), p in zip(tests, adjusted, strict=True):
        rows.at[i, f"{q}_p_holm"] = p
    rows["family_size"] = len(tests)
    return rows


def significance(row: Mapping, alpha: float = ALPHA) -> dict[str, int]:
    """{quantity: +1 (favours model_a), -1 (favours model_b), 0 (not significant)}.

    Significant: a Holm-adjusted p (``<quantity>_p_holm``, see :func:`holm_family`) below
    ``alpha`` over at least ``MIN_MOLECULES`` molecules. A row outside a family (NaN) decides
    nothing.
    """
    out = {}
    for q, (_, better, *_) in QUANTITIES.items():
        diff, p = row.get(f"{q}_diff"), row.get(f"{q}_p_holm", np.nan)
        sig = _decides(row, q) and pd.notna(p) and p < alpha and pd.notna(diff) and diff != 0
        out[q] = int(np.sign(diff) * better) if sig else 0
    return out


def _fmt(x, digits: int = 1) -> str:
    return "–" if x is None or pd.isna(x) else f"{float(x):+.{digits}f}"


def format_p(p) -> str:
    return "–" if p is None or pd.isna(p) else f"{float(p):.2g}"


def _clause(row: Mapping, q: str) -> str:
    label, _, unit, digits, _ = QUANTITIES[q]
    ci = f"[{_fmt(row.get(f'{q}_low'), digits)}, {_fmt(row.get(f'{q}_high'), digits)}]"
    text = f"Δ{label} {_fmt(row.get(f'{q}_diff'), digits)} {unit} {ci} (p = {format_p(row.get(f'{q}_p'))}"
    holm_p = row.get(f"{q}_p_holm", np.nan)
    return text + (f", Holm {format_p(holm_p)})" if pd.notna(holm_p) else ", decides nothing)")


def verdict(row: Mapping, alpha: float = ALPHA) -> tuple[int, str]:
    """(+1 a better / -1 b better / 0 neither, a sentence) for one paired row.

    A model is better only when some quantity favours it with a Holm-adjusted p < ``alpha`` and
    none favours the other; both ways is "mixed", neither way "no significant difference".
    """
    a, b = row["model_a"], row["model_b"]
    if not row.get("n_pairs"):
        return 0, f"{a} vs {b}: no conformation evaluated by both, no comparison."
    sig = significance(row, alpha)
    favour_a = [QUANTITIES[q][0] for q, s in sig.items() if s > 0]
    favour_b = [QUANTITIES[q][0] for q, s in sig.items() if s < 0]
    if favour_a and favour_b:
        head, sign = f"mixed: {a} better in {', '.join(favour_a)} but {b} better in {', '.join(favour_b)}", 0
    elif favour_a:
        head, sign = f"{a} is better than {b} (Holm-adjusted p < {alpha:g} in {', '.join(favour_a)})", 1
    elif favour_b:
        head, sign = f"{b} is better than {a} (Holm-adjusted p < {alpha:g} in {', '.join(favour_b)})", -1
    else:
        head, sign = f"no significant difference between {a} and {b}", 0
    detail = "; ".join(_clause(row, q) for q in QUANTITIES)
    n = (
        f"{_int(row.get('n_molecules'))} molecules, {_int(row.get('n_conformations'))} conformations, "
        f"{_int(row.get('n_seeds'))} seed(s); E_res over {_int(row.get('n_e_res'))} pairs valid for both"
    )
    if any(not _decides(row, q) for q in QUANTITIES):
        n += f"; a quantity over fewer than {MIN_MOLECULES} molecules decides nothing"
    return sign, f"{head}; {a} − {b}: {detail} ({n})."


def _int(x) -> str:
    return "–" if x is None or pd.isna(x) else str(int(x))


# ----------------------------------------------------------------------------------------------
# The study's comparisons
# ----------------------------------------------------------------------------------------------


def _number(model: str) -> int:
    """The round or budget of a numbered model."""
    return parse_model(model)[1]


def _golf_at_budget(golf: list[str], calls: Mapping[str, float], budget) -> str:
    """The GOLF round with the most extra oracle calls not above ``budget`` (else the cheapest;
    the last round when the calls are unknown)."""
    known = [g for g in golf if pd.notna(calls.get(g))]
    if pd.isna(budget) or not known:
        return golf[-1]
    cheaper = [g for g in known if calls[g] <= budget]
    return max(cheaper, key=lambda g: (calls[g], _number(g))) if cheaper else min(known, key=calls.get)


def study_comparisons(models: Sequence[str], calls: Mapping[str, float] | None = None) -> list[tuple[str, str, str]]:
    """(model_a, model_b, what) pairs the report tests, the first model being the one on trial.

    The last GOLF round vs the baseline; GOLF at equal or smaller budget vs each traj-<k> and each
    trajeq-<k> (traj-k's trajectories trained as GOLF trains); GOLF vs each random-selection
    control ``random-<n>`` (golf-<n> where it exists, since the control's round n spends round
    n's budget, else by budget as for traj-k); the baseline vs mmff; traj-<k> vs trajeq-<k> (the
    same data, two training schemes). Arms that are absent are skipped.
    """
    calls = dict(calls or {})
    models = [str(m) for m in models]
    golf = arm_models(models, "golf")
    out: list[tuple[str, str, str]] = []
    if golf and "baseline" in models:
        out.append((golf[-1], "baseline", "last GOLF round vs baseline"))
    for arm, what in (("traj", "traj-k"), ("trajeq", "trajeq-k (traj-k's data trained as GOLF)")):
        for t in arm_models(models, arm) if golf else []:
            out.append((_golf_at_budget(golf, calls, calls.get(t)), t, f"GOLF vs {what} at equal or smaller budget"))
    for r in arm_models(models, "random") if golf else []:
        g = model_name("golf", _number(r))
        g = g if g in golf else _golf_at_budget(golf, calls, calls.get(r))
        out.append((g, r, "GOLF vs random-selection control"))
    if "baseline" in models and "mmff" in models:
        out.append(("baseline", "mmff", "NNP baseline vs RDKit MMFF"))
    for t in arm_models(models, "trajeq"):
        if (traj := model_name("traj", _number(t))) in models:
            out.append((traj, t, "traj-k vs trajeq-k: the same data, two training schemes"))
    return out


def paired_comparisons(
    finals: pd.DataFrame,
    calls: Mapping[str, float] | None = None,
    *,
    n_resamples: int = N_RESAMPLES,
    rng_seed: int = BOOTSTRAP_SEED,
) -> pd.DataFrame:
    """Every ``study_comparisons`` pair within each protocol, as a table of ``PAIRED_COLUMNS``.

    The pooled rows of one protocol are one family (:func:`holm_family`) and get verdicts; the
    per-seed rows keep raw p-values only.
    """
    out = []
    protocols = finals["protocol"] if "protocol" in finals else pd.Series("paper", index=finals.index)
    for protocol in protocols.unique():
        f = finals[protocols == protocol]
        per_seed, pooled = [], []
        for a, b, what in study_comparisons(list(f["model"].astype(str).unique()), calls):
            *seeds, last = compare(f, a, b, n_resamples=n_resamples, rng_seed=rng_seed)
            per_seed.append([{"protocol": protocol, "comparison": what, **r, "verdict": ""} for r in seeds])
            pooled.append({"protocol": protocol, "comparison": what, **last})
        if not pooled:
            continue
        family = holm_family(pd.DataFrame(pooled))
        family["verdict"] = [verdict(r)[1] for _, r in family.iterrows()]
        for seeds, (_, last) in zip(per_seed, family.iterrows(), strict=True):
            out += [*seeds, last.to_dict()]  # a comparison's seeds, then its pooled row
    table = pd.DataFrame(out, columns=list(PAIRED_COLUMNS))
    # counts stay integers in paired.csv although per-seed rows have none of these two
    return table.astype({"n_unpaired": "Int64", "family_size": "Int64"})


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


def is_pooled(paired: pd.DataFrame) -> pd.Series:
    """Which rows of a ``paired_comparisons`` table carry verdicts (pooled over seeds, in a family);
    the others are per-seed rows."""
    return paired["family_size"].notna()
