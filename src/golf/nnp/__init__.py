"""Neural network potentials: the ANI-style NNP, the paper's PaiNN, checkpoints.

May import :mod:`golf.data` and :mod:`golf.units`.

- :mod:`golf.nnp.model`: the :class:`NNP` module, builders, the authors' checkpoint importer,
  self energies, save and load, device choice, padding.
- :mod:`golf.nnp.painn`: PaiNN with schnetpack 2.0.4's numerics.
"""

from golf.nnp.model import *  # noqa: F403 (the package's API is model's)
from golf.nnp.model import __all__ as __all__
