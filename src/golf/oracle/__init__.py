"""The oracle: labels from Psi4 (DFT, HF) or GFN-xTB (tblite), their cache, and oracle-driven
optimisation trajectories.

May import :mod:`golf.data` and :mod:`golf.units`.

- :mod:`golf.oracle.oracle`: :class:`Oracle` (tasks, statuses, the label cache).
- :mod:`golf.oracle.worker_pool`: the Psi4 processes (start, timeouts, crashes, restarts).
- :mod:`golf.oracle._psi4_worker`: the Psi4 worker, run by Psi4's interpreter (standard library,
  numpy and psi4 only); :mod:`golf.oracle._xtb_worker`: the GFN-xTB worker (numpy and tblite).
- :mod:`golf.oracle.labels`: labelling a dataset, gathering chunks, label provenance.
- :mod:`golf.oracle.trajectories`: oracle-driven L-BFGS and geomeTRIC trajectories (the test
  set's references, traj-k's data).
"""

from golf.oracle.oracle import LabelCache, Oracle, OracleResult, OracleSettings, level_of_theory
from golf.oracle.worker_pool import OracleUnavailable, find_psi4_python

__all__ = [
    "OracleUnavailable",
    "OracleSettings",
    "OracleResult",
    "LabelCache",
    "Oracle",
    "find_psi4_python",
    "level_of_theory",
]
