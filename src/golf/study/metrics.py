"""Evaluation metrics of the paper: pct, pct_div, E_res, success, COV and MAT.

Definitions follow reference/golf-paper.md §6.2 (paper §3 eqs. 4-8, §6, App. F). With s_0 the start
conformation, s_t the conformation after t optimiser steps and s_opt the oracle's (DFT) optimum:

    pct(s_t)   = 100 % * (E_DFT(s_0) - E_DFT(s_t)) / (E_DFT(s_0) - E_DFT(s_opt))
    E_res(s_t) = E_DFT(s_t) - E_DFT(s_opt)                     reported in kcal/mol
    diverged   : E_DFT(s_t) > E_DFT(s_0), or no E_DFT(s_t) at all (see below)
    success    : not diverged and E_res(s_t) < 1 kcal/mol ("chemical precision")
    COV        = % of reference optima with a final geometry of the same molecule within delta (0.5 A)
    MAT        = mean over reference optima of the smallest RMSD to a final geometry of the same molecule

Honest divergence: a conformation whose trajectory went non-finite (status ``skipped_nonfinite``),
whose geometry's DFT label failed (any other status than "ok", or a NaN energy) or that has no row
at the final step counts as diverged. The denominator of pct_div is every test conformation the
model was run on, so a model that explodes cannot lower its divergence rate. Excluded, and
counted: conformations the model was not run on (``skipped_no_mmff``: MMFF lacks parameters) and
rows without a reference energy (e_start or e_opt missing).

Input: ``per_step``, a DataFrame with one row per (model, molecule_id, conformer_id, step) and the
columns listed in ``REQUIRED_COLUMNS`` (energies in Hartree, force errors in Hartree/Angstrom).
Two optional columns extend the key:

- ``protocol``: how the NNP optimised, "paper" (the paper's L-BFGS, no step cap) or e.g.
  "capped-0.02"; absent or empty means "paper". The non-neural models "mmff" and "oracle" do not
  depend on it: their rows are repeated in every protocol that lacks them.
- ``seed``: the repeat of a trained model (names stay "golf-6", the seed tells repeats apart);
  NaN for a model that has no seed (mmff, oracle). Absent: a single seed, as before.

Energies are converted to kcal/mol with ``golf.units.HARTREE_TO_KCALPERMOL`` (CODATA 627.5095); the
paper's code uses 627.5, a relative difference of 1.5e-5, far below every reported digit.

Model names: "baseline", "golf-<r>", "traj-<k>", "trajeq-<k>" (traj-k's data trained as GOLF
trains), "random-<n>", "mmff", "oracle" (golf.study.names builds, parses and orders them).

An optional per-conformation column ``train_rmsd`` (Angstrom: the test conformation's RMSD to the
nearest training conformation of its molecule, from the test set) is carried to the final rows.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from golf.data.molecule import SmilesError, addhs_template, with_coordinates
from golf.study.names import PAPER_PROTOCOL, model_sort_key
from golf.study.stats import wilson_interval
from golf.units import HARTREE_TO_KCALPERMOL

__all__ = [
    "REQUIRED_COLUMNS",
    "NONFINITE_STATUSES",
    "NOT_RUN_STATUSES",
    "SUCCESS_THRESHOLD_KCAL",
    "BELOW_REFERENCE_KCAL",
    "COV_DELTA",
    "MetricsError",
    "CovMat",
    "pct",
    "e_res_kcal",
    "group_columns",
    "normalise",
    "conformation_metrics",
    "final_conformations",
    "step_metrics",
    "best_rmsd",
    "coverage_matching",
    "summarise",
]

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = (
    "model",
    "molecule_id",
    "conformer_id",
    "step",
    "e_dft",
    "dft_status",
    "e_start",
    "e_opt",
    "e_nnp",
    "force_err",
)
NON_NEURAL = ("mmff", "oracle")  # not optimised by the NNP L-BFGS: the same rows under every protocol
NONFINITE_STATUSES = frozenset({"skipped_nonfinite"})  # golf.study.evaluate: the trajectory went non-finite
NOT_RUN_STATUSES = frozenset({"skipped_no_mmff"})  # the model could not be run on this conformation
MISSING_STEP = "missing_step"  # final_conformations: no row at the final step
SUCCESS_THRESHOLD_KCAL = 1.0  # paper §6.2: chemical precision
# E_res below this (kcal/mol) is a lower minimum than the oracle's reference: counted, since it
# counts as a success although the reference, not the model, is what fell short.
BELOW_REFERENCE_KCAL = -0.1
COV_DELTA = 0.5  # Angstrom, paper App. F / Tab. 2


class MetricsError(Exception):
    """Input that the metrics cannot be computed from (missing columns, duplicates, bad geometry)."""


class CovMat(NamedTuple):
    cov: float  # %, in [0, 100]
    mat: float  # Angstrom


# ----------------------------------------------------------------------------------------------
# Scalar formulas
# ----------------------------------------------------------------------------------------------


def pct(e0, et, eopt) -> np.ndarray:
    """Percentage of the oracle's energy drop reached: 100 * (e0 - et) / (e0 - eopt).

    Arguments are broadcastable arrays of energies in one unit (Hartree). 100 means the oracle's
    minimum energy was reached, above 100 a lower minimum, below 0 a higher energy than the start.
    Where e0 == eopt (the start already is the optimum) the ratio is undefined and NaN is returned.
    """
    e0, et, eopt = (np.asarray(x, dtype=np.float64) for x in (e0, et, eopt))
    drop = e0 - eopt
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(drop != 0.0, 100.0 * (e0 - et) / np.where(drop != 0.0, drop, 1.0), np.nan)
    return out


def e_res_kcal(et, eopt) -> np.ndarray:
    """Residual energy E(s_t) - E(s_opt), Hartree in, kcal/mol out (broadcastable arrays)."""
    return (np.asarray(et, dtype=np.float64) - np.asarray(eopt, dtype=np.float64)) * HARTREE_TO_KCALPERMOL


# ----------------------------------------------------------------------------------------------
# Per-conformation and per-step tables
# ----------------------------------------------------------------------------------------------


def protocol_column(df: pd.DataFrame) -> pd.Series:
    """The table's ``protocol`` column as str, "paper" where absent or empty."""
    if "protocol" not in df.columns:
        return pd.Series(PAPER_PROTOCOL, index=df.index, dtype=object)
    p = df["protocol"]
    return p.where(p.notna() & (p.astype(str) != ""), PAPER_PROTOCOL).astype(str)


