"""The paper's numbers (reference/golf-paper.md §7): Table 2 of the final paper and the README
table of the authors' repository, which the report prints beside this study's rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import pandas as pd

__all__ = ["PaperRow", "PAPER_TABLE2", "PAPER_README_TABLE2", "paper_table"]


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


def paper_table(rows: Sequence[PaperRow] = PAPER_TABLE2) -> pd.DataFrame:
    """The paper's rows as a DataFrame with the column names of ``golf.study.metrics.summarise``."""
    return pd.DataFrame([r._asdict() for r in rows])
