"""GOLF's active learning: NNP trajectories with the MMFF stop, selection, round statistics.

May import :mod:`golf.data`, :mod:`golf.chem`, :mod:`golf.nnp`, :mod:`golf.optim` and
:mod:`golf.units`.

- :mod:`golf.active.explore`: a round's NNP trajectories (and the random control's continuation).
- :mod:`golf.active.select`: where a trajectory ends and which frame goes to the oracle.
- :mod:`golf.active.round_stats`: a round's counters for the report.
"""

from golf.active.explore import continue_trajectories, run_golf_trajectories, start_pool
from golf.active.round_stats import round_stats
from golf.active.select import SelectionError, select_from_trajectories, select_random_from_trajectories

__all__ = [
    "start_pool",
    "run_golf_trajectories",
    "continue_trajectories",
    "select_from_trajectories",
    "select_random_from_trajectories",
    "SelectionError",
    "round_stats",
]