def group_columns(df: pd.DataFrame) -> list[str]:
    """The columns that name one evaluated model: protocol, model and, where present, seed."""
    return ["protocol", "model", *(["seed"] if "seed" in df.columns else [])]


def _key(df: pd.DataFrame) -> list[str]:
    return [*group_columns(df), "molecule_id", "conformer_id"]


def _protocol_order(protocol: str) -> tuple:
    return (protocol != PAPER_PROTOCOL, protocol)


def _sort_groups(df: pd.DataFrame, extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """Rows in report order: paper protocol first, then model_sort_key, seed, ``extra`` columns."""
    cols = [c for c in ("seed", *extra) if c in df.columns]

    def key(i):
        r = df.iloc[i]
        rest = tuple((pd.isna(r[c]), 0 if pd.isna(r[c]) else r[c]) for c in cols)
        return (_protocol_order(str(r["protocol"])), model_sort_key(str(r["model"])), *rest)

    return df.iloc[sorted(range(len(df)), key=key)].reset_index(drop=True)


def normalise(per_step: pd.DataFrame) -> pd.DataFrame:
    """A checked copy of ``per_step`` with a ``protocol`` column ("paper" where absent or empty),
    and the non-neural models' rows repeated under every protocol that lacks them."""
    if not isinstance(per_step, pd.DataFrame):
        raise MetricsError(f"per_step must be a pandas DataFrame, got {type(per_step).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in per_step.columns]
    if missing:
        raise MetricsError(f"per_step lacks columns {missing}; required: {list(REQUIRED_COLUMNS)}")
    df = per_step.copy()
    df["model"] = df["model"].astype(str)
    df["protocol"] = protocol_column(df)
    if "seed" in df.columns:
        df["seed"] = pd.to_numeric(df["seed"], errors="raise")
    copies = []
    for p in df["protocol"].unique():
        present = set(df.loc[df["protocol"] == p, "model"])
        for m in NON_NEURAL:
            src = df[(df["model"] == m) & (df["protocol"] == PAPER_PROTOCOL)]
            if m not in present and len(src):
                copies.append(src.assign(protocol=p))
    if copies:
        df = pd.concat([df, *copies], ignore_index=True)
    dup = df.duplicated(_key(df) + ["step"])
    if dup.any():
        first = df.loc[dup, _key(df) + ["step"]].iloc[0].tolist()
        raise MetricsError(f"per_step has {int(dup.sum())} duplicate rows of one conformation and step, e.g. {first}")
    return df


def _flags(df: pd.DataFrame) -> pd.DataFrame:
    """Add the per-row outcome columns (see ``conformation_metrics``) to a normalised table."""
    status = df["dft_status"].astype(str).to_numpy()
    e_dft = df["e_dft"].to_numpy(dtype=np.float64)
    e0 = df["e_start"].to_numpy(dtype=np.float64)
    eopt = df["e_opt"].to_numpy(dtype=np.float64)
    e_nnp = df["e_nnp"].to_numpy(dtype=np.float64)
    not_run = np.isin(status, list(NOT_RUN_STATUSES))
    missing = status == MISSING_STEP
    # An infinite NNP energy is a blown-up trajectory even where the evaluation labelled the geometry.
    nonfinite = ~not_run & ~missing & (np.isin(status, list(NONFINITE_STATUSES)) | np.isinf(e_nnp))
    label_failed = ~not_run & ~missing & ~nonfinite & ((status != "ok") | ~np.isfinite(e_dft))
    failed = nonfinite | label_failed | missing
    no_ref = ~not_run & (~np.isfinite(e0) | ~np.isfinite(eopt))
    evaluated = ~not_run & ~no_ref
    valid = evaluated & ~failed
    with np.errstate(invalid="ignore"):
        diverged = evaluated & (failed | (valid & (e_dft > e0)))
    df["not_run"] = not_run
    df["no_reference"] = no_ref
    df["nonfinite"] = nonfinite
    df["label_failed"] = label_failed
    df["missing"] = missing
    df["failed"] = failed
    df["evaluated"] = evaluated
    df["valid"] = valid
    df["diverged"] = diverged
    df["pct"] = np.where(valid, pct(e0, e_dft, eopt), np.nan)
    df["e_res_kcal"] = np.where(valid, e_res_kcal(e_dft, eopt), np.nan)
    df["success"] = valid & ~diverged & (df["e_res_kcal"].to_numpy() < SUCCESS_THRESHOLD_KCAL)
    ok_nnp = ~failed & np.isfinite(e_nnp) & np.isfinite(e_dft)
    df["e_err_kcal"] = np.where(ok_nnp, np.abs(e_nnp - e_dft) * HARTREE_TO_KCALPERMOL, np.nan)
    return df


def conformation_metrics(per_step: pd.DataFrame) -> pd.DataFrame:
    """Per-row metrics: the normalised ``per_step`` plus the columns below.

    - ``not_run``: the model could not be run on the conformation (``NOT_RUN_STATUSES``).
    - ``no_reference``: e_start or e_opt missing, so pct, E_res and divergence are undefined.
    - ``evaluated``: neither of the above; the denominator of pct_div.
    - ``nonfinite``: the trajectory went non-finite (``NONFINITE_STATUSES`` or an infinite NNP energy).
    - ``label_failed``: the DFT label of this geometry failed (status not "ok" or e_dft not finite).
    - ``missing``: no row at the final step (``final_conformations`` only).
    - ``failed``: any of the three above. ``valid``: evaluated and not failed.
    - ``pct`` (%), ``e_res_kcal`` (kcal/mol): NaN unless valid.
    - ``diverged``: evaluated and either failed or E_DFT(s_t) > E_DFT(s_0) (strictly, paper §6.2).
    - ``success``: valid, not diverged and E_res < 1 kcal/mol.
    - ``e_err_kcal``: |e_nnp - e_dft| in kcal/mol where both are finite (NaN for non-neural models).
    """
    return _flags(normalise(per_step))


def last_step_summary(name: str, per_step: pd.DataFrame, molecules: bool = False) -> dict[str, Any]:
    """One bench row for a model's per-step table at its last step: conformations evaluated (and
    ``molecules`` among them), pct_div and success (%), failed labels, mean pct and mean E_res."""
    per = conformation_metrics(per_step)
    per = per[per["step"] == per["step"].max()]
    row: dict[str, Any] = {"model": name, "conformations": int(per["evaluated"].sum())}
    if molecules:
        row["molecules"] = int(per.loc[per["evaluated"].astype(bool), "molecule_id"].nunique())
    return row | {
        "pct_div": 100 * per["diverged"].mean(), "failed": int(per["failed"].sum()),
        "mean_pct": per["pct"].mean(), "mean_e_res": per["e_res_kcal"].mean(),
        "success": 100 * per["success"].mean(),
    }  # fmt: skip


def _final_step_of(per_model_max: pd.Series, final_step) -> dict[str, int]:
    if final_step is None:
        return {str(m): int(s) for m, s in per_model_max.items()}
    if isinstance(final_step, Mapping):
        return {str(m): int(final_step.get(m, per_model_max[m])) for m in per_model_max.index}
    return {str(m): int(final_step) for m in per_model_max.index}


def final_conformations(per_step: pd.DataFrame, final_step: int | Mapping[str, int] | None = None) -> pd.DataFrame:
    """``conformation_metrics`` rows at the final step, one per (protocol, model, [seed,]
    molecule_id, conformer_id).

    ``final_step``: one step for every model, a {model: step} dict (models not in it use their own
    last step), or None for each model's last step. A conformation without a row at that step (its
    trajectory stopped early or its row was lost) is kept with status "missing_step", so it counts
    as diverged and is never silently lost.
    """
    df = normalise(per_step)
    key = _key(df)
    finals = _final_step_of(df.groupby("model")["step"].max(), final_step)
    target = df["model"].map(finals)
    at_final = df[df["step"] == target]
    # Every conformation of every model, with its reference energies (and its distance from
    # training, when known) from any of its rows: a lost final row keeps them.
    own = [c for c in ("e_start", "e_opt", "train_rmsd") if c in df.columns]
    conformations = df.groupby(key, dropna=False, sort=False)[own].first().reset_index()
    out = conformations.merge(at_final.drop(columns=own), on=key, how="left", indicator=True)
    lost = out["_merge"] == "left_only"
    if lost.any():
        log.warning("%d conformations have no row at the final step; counted as diverged", int(lost.sum()))
        out.loc[lost, "step"] = out.loc[lost, "model"].map(finals)
        out.loc[lost, "dft_status"] = MISSING_STEP
    out = out.drop(columns="_merge")
    out["step"] = out["step"].astype(int)
    return _flags(out[[*per_step_columns(df)]].copy()).reset_index(drop=True)


def per_step_columns(df: pd.DataFrame) -> list[str]:
    """The input columns of a normalised table, required ones first."""
    return [*group_columns(df), *[c for c in df.columns if c not in group_columns(df)]]


def _q(x: pd.Series, q: float) -> float:
    x = x.dropna()
    return float(np.quantile(x, q)) if len(x) else np.nan


def _aggregate(g: pd.DataFrame) -> dict[str, Any]:
    n_eval = int(g["evaluated"].sum())
    valid = g[g["valid"]]
    kept = valid[~valid["diverged"]]
    n_div = int(g["diverged"].sum())
    n_success = int(kept["success"].sum())
    div_lo, div_hi = wilson_interval(n_div, n_eval)
    suc_lo, suc_hi = wilson_interval(n_success, len(kept))
    e_err = g["e_err_kcal"].dropna()
    f_err = g["force_err"].astype(np.float64).where(~g["failed"]).dropna()
    return {
        "n": len(g),
        "n_not_run": int(g["not_run"].sum()),
        "n_no_reference": int(g["no_reference"].sum()),
        "n_evaluated": n_eval,
        "n_nonfinite": int((g["nonfinite"] & g["evaluated"]).sum()),
        "n_label_failed": int((g["label_failed"] & g["evaluated"]).sum()),
        "n_missing": int((g["missing"] & g["evaluated"]).sum()),
        "n_failed": int((g["failed"] & g["evaluated"]).sum()),
        "n_valid": len(valid),
        "n_diverged": n_div,
        "n_diverged_energy": int(valid["diverged"].sum()),
        "n_below_reference": int((valid["e_res_kcal"] < BELOW_REFERENCE_KCAL).sum()),
        "pct_mean": float(kept["pct"].mean()) if len(kept) else np.nan,
        # ddof=0: population std over the test conformations (numpy's default); the paper does
        # not say which. It keeps a value for a single conformation instead of NaN.
        "pct_std": float(kept["pct"].std(ddof=0)) if len(kept) else np.nan,
        "pct_div": 100.0 * n_div / n_eval if n_eval else np.nan,
        "pct_div_low": div_lo,
        "pct_div_high": div_hi,
        "e_res_mean": float(kept["e_res_kcal"].mean()) if len(kept) else np.nan,
        "pct_success": 100.0 * n_success / len(kept) if len(kept) else np.nan,
        "pct_success_low": suc_lo,
        "pct_success_high": suc_hi,
        "pct_success_of_all": 100.0 * float(g["success"].sum()) / n_eval if n_eval else np.nan,
        "e_err_mean": float(e_err.mean()) if len(e_err) else np.nan,
        "e_err_median": _q(e_err, 0.5),
        "e_err_p10": _q(e_err, 0.1),
        "e_err_p90": _q(e_err, 0.9),
        "f_err_mean": float(f_err.mean()) if len(f_err) else np.nan,
        "f_err_median": _q(f_err, 0.5),
        "f_err_p10": _q(f_err, 0.1),
        "f_err_p90": _q(f_err, 0.9),
    }


COUNT_COLUMNS = (
    "n",
    "n_not_run",
    "n_no_reference",
    "n_evaluated",
    "n_nonfinite",
    "n_label_failed",
    "n_missing",
    "n_failed",
    "n_valid",
    "n_diverged",
    "n_diverged_energy",
    "n_below_reference",
)
RATE_COLUMNS = (
    "pct_mean",
    "pct_std",
    "pct_div",
    "pct_div_low",
    "pct_div_high",
    "e_res_mean",
    "pct_success",
    "pct_success_low",
    "pct_success_high",
    "pct_success_of_all",
)
STEP_COLUMNS = (
    "protocol",
    "model",
    "step",
    *COUNT_COLUMNS,
    *RATE_COLUMNS,
    "e_err_mean",
    "e_err_median",
    "e_err_p10",
    "e_err_p90",
    "f_err_mean",
    "f_err_median",
    "f_err_p10",
    "f_err_p90",
)


def _with_seed(columns: tuple[str, ...], df: pd.DataFrame) -> list[str]:
    cols = list(columns)
    return [*cols[:2], "seed", *cols[2:]] if "seed" in df.columns else cols


def step_metrics(per_step: pd.DataFrame) -> pd.DataFrame:
    """Aggregate metrics per (protocol, model, [seed,] step), rows in report order then by step.

    Columns (units in the name or below):

    - ``n``: conformations with a row at this step. Not counted in any rate: ``n_not_run`` (the
      model could not run on it) and ``n_no_reference`` (no e_start or e_opt). ``n_evaluated``:
      the rest, the denominator of pct_div. Of those, ``n_nonfinite`` (trajectory went
      non-finite), ``n_label_failed`` (DFT label failed), ``n_missing`` (no row at the final step;
      ``summarise`` only), together ``n_failed``; ``n_valid`` = n_evaluated - n_failed.
    - ``n_diverged`` = n_failed + ``n_diverged_energy`` (valid and E_DFT(s_t) > E_DFT(s_0)).
    - ``n_below_reference``: valid conformations with E_res < ``BELOW_REFERENCE_KCAL`` (-0.1
      kcal/mol): the model found a lower minimum than the oracle's reference optimisation. They
      count as successes; this says how many.
      ``pct_div`` (%) = n_diverged / n_evaluated, ``pct_div_low``/``_high`` its 95 % Wilson interval.
    - ``pct_mean``, ``pct_std`` (%), ``e_res_mean`` (kcal/mol): over the valid, non-diverged
      conformations, as paper §6 says diverged ones are excluded from these.
    - ``pct_success`` (%): E_res < 1 kcal/mol, denominator = the valid non-diverged conformations.
      The paper does not state the denominator (⚠ in reference/golf-paper.md §6.2); we follow the
      sentence "diverged conformations are excluded from mean pct, mean E_res and pct_success".
      ``pct_success_low``/``_high``: its 95 % Wilson interval. ``pct_success_of_all`` uses all
      evaluated conformations instead (diverged count as failures), the stricter reading; the two
      agree when nothing diverged.
    - ``e_err_*``: |E_NNP - E_DFT| in kcal/mol (mean, median, 10th and 90th percentile) over rows
      with both energies; NaN for non-neural models. ``f_err_*``: the input's ``force_err``
      (Hartree/Angstrom) over rows with a DFT label, same statistics. Diverged rows are included:
      these describe the NNP's accuracy along its own trajectory (paper Fig. 1), not the outcome.
    """
    cm = conformation_metrics(per_step)
    columns = _with_seed(STEP_COLUMNS, cm)
    if cm.empty:
        return pd.DataFrame(columns=columns)
    keys = [*group_columns(cm), "step"]
    rows = [dict(zip(keys, k, strict=True)) | _aggregate(g) for k, g in cm.groupby(keys, sort=False, dropna=False)]
    return _sort_groups(pd.DataFrame(rows, columns=columns), ("step",))


# ----------------------------------------------------------------------------------------------
# Geometry: RMSD, COV, MAT
# ----------------------------------------------------------------------------------------------


def _mol_with_coords(smiles: str, coords, heavy_atoms: bool):
    from rdkit import Chem

    try:
        n_atoms = addhs_template(smiles).GetNumAtoms()
    except SmilesError:
        raise MetricsError(f"RDKit cannot parse SMILES {smiles!r}") from None
    xyz = np.asarray(coords, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape != (n_atoms, 3):
        raise MetricsError(
            f"coordinates of shape {xyz.shape} do not fit {smiles!r} with hydrogens "
            f"({n_atoms} atoms, expected ({n_atoms}, 3))"
        )
    if not np.isfinite(xyz).all():
        raise MetricsError(f"non-finite coordinates for {smiles!r}")
    mol = with_coordinates(smiles, xyz)
    # RemoveHs keeps the heavy atoms' coordinates; the symmetry search without H stays small.
    return Chem.RemoveHs(mol) if heavy_atoms else mol


def best_rmsd(smiles: str, coords_a, coords_b, *, heavy_atoms: bool = True, max_matches: int = 10_000) -> float:
    """Symmetry-aware RMSD after optimal superposition, Angstrom (RDKit ``rdMolAlign.GetBestRMS``).

    ``coords_a``, ``coords_b``: (N, 3) Angstrom in the atom order of ``AddHs(MolFromSmiles(smiles))``.
    ``heavy_atoms=True`` (default) compares heavy atoms only, the convention of the conformer
    generation literature the paper's COV/MAT comes from (GeoMol, Torsional Diffusion remove H
    before GetBestRMS); with hydrogens the symmetry enumeration explodes (methyl rotors) and
    hydrogen positions dominate the value. ``max_matches`` bounds that enumeration.
    """
    from rdkit.Chem import rdMolAlign

    a = _mol_with_coords(smiles, coords_a, heavy_atoms)
    b = _mol_with_coords(smiles, coords_b, heavy_atoms)
    if a.GetNumAtoms() == 1:
        return 0.0  # one atom: always superposable
    try:
        return float(rdMolAlign.GetBestRMS(a, b, maxMatches=max_matches))
    except (RuntimeError, ValueError) as err:
        raise MetricsError(f"GetBestRMS failed for {smiles!r}: {err}") from err


def _split_value(value) -> tuple[str | None, np.ndarray]:
    """A geometry entry is (smiles, coords) or just coords."""
    if isinstance(value, tuple | list) and len(value) == 2 and isinstance(value[0], str):
        return value[0], np.asarray(value[1], dtype=np.float64)
    return None, np.asarray(value, dtype=np.float64)


def _items(geoms) -> Iterable[tuple[tuple, Any]]:
    if isinstance(geoms, Mapping):
        return geoms.items()
    return list(geoms)


def _coverage_detail(final_geoms, reference_geoms, delta: float, heavy_atoms: bool) -> dict[str, float]:
    """COV/MAT for one model; final_geoms keyed (molecule_id, conformer_id) -> (smiles, coords)."""
    finals: dict[Any, list[np.ndarray]] = defaultdict(list)
    smiles_of: dict[Any, str] = {}
    for key, value in _items(final_geoms):
        if not (isinstance(key, tuple) and len(key) == 2):
            raise MetricsError(f"final geometry key must be (molecule_id, conformer_id), got {key!r}")
        smi, xyz = _split_value(value)
        if smi is None:
            raise MetricsError(f"final geometry {key!r} needs (smiles, coordinates)")
        finals[key[0]].append(xyz)
        smiles_of[key[0]] = smi
    min_rmsd: list[float] = []
    n_ref = n_missing = 0
    for key, value in _items(reference_geoms):
        if not (isinstance(key, tuple) and len(key) == 2):
            raise MetricsError(f"reference geometry key must be (molecule_id, conformer_id), got {key!r}")
        n_ref += 1
        smi, ref_xyz = _split_value(value)
        mol_id = key[0]
        if not finals.get(mol_id):
            n_missing += 1  # no final geometry of this molecule: not covered, no MAT term
            continue
        smi = smi or smiles_of[mol_id]
        if smiles_of.get(mol_id, smi) != smi:
            raise MetricsError(f"molecule {mol_id}: reference SMILES {smi!r} != final {smiles_of[mol_id]!r}")
        min_rmsd.append(min(best_rmsd(smi, g, ref_xyz, heavy_atoms=heavy_atoms) for g in finals[mol_id]))
    if n_missing:
        log.warning("%d of %d reference conformations have no final geometry of their molecule", n_missing, n_ref)
    rmsd = np.asarray(min_rmsd)
    return {
        "cov": 100.0 * float((rmsd < delta).sum()) / n_ref if n_ref else np.nan,
        "mat": float(rmsd.mean()) if len(rmsd) else np.nan,
        "n_reference": n_ref,
        "n_cov_missing": n_missing,
    }


def coverage_matching(final_geoms, reference_geoms, delta: float = COV_DELTA, *, heavy_atoms: bool = True) -> CovMat:
    """COV (%) and MAT (Angstrom) of one model's final geometries against the reference optima.

    ``final_geoms``: {(molecule_id, conformer_id): (smiles, coords (N, 3) A)} of one model (or an
    iterable of such (key, value) pairs). ``reference_geoms``: {(molecule_id, conformer_id):
    coords or (smiles, coords)}. RMSD (``best_rmsd``) is only defined within a molecule, so each
    reference is matched against the final geometries of the same molecule (paper App. F, §6.2).
    COV = % of references with min RMSD < ``delta``; MAT = mean of the min RMSD. COV is pooled over
    all references, not averaged per molecule: the paper's formula divides by |S_r|. A reference
    whose molecule has no final geometry counts as not covered and is left out of MAT (logged).
    """
    d = _coverage_detail(final_geoms, reference_geoms, delta, heavy_atoms)
    return CovMat(d["cov"], d["mat"])


def seed_key(seed) -> float | None:
    """A seed as a dict key: None for "no seed" (NaN or None), else a float so 1 and 1.0 agree."""
    return None if seed is None or pd.isna(seed) else float(seed)


def _by_model(final_geoms) -> dict:
    """{model or (protocol, model, seed): {(molecule_id, conformer_id): geometry}}.

    Keys of ``final_geoms``: (model, molecule_id, conformer_id), valid for every protocol and seed
    of the model, or (protocol, model, seed, molecule_id, conformer_id), seed None without seeds.
    """
    per_model: dict = defaultdict(dict)
    for key, value in _items(final_geoms):
        if isinstance(key, tuple) and len(key) == 3:
            per_model[str(key[0])][(key[1], key[2])] = value
        elif isinstance(key, tuple) and len(key) == 5:
            per_model[(str(key[0]), str(key[1]), seed_key(key[2]))][(key[3], key[4])] = value
        else:
            raise MetricsError(
                "final geometry key must be (model, molecule_id, conformer_id) or "
                f"(protocol, model, seed, molecule_id, conformer_id), got {key!r}"
            )
    return per_model


# ----------------------------------------------------------------------------------------------
# Summary table
# ----------------------------------------------------------------------------------------------

SUMMARY_COLUMNS = (
    "protocol",
    "model",
    "final_step",
    *COUNT_COLUMNS,
    *RATE_COLUMNS,
    "cov_pct",
    "mat_angstrom",
    "n_cov_missing",
    "extra_oracle_calls",
)


def summarise(
    per_step: pd.DataFrame,
    final_geoms=None,
    reference_geoms=None,
    final_step: int | Mapping[str, int] | None = None,
    extra_oracle_calls: Mapping[str, float] | None = None,
    *,
    delta: float = COV_DELTA,
    heavy_atoms: bool = True,
) -> pd.DataFrame:
    """One row per (protocol, model, [seed]), the paper's Table 2 columns at the final step.

    Columns: ``protocol``, ``model``, ``seed`` (only when the input has one), ``final_step``, the
    counts and rates of ``step_metrics`` (same definitions and denominators; here ``n_missing``
    counts conformations without a row at the final step, as diverged), ``cov_pct`` (%),
    ``mat_angstrom``, ``n_cov_missing`` (references without a final geometry of their molecule),
    and ``extra_oracle_calls`` (DFT calls beyond D0 that the model's training used, from the dict
    argument keyed by model name; NaN when absent). ``final_step``: see ``final_conformations``.
    ``final_geoms``: see ``_by_model``. COV/MAT are NaN for a model without final geometries or when
    no reference geometries are given.
    """
    finals = final_conformations(per_step, final_step)
    extra = dict(extra_oracle_calls or {})
    geoms = _by_model(final_geoms) if final_geoms is not None else {}
    keys = group_columns(finals)
    rows = []
    for k, g in finals.groupby(keys, sort=False, dropna=False):
        group = dict(zip(keys, k, strict=True))
        model = str(group["model"])
        seed = seed_key(group.get("seed"))
        own = geoms.get((str(group["protocol"]), model, seed))
        if own is None and model in NON_NEURAL:  # their geometries do not depend on the protocol
            own = geoms.get((PAPER_PROTOCOL, model, seed))
        own = geoms.get(model) if own is None else own
        if reference_geoms is not None and own is not None:
            cm = _coverage_detail(own, reference_geoms, delta, heavy_atoms)
        else:
            cm = {"cov": np.nan, "mat": np.nan, "n_cov_missing": np.nan}
        agg = _aggregate(g)
        rows.append(
            group
            | {"final_step": int(g["step"].max())}
            | {c: agg[c] for c in (*COUNT_COLUMNS, *RATE_COLUMNS)}
            | {
                "cov_pct": cm["cov"],
                "mat_angstrom": cm["mat"],
                "n_cov_missing": cm["n_cov_missing"],
                "extra_oracle_calls": float(extra[model]) if model in extra else np.nan,
            }
        )
    unknown = set(extra) - {r["model"] for r in rows}
    if unknown:
        log.warning("extra_oracle_calls names models without evaluation rows: %s", sorted(unknown))
    return _sort_groups(pd.DataFrame(rows, columns=_with_seed(SUMMARY_COLUMNS, finals)))
