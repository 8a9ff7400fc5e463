"""Geometry optimisation with an NNP: batched L-BFGS and the ASE calculator.

May import :mod:`golf.data`, :mod:`golf.nnp` and :mod:`golf.units`.

- :mod:`golf.optim.lbfgs`: settings and policies, the L-BFGS state and step, the slot driver and
  streaming loop, trajectories, bond perception, :func:`optimize`.
- :mod:`golf.optim.calculator`: :class:`NNPCalculator`, a trained model for ASE.
"""

from golf.optim.calculator import NNPCalculator
from golf.optim.lbfgs import (
    BatchedLBFGS,
    LBFGSSettings,
    OptimizeError,
    Trajectory,
    bond_change,
    optimize,
    optimize_with_model,
    optimizer_meta,
    optimizer_settings,
    run_stream,
)

__all__ = [
    "OptimizeError",
    "LBFGSSettings",
    "BatchedLBFGS",
    "run_stream",
    "Trajectory",
    "optimize",
    "bond_change",
    "optimizer_meta",
    "optimizer_settings",
    "optimize_with_model",
    "NNPCalculator",
]
