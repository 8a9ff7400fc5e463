"""Gathering labelled chunks: input order restored, label filters applied, counts logged; and the
rule that a dataset's labels come from one oracle (program, version, method, basis, options)."""

from __future__ import annotations

import logging

import numpy as np

from golf.data.dataset import Dataset, concat

log = logging.getLogger(__name__)

ALLOW_MIXED_KEY = "oracle.allow_mixed_provenance"


class ProvenanceError(ValueError):
    """Labels of different oracles in one dataset or one training run; the message names both."""


def _describe_provenance(p: dict) -> str:
    options = ", ".join(f"{k}={v}" for k, v in sorted((p.get("options") or {}).items())) or "no options"
    return f"{p.get('program', '?')} {p.get('version', '?')} {p.get('method', '?')}/{p.get('basis', '?')} ({options})"


def common_provenance(datasets: dict[str, Dataset], allow_mixed: bool = False) -> dict | None:
    """The one oracle provenance (``attrs["oracle"]``) of labelled datasets, keyed by a name for
    messages (a file, a chunk).

    Raises :class:`ProvenanceError` naming the first two that differ, unless ``allow_mixed`` (then
    a warning, and the first dataset's provenance is returned). A dataset without the attribute
    (e.g. imported labels) has an unknown provenance: it is not compared, and the log says so.
    None if no dataset has one.
    """
    first_name, first = None, None
    for name, dataset in datasets.items():
        provenance = dataset.attrs.get("oracle")
        if provenance is None:
            log.info("%s: no oracle provenance recorded (imported labels?); not compared", name)
            continue
        if first is None:
            first_name, first = name, provenance
        elif provenance != first:
            message = (
                f"labels from different oracles: {first_name} has {_describe_provenance(first)}, "
                f"{name} has {_describe_provenance(provenance)}"
            )
            if not allow_mixed:
                raise ProvenanceError(f"{message}; relabel one of them, or set {ALLOW_MIXED_KEY}: true to mix them")
            log.warning("%s (allowed by %s)", message, ALLOW_MIXED_KEY)
    return first


def gather(chunks: list[Dataset], max_force_norm: float, allow_mixed: bool = False) -> Dataset:
    """One dataset from scattered chunks, rows in the order of the set they were cut from.

    A label whose force norm (Frobenius, Hartree/Angstrom) reaches ``max_force_norm`` keeps its row
    but gets status ``force_too_large`` (paper code's replay-buffer filter, golf-paper.md §1.2):
    it is neither trained on nor counted toward an oracle budget. Chunks labelled by different
    oracles are refused (:func:`common_provenance`).
    """
    provenance = common_provenance({f"chunk {i + 1}": c for i, c in enumerate(chunks)}, allow_mixed)
    attrs = dict(chunks[0].attrs) if chunks else {}
    if provenance is not None:
        attrs["oracle"] = provenance
    for key in ("oracle_calls", "cache_hits", "cached_failures"):
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
