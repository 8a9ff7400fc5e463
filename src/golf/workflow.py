"""Glue for the thin ``workflow/scripts``: logging into the rule's log file."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path


def log_to(path: str | Path) -> None:
    """Send logging records, warnings and stderr (tqdm progress bars) to the rule's log file."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    stream = open(path, "a", buffering=1)  # line-buffered: progress shows while the job runs
    sys.stderr = stream
    logging.basicConfig(
        stream=stream,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    logging.captureWarnings(True)
    os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")


# The label cache every rule shares, so no rule or rerun repeats a DFT call.
ORACLE_CACHE = "results/cache/oracle"


def oracle_settings(oracle_config: dict, workers: int = 1):
    """OracleSettings from the config's ``oracle`` mapping (workflow-only keys dropped)."""
    from golf.oracle import OracleSettings

    return OracleSettings(
        method=oracle_config["method"],
        basis=oracle_config["basis"],
        threads=oracle_config["threads"],
        memory_mb=oracle_config["memory_mb"],
        timeout_s=oracle_config["timeout_s"],
        psi4_python=oracle_config["psi4_python"],
        options=dict(oracle_config["options"]),
        workers=workers,
        cache_dir=ORACLE_CACHE,
    )


def oracle_provenance(oracle) -> dict:
    """File attributes of a set the oracle labelled: level of theory, Psi4 version, and the
    calls it made and labels it found in the cache (the resume tests read these)."""
    return {
        "level_of_theory": oracle.settings.level_of_theory,
        "psi4_version": oracle.psi4_version,
        "oracle_calls": oracle.calls,
        "cache_hits": oracle.cache_hits,
    }


def new_model(config: dict, d0):
    """An untrained NNP sized by the config, self energies fitted on D0 (residual learning)."""
    from golf import nnp

    hp = config["nnp"]
    elements = config["elements"]
    return nnp.build_model(
        elements,
        self_energies=nnp.fit_self_energies(d0, elements),
        radial_cutoff=hp["radial_cutoff"],
        angular_cutoff=hp["angular_cutoff"],
        radial_shifts=hp["radial_shifts"],
        angular_shifts=hp["angular_shifts"],
        sections=hp["sections"],
        layer_dims=tuple(hp["layers"]),
        ensemble_size=hp["ensemble_size"],
        level_of_theory=f"{config['oracle']['method']}/{config['oracle']['basis']}",
        seed=config["train"]["seed"],
    )


def train_settings(config: dict, steps: int, schedule_start: int = 0, schedule_total: int | None = None):
    """TrainSettings from the config's ``train`` mapping, for a given number of gradient steps."""
    from golf.train import TrainSettings

    t = config["train"]
    return TrainSettings(
        steps=steps,
        batch_size=t["batch_size"],
        lr=t["lr"],
        lr_min_factor=t["lr_min_factor"],
        rho=t["rho"],
        grad_clip=t["grad_clip"],
        val_fraction=t["val_fraction"],
        initial_conf_pct=config["golf"]["initial_conf_pct"],
        eval_every=max(1, steps // 20),
        seed=t["seed"],
        device=config["nnp"]["device"],
        schedule_start=schedule_start,
        schedule_total=schedule_total,
    )


def validation_molecules(config: dict, d0) -> set[int]:
    """D0 molecules that training holds out for validation (the same seeded split as
    :func:`golf.train.train`). GOLF and trajectory starts avoid them: labels of these molecules
    would never be trained on, yet would count as extra oracle calls."""
    from golf.train import split_molecules

    t = config["train"]
    return split_molecules([c.molecule_id for c in d0.labelled()], t["val_fraction"], t["seed"])
