"""Evaluation metrics of the paper: pct, pct_div, E_res, pct_success, COV and MAT.

Definitions follow reference/golf-paper.md §6.2 (paper §3 eqs. 4-8, §6, App. F). With s_0 the start
conformation, s_t the conformation after t optimiser steps and s_opt the oracle's (DFT) optimum:

    pct(s_t)   = 100 % * (E_DFT(s_0) - E_DFT(s_t)) / (E_DFT(s_0) - E_DFT(s_opt))
    E_res(s_t) = E_DFT(s_t) - E_DFT(s_opt)                     reported in kcal/mol
    diverged   : E_DFT(s_t) > E_DFT(s_0)
    success    : E_res(s_t) < 1 kcal/mol ("chemical precision")
    COV        = % of reference optima with a final geometry of the same molecule within delta (0.5 A)
    MAT        = mean over reference optima of the smallest RMSD to a final geometry of the same molecule

Input: ``per_step``, a DataFrame with one row per (model, molecule_id, conformer_id, step) and the
columns listed in ``REQUIRED_COLUMNS`` (energies in Hartree, force errors in Hartree/Angstrom).
Energies are converted to kcal/mol with ``golf.units.HARTREE_TO_KCALPERMOL`` (CODATA 627.5095); the
paper's code uses 627.5, a relative difference of 1.5e-5, far below every reported digit.

Model names: "baseline", "golf-<r>", "traj-<k>", "mmff", "oracle"; ``model_sort_key`` orders them.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from golf.units import HARTREE_TO_KCALPERMOL

__all__ = [
    "REQUIRED_COLUMNS",
    "SUCCESS_THRESHOLD_KCAL",
    "COV_DELTA",
    "MetricsError",
    "CovMat",
    "pct",
    "e_res_kcal",
    "model_sort_key",
    "conformation_metrics",
    "final_conformations",
    "step_metrics",
    "best_rmsd",
    "coverage_matching",
    "coverage_matching_by_model",
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
KEY = ["model", "molecule_id", "conformer_id"]
SUCCESS_THRESHOLD_KCAL = 1.0  # paper §6.2: chemical precision
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

_MODEL_ORDER = {"oracle": 0, "mmff": 1, "baseline": 2}


def model_sort_key(model: str) -> tuple:
    """Order for tables and legends: oracle, mmff, baseline, golf-1.., traj-<k> ascending, others."""
    if model in _MODEL_ORDER:
        return (_MODEL_ORDER[model], 0, model)
    m = re.fullmatch(r"golf-(\d+)", model)
    if m:
        return (3, int(m.group(1)), model)
    m = re.fullmatch(r"traj-(\d+)", model)
    if m:
        return (4, int(m.group(1)), model)
    return (5, 0, model)


def _check_per_step(per_step: pd.DataFrame) -> None:
    if not isinstance(per_step, pd.DataFrame):
        raise MetricsError(f"per_step must be a pandas DataFrame, got {type(per_step).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in per_step.columns]
    if missing:
        raise MetricsError(f"per_step lacks columns {missing}; required: {list(REQUIRED_COLUMNS)}")
    dup = per_step.duplicated(KEY + ["step"])
    if dup.any():
        first = per_step.loc[dup, KEY + ["step"]].iloc[0].tolist()
        raise MetricsError(
            f"per_step has {int(dup.sum())} duplicate (model, molecule, conformer, step) rows, e.g. {first}"
        )


def conformation_metrics(per_step: pd.DataFrame) -> pd.DataFrame:
    """Per-row metrics: ``per_step`` plus the columns below (same rows, same order).

    - ``failed``: the DFT label at this step failed (status not "ok" or e_dft not finite).
    - ``no_reference``: e_start or e_opt missing, so pct and E_res are undefined.
    - ``valid``: neither of the above; only valid rows enter pct, pct_div, E_res and success.
    - ``pct`` (%), ``e_res_kcal`` (kcal/mol): NaN unless valid.
    - ``diverged``: valid and E_DFT(s_t) > E_DFT(s_0) (strictly, paper §6.2).
    - ``success``: valid, not diverged and E_res < 1 kcal/mol.
    - ``e_err_kcal``: |e_nnp - e_dft| in kcal/mol where both are finite (NaN for non-neural models).
    """
    _check_per_step(per_step)
    df = per_step.copy()
    e_dft = df["e_dft"].to_numpy(dtype=np.float64)
    e0 = df["e_start"].to_numpy(dtype=np.float64)
    eopt = df["e_opt"].to_numpy(dtype=np.float64)
    failed = (df["dft_status"].astype(str).to_numpy() != "ok") | ~np.isfinite(e_dft)
    no_ref = ~np.isfinite(e0) | ~np.isfinite(eopt)
    valid = ~failed & ~no_ref
    df["failed"] = failed
    df["no_reference"] = no_ref
    df["valid"] = valid
    df["pct"] = np.where(valid, pct(e0, e_dft, eopt), np.nan)
    df["e_res_kcal"] = np.where(valid, e_res_kcal(e_dft, eopt), np.nan)
    df["diverged"] = valid & (e_dft > e0)
    df["success"] = valid & ~df["diverged"].to_numpy() & (df["e_res_kcal"].to_numpy() < SUCCESS_THRESHOLD_KCAL)
    e_nnp = df["e_nnp"].to_numpy(dtype=np.float64)
    df["e_err_kcal"] = np.where(~failed & np.isfinite(e_nnp), np.abs(e_nnp - e_dft) * HARTREE_TO_KCALPERMOL, np.nan)
    return df


def _final_step_of(per_model_max: pd.Series, final_step) -> dict[str, int]:
    if final_step is None:
        return {str(m): int(s) for m, s in per_model_max.items()}
    if isinstance(final_step, Mapping):
        return {str(m): int(final_step.get(m, per_model_max[m])) for m in per_model_max.index}
    return {str(m): int(final_step) for m in per_model_max.index}


def final_conformations(per_step: pd.DataFrame, final_step: int | Mapping[str, int] | None = None) -> pd.DataFrame:
    """``conformation_metrics`` rows at the final step, one per (model, molecule_id, conformer_id).

    ``final_step``: one step for every model, a {model: step} dict (models not in it use their own
    last step), or None for each model's last step. A conformation without a row at that step (its
    trajectory stopped early) is kept as a failed row, so it is counted and never silently lost.
    """
    cm = conformation_metrics(per_step)
    finals = _final_step_of(cm.groupby("model")["step"].max(), final_step)
    target = cm["model"].astype(str).map(finals)
    at_final = cm[cm["step"] == target]
    conformations = cm[KEY].drop_duplicates()
    out = conformations.merge(at_final, on=KEY, how="left", indicator=True)
    lost = out["_merge"] == "left_only"
    if lost.any():
        log.warning("%d conformations have no row at the final step; counted as failed", int(lost.sum()))
        out.loc[lost, "step"] = out.loc[lost, "model"].astype(str).map(finals)
        out.loc[lost, "dft_status"] = "missing_step"
        for col in ("failed", "valid", "diverged", "success", "no_reference"):
            out[col] = out[col].astype("boolean").fillna(col == "failed").astype(bool)
    out = out.drop(columns="_merge")
    out["step"] = out["step"].astype(int)
    return out.reset_index(drop=True)


def _q(x: pd.Series, q: float) -> float:
    x = x.dropna()
    return float(np.quantile(x, q)) if len(x) else np.nan


def _aggregate(g: pd.DataFrame) -> dict[str, Any]:
    n = len(g)
    n_failed = int(g["failed"].sum())
    valid = g[g["valid"]]
    n_valid = len(valid)
    kept = valid[~valid["diverged"]]
    n_div = int(valid["diverged"].sum())
    e_err = g["e_err_kcal"].dropna()
    f_err = g["force_err"].astype(np.float64).where(~g["failed"]).dropna()
    return {
        "n": n,
        "n_failed": n_failed,
        "n_no_reference": int((g["no_reference"] & ~g["failed"]).sum()),
        "n_valid": n_valid,
        "n_diverged": n_div,
        "pct_mean": float(kept["pct"].mean()) if len(kept) else np.nan,
        # ddof=0: population std over the test conformations (numpy's default); the paper does
        # not say which. It keeps a value for a single conformation instead of NaN.
        "pct_std": float(kept["pct"].std(ddof=0)) if len(kept) else np.nan,
        "pct_div": 100.0 * n_div / n_valid if n_valid else np.nan,
        "e_res_mean": float(kept["e_res_kcal"].mean()) if len(kept) else np.nan,
        "pct_success": 100.0 * float(kept["success"].sum()) / len(kept) if len(kept) else np.nan,
        "pct_success_of_valid": 100.0 * float(valid["success"].sum()) / n_valid if n_valid else np.nan,
        "e_err_mean": float(e_err.mean()) if len(e_err) else np.nan,
        "e_err_median": _q(e_err, 0.5),
        "e_err_p10": _q(e_err, 0.1),
        "e_err_p90": _q(e_err, 0.9),
        "f_err_mean": float(f_err.mean()) if len(f_err) else np.nan,
        "f_err_median": _q(f_err, 0.5),
        "f_err_p10": _q(f_err, 0.1),
        "f_err_p90": _q(f_err, 0.9),
    }


STEP_COLUMNS = (
    "model",
    "step",
    "n",
    "n_failed",
    "n_no_reference",
    "n_valid",
    "n_diverged",
    "pct_mean",
    "pct_std",
    "pct_div",
    "e_res_mean",
    "pct_success",
    "pct_success_of_valid",
    "e_err_mean",
    "e_err_median",
    "e_err_p10",
    "e_err_p90",
    "f_err_mean",
    "f_err_median",
    "f_err_p10",
    "f_err_p90",
)


def step_metrics(per_step: pd.DataFrame) -> pd.DataFrame:
    """Aggregate metrics per (model, step), rows ordered by ``model_sort_key`` then step.

    Columns (units in the name or below):

    - ``n``: conformations with a row at this step; ``n_failed``: of those, DFT label failed (status
      not "ok" or NaN energy). Failed labels are reported here and excluded from every energy
      metric, never silently dropped. ``n_no_reference``: labelled but e_start or e_opt missing.
      ``n_valid`` = n - n_failed - n_no_reference; ``n_diverged``: valid and E_DFT(s_t) > E_DFT(s_0).
    - ``pct_div`` (%) = n_diverged / n_valid. Denominator: conformations whose divergence can be
      decided, i.e. with a valid DFT label; a failed label is neither diverged nor converged.
    - ``pct_mean``, ``pct_std`` (%), ``e_res_mean`` (kcal/mol): over the valid, non-diverged
      conformations, as paper §6 says diverged ones are excluded from these.
    - ``pct_success`` (%): E_res < 1 kcal/mol, denominator = the valid non-diverged conformations.
      The paper does not state the denominator (⚠ in reference/golf-paper.md §6.2); we follow the
      sentence "diverged conformations are excluded from mean pct, mean E_res and pct_success".
      ``pct_success_of_valid`` uses all valid conformations instead (diverged count as failures),
      which is the stricter reading; the two agree when nothing diverged.
    - ``e_err_*``: |E_NNP - E_DFT| in kcal/mol (mean, median, 10th and 90th percentile) over rows
      with both energies; NaN for non-neural models. ``f_err_*``: the input's ``force_err``
      (Hartree/Angstrom) over rows with a DFT label, same statistics. Diverged rows are included:
      these describe the NNP's accuracy along its own trajectory (paper Fig. 1), not the outcome.
    """
    cm = conformation_metrics(per_step)
    if cm.empty:
        return pd.DataFrame(columns=list(STEP_COLUMNS))
    rows = []
    for (model, step), g in cm.groupby(["model", "step"], sort=False):
        rows.append({"model": str(model), "step": int(step), **_aggregate(g)})
    out = pd.DataFrame(rows, columns=list(STEP_COLUMNS))
    order = sorted(range(len(out)), key=lambda i: (model_sort_key(out["model"].iat[i]), out["step"].iat[i]))
    return out.iloc[order].reset_index(drop=True)


# ----------------------------------------------------------------------------------------------
# Geometry: RMSD, COV, MAT
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _template(smiles: str):
    """AddHs(MolFromSmiles(smiles)): the atom order of every conformation (golf.data contract).

    Cached (parsing dominates for small molecules); callers copy it before adding coordinates.
    """
    from rdkit import Chem

    parsed = Chem.MolFromSmiles(smiles)
    if parsed is None:
        raise MetricsError(f"RDKit cannot parse SMILES {smiles!r}")
    return Chem.AddHs(parsed)


def _mol_with_coords(smiles: str, coords, heavy_atoms: bool):
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    template = _template(smiles)
    xyz = np.asarray(coords, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape != (template.GetNumAtoms(), 3):
        raise MetricsError(
            f"coordinates of shape {xyz.shape} do not fit {smiles!r} with hydrogens "
            f"({template.GetNumAtoms()} atoms, expected ({template.GetNumAtoms()}, 3))"
        )
    if not np.isfinite(xyz).all():
        raise MetricsError(f"non-finite coordinates for {smiles!r}")
    mol = Chem.Mol(template)
    conf = Chem.Conformer(mol.GetNumAtoms())
    for i, (x, y, z) in enumerate(xyz):
        conf.SetAtomPosition(i, Point3D(float(x), float(y), float(z)))
    mol.RemoveAllConformers()
    mol.AddConformer(conf, assignId=True)
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


def _by_model(final_geoms) -> dict[str, dict]:
    per_model: dict[str, dict] = defaultdict(dict)
    for key, value in _items(final_geoms):
        if not (isinstance(key, tuple) and len(key) == 3):
            raise MetricsError(f"final geometry key must be (model, molecule_id, conformer_id), got {key!r}")
        per_model[str(key[0])][(key[1], key[2])] = value
    return per_model


def coverage_matching_by_model(
    final_geoms, reference_geoms, delta: float = COV_DELTA, *, heavy_atoms: bool = True
) -> dict[str, CovMat]:
    """``coverage_matching`` for every model of {(model, molecule_id, conformer_id): (smiles, coords)}."""
    return {
        m: coverage_matching(g, reference_geoms, delta, heavy_atoms=heavy_atoms)
        for m, g in _by_model(final_geoms).items()
    }


# ----------------------------------------------------------------------------------------------
# Summary table
# ----------------------------------------------------------------------------------------------

SUMMARY_COLUMNS = (
    "model",
    "final_step",
    "n",
    "n_failed",
    "n_valid",
    "pct_mean",
    "pct_std",
    "pct_div",
    "e_res_mean",
    "pct_success",
    "pct_success_of_valid",
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
    """One row per model, the paper's Table 2 columns at the final step (paper §6, Tab. 2).

    Columns: ``model``, ``final_step``, ``n``, ``n_failed``, ``n_valid``, ``pct_mean``,
    ``pct_std``, ``pct_div``, ``e_res_mean``, ``pct_success``, ``pct_success_of_valid`` (same
    definitions and denominators as ``step_metrics``), ``cov_pct`` (%), ``mat_angstrom``,
    ``n_cov_missing`` (references without a final geometry of their molecule), and
    ``extra_oracle_calls`` (DFT calls beyond D0 that the model's training used, from the dict
    argument; NaN when absent). Conformations lacking a row at the final step count as failed.
    ``final_step``: see ``final_conformations``. COV/MAT are NaN for a model without final geometries
    or when no reference geometries are given.
    """
    finals = final_conformations(per_step, final_step)
    extra = dict(extra_oracle_calls or {})
    geoms_by_model = _by_model(final_geoms) if final_geoms is not None else {}
    rows = []
    for model, g in finals.groupby("model", sort=False):
        model = str(model)
        agg = _aggregate(g)
        if reference_geoms is not None and model in geoms_by_model:
            cm = _coverage_detail(geoms_by_model[model], reference_geoms, delta, heavy_atoms)
        else:
            cm = {"cov": np.nan, "mat": np.nan, "n_cov_missing": np.nan}
        rows.append(
            {
                "model": model,
                "final_step": int(g["step"].max()),
                **{k: agg[k] for k in SUMMARY_COLUMNS if k in agg},
                "cov_pct": cm["cov"],
                "mat_angstrom": cm["mat"],
                "n_cov_missing": cm["n_cov_missing"],
                "extra_oracle_calls": float(extra[model]) if model in extra else np.nan,
            }
        )
    unknown = set(extra) - {r["model"] for r in rows}
    if unknown:
        log.warning("extra_oracle_calls names models without evaluation rows: %s", sorted(unknown))
    out = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    out = out.iloc[sorted(range(len(out)), key=lambda i: model_sort_key(out["model"].iat[i]))]
    return out.reset_index(drop=True)
