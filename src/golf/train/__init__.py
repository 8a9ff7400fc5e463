"""Training an NNP on labelled conformations, and the validation split it stops on.

May import :mod:`golf.data`, :mod:`golf.nnp` and :mod:`golf.units`.

- :mod:`golf.train.trainer`: :func:`train` (Adam, schedule, early stopping, resumable state).
- :mod:`golf.train.validation`: which molecules or conformers are held out.
"""

import importlib

# The API is loaded on first use: golf.train.validation (numpy only) serves light environments
# (the d0 rule's) that have no torch, which golf.train.trainer needs.
_API = {
    **dict.fromkeys(("TrainSettings", "TrainResult", "TrainError", "train", "batch_composition"), "trainer"),
    **dict.fromkeys(("validation_key", "validation_keys", "mark_validation", "validation_predicate"), "validation"),
}
__all__ = list(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
