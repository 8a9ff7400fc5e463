"""GOLF's active learning: NNP trajectories with the MMFF stop, selection, round statistics.

May import :mod:`golf.data`, :mod:`golf.chem`, :mod:`golf.nnp`, :mod:`golf.optim` and
:mod:`golf.units`.

- :mod:`golf.active.explore`: a round's NNP trajectories (and the random control's continuation).
- :mod:`golf.active.select`: where a trajectory ends and which frame goes to the oracle.
- :mod:`golf.active.round_stats`: a round's counters for the report.
"""

import importlib

# The API is loaded on first use: golf.active.select and round_stats (numpy only) serve light
# environments (the golf_select and golf_round_stats rules') that have no torch, which
# golf.active.explore needs.
_API = {
    **dict.fromkeys(("start_pool", "run_golf_trajectories", "continue_trajectories"), "explore"),
    **dict.fromkeys(("select_from_trajectories", "select_random_from_trajectories", "SelectionError"), "select"),
    "round_stats": "round_stats",
}
__all__ = list(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
