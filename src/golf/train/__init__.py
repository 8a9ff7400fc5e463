"""Training an NNP on labelled conformations, and the validation split it stops on.

May import :mod:`golf.data`, :mod:`golf.nnp` and :mod:`golf.units`.

- :mod:`golf.train.trainer`: :func:`train` (Adam, schedule, early stopping, resumable state).
- :mod:`golf.train.validation`: which molecules or conformers are held out.
"""

from golf.train.trainer import TrainError, TrainResult, TrainSettings, batch_composition, train
from golf.train.validation import mark_validation, validation_key, validation_keys, validation_predicate

__all__ = [
    "TrainSettings",
    "TrainResult",
    "TrainError",
    "train",
    "batch_composition",
    "validation_key",
    "validation_keys",
    "mark_validation",
    "validation_predicate",
]
