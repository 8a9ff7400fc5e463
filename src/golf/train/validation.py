"""Training's validation split of D0: drawn once (per study seed in the workflow, seeded by
train.seed + the seed, so the seed-to-seed spread includes it), stored in D0, read by everything
that needs it.

The split holds out a seeded fraction of D0's molecules (the paper's split) or of its
conformations (the default study's test split is by conformer, and its validation mimics it).
:func:`mark_validation` stores it in D0 as the property ``validation`` (1 held out, 0 train) and
``attrs["validation"]``; training (:mod:`golf.train.trainer`) then validates on the marked rows, and the
GOLF and trajectory-baseline start pools skip them (:func:`validation_predicate`): their labels
would never be trained on, yet would count as oracle calls.

Plain numpy: the oracle's environment, which starts the trajectory baseline, has no torch.
"""

from __future__ import annotations

import math

import numpy as np

from golf.data.dataset import Dataset

__all__ = ["validation_key", "validation_keys", "mark_validation", "validation_predicate"]


def validation_key(conformer, by: str = "molecule"):
    """What the validation split holds out: a molecule (id) or one conformer ((id, conformer id))."""
    if by == "conformer":
        return (int(conformer.molecule_id), int(conformer.conformer_id))
    return int(conformer.molecule_id)


def validation_keys(rows, val_fraction: float, seed: int, by: str = "molecule") -> set:
    """Keys (:func:`validation_key`) held out for validation: a seeded ``ceil(fraction * n)`` of
    the distinct keys of ``rows``, by molecule (the paper's split) or by conformer (the default
    study's test split is by conformer, and its validation mimics it).

    At least one key stays for training; the result depends only on the set of keys and the
    seed, so every GOLF round holds out the same D0 conformations.
    """
    if by not in ("molecule", "conformer"):
        raise ValueError(f"validation split must be by 'molecule' or 'conformer', not {by!r}")
    keys = sorted({validation_key(c, by) for c in rows})
    if val_fraction <= 0 or len(keys) < 2:
        return set()
    n_val = min(math.ceil(val_fraction * len(keys)), len(keys) - 1)
    rng = np.random.default_rng([seed, 0x5EED])
    return {keys[i] for i in rng.permutation(np.arange(len(keys)))[:n_val]}


def mark_validation(d0: Dataset, val_fraction: float, seed: int, by: str = "molecule") -> Dataset:
    """D0 with its validation split decided once: property ``validation`` (1 held out, 0 train)
    on every row, by the keys :func:`validation_keys` draws from the usable rows, and the split's
    settings in ``attrs["validation"]``. Training, GOLF's and the trajectory baseline's starts
    then read the marks instead of drawing the split again."""
    keys = validation_keys([c for c in d0.conformers if c.trainable], val_fraction, seed, by)
    for c in d0.conformers:
        c.props["validation"] = int(validation_key(c, by) in keys)
    d0.attrs["validation"] = {"fraction": val_fraction, "seed": seed, "by": by, "keys": len(keys)}
    return d0


def validation_predicate(d0: Dataset):
    """``f(conformer) -> bool``: held out for validation by ``d0``'s marks (:func:`mark_validation`);
    GOLF and trajectory starts avoid them, their labels would leak into the validation set."""
    if "validation" not in d0.attrs:
        raise ValueError("D0 carries no validation split; mark it with golf.train.validation.mark_validation")
    return lambda c: c.props["validation"] == 1
