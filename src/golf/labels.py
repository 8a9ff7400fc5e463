"""Gathering labelled chunks: input order restored, label filters applied, counts logged."""

from __future__ import annotations

import logging

import numpy as np

from golf.data import Dataset, concat

log = logging.getLogger(__name__)


def gather(chunks: list[Dataset], max_force_norm: float) -> Dataset:
    """One dataset from scattered chunks, rows in the order of the set they were cut from.

    A label whose force norm (Frobenius, Hartree/Angstrom) reaches ``max_force_norm`` keeps its row
    but gets status ``force_too_large`` (paper code's replay-buffer filter, golf-paper.md §1.2):
    it is neither trained on nor counted toward an oracle budget.
    """
    attrs = dict(chunks[0].attrs) if chunks else {}
    for key in ("oracle_calls", "cache_hits"):
        attrs[key] = sum(int(c.attrs.get(key, 0)) for c in chunks)
    merged = concat(chunks, attrs=attrs)
    merged.conformers.sort(key=lambda c: c.props["source_row"])
    for c in merged.conformers:
        if c.status == "ok" and np.linalg.norm(c.forces) >= max_force_norm:
            c.status = "force_too_large"
    log.info("gathered %d conformations: %s", len(merged), merged.status_counts())
    return merged


def label_pending(oracle, dataset: Dataset) -> Dataset:
    """Oracle labels for the "unlabelled" rows; rows already skipped pass through unchanged."""
    pending = [i for i, c in enumerate(dataset.conformers) if c.status == "unlabelled"]
    result = oracle.label(dataset.subset(pending))
    labelled = iter(result.conformers)
    out = Dataset(dict(dataset.molecules), [], dict(dataset.attrs))
    if "oracle" in result.attrs:  # provenance: program, version, method, basis
        out.attrs["oracle"] = result.attrs["oracle"]
    for c in dataset.conformers:
        out.conformers.append(next(labelled) if c.status == "unlabelled" else c)
    log.info("labelled %d of %d rows: %s", len(pending), len(dataset), out.status_counts())
    return out
