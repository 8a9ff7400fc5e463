"""What the thin ``workflow/scripts`` share: logging into the rule's log file, user errors as one
line, oracle and training settings from rule params, new and saved models. How each arm trains
and selects is :mod:`golf.study.recipes`."""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
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


@contextmanager
def user_errors(*errors: type[BaseException]):
    """Errors that are the user's to fix (e.g. golf.oracle.labels.ProvenanceError): one line in the
    rule's log and a failed job, not a traceback."""
    try:
        yield
    except errors as err:
        logging.getLogger("golf").error("%s", err)
        raise SystemExit(f"error: {err}") from None


# The label cache every rule shares, so no rule or rerun repeats a DFT call.
ORACLE_CACHE = "results/cache/oracle"


def oracle_settings(oracle_params: dict, workers: int = 1):
    """OracleSettings from a rule's ``oracle`` params (the config's ``oracle`` mapping less the
    workflow-only keys, rules/common.smk ``oracle_params``)."""
    from golf.oracle.oracle import OracleSettings

    return OracleSettings(
        program=oracle_params.get("program", "psi4"),
        method=oracle_params["method"],
        basis=oracle_params["basis"],
        threads=oracle_params["threads"],
        memory_mb=oracle_params["memory_mb"],
        timeout_s=oracle_params["timeout_s"],
        psi4_python=oracle_params["psi4_python"],
        options=dict(oracle_params["options"]),
        retry_failed=oracle_params.get("retry_failed", False),
        workers=workers,
        cache_dir=ORACLE_CACHE,
    )


def oracle_provenance(oracle) -> dict:
    """File attributes of a set the oracle labelled: the oracle's provenance (program, version,
    method, basis, options; one per dataset, see golf.oracle.labels.common_provenance), the level of
    theory, and the calls it made, labels it found in the cache and failures the cache
    remembered (the resume tests read these)."""
    return {
        "oracle": oracle.provenance,
        "level_of_theory": oracle.settings.level_of_theory,
        **({"psi4_version": oracle.psi4_version} if oracle.psi4_version else {}),
        "oracle_calls": oracle.calls,
        "cache_hits": oracle.cache_hits,
        "cached_failures": oracle.cached_failures,
    }


def new_model(config: dict, d0):
    """An untrained NNP of the config's ``nnp.architecture``, self energies fitted on D0 (residual
    learning). ``config`` is config-shaped: keys ``nnp``, ``elements``, ``oracle``, ``train``."""
    from golf import nnp
    from golf.oracle.oracle import level_of_theory

    hp, oracle = config["nnp"], config["oracle"]
    elements = config["elements"]
    common = {
        "self_energies": nnp.fit_self_energies(d0, elements),
        "level_of_theory": level_of_theory(oracle["method"], oracle["basis"], oracle.get("program", "psi4")),
        "seed": config["train"]["seed"],
    }
    if hp.get("architecture", "ani") == "painn":
        return nnp.build_painn(elements, **common, **hp["painn"])
    return nnp.build_model(
        elements,
        radial_cutoff=hp["radial_cutoff"],
        angular_cutoff=hp["angular_cutoff"],
        radial_shifts=hp["radial_shifts"],
        angular_shifts=hp["angular_shifts"],
        sections=hp["sections"],
        layer_dims=tuple(hp["layers"]),
        ensemble_size=hp["ensemble_size"],
        **common,
    )


def imported_baseline(path: str | Path, elements):
    """The study's baseline from an existing checkpoint (config ``nnp.baseline_model``, e.g. the
    authors' baseline through ``golf import-model``), untrained here: its path goes into
    ``meta["imported_from"]``. A model without a network for one of the study's ``elements``
    could not optimise every molecule the study keeps, so that is an error naming them."""
    from golf import nnp

    model = nnp.load_model(path)
    missing = [e for e in elements if e not in model.elements]
    if missing:
        raise nnp.NNPError(
            f"nnp.baseline_model {path}: no network for element(s) {', '.join(missing)} of the config's"
            f" elements; the model covers {' '.join(model.elements)} (set elements to a subset of these)"
        )
    model.meta["imported_from"] = str(path)
    return model


def train_settings(params: dict, steps: int, schedule_start: int = 0, schedule_total: int | None = None):
    """TrainSettings from a rule's ``train`` params (keys ``train``, ``device``,
    ``initial_conf_pct``: rules/common.smk ``train_params``) for a number of gradient steps."""
    from golf.train.trainer import TrainSettings

    t = params["train"]
    return TrainSettings(
        steps=steps,
        batch_size=t["batch_size"],
        lr=t["lr"],
        lr_min_factor=t["lr_min_factor"],
        rho=t["rho"],
        grad_clip=t["grad_clip"],
        initial_conf_pct=params["initial_conf_pct"],
        eval_every=max(1, steps // 20),
        seed=t["seed"],
        device=params["device"],
        schedule_start=schedule_start,
        schedule_total=schedule_total,
    )


def scatter_item(item: str) -> tuple[int, int]:
    """(0-based index, count) of a Snakemake scatter item such as "2-of-4"."""
    index, sep, count = item.partition("-of-")
    if not sep or not index.isdigit() or not count.isdigit() or not 1 <= int(index) <= int(count):
        raise ValueError(f"scatter item {item!r} is not of the form i-of-N with 1 <= i <= N")
    return int(index) - 1, int(count)


def save_study_model(path, model, max_displacement: float | None) -> None:
    """Save a model of the study with the way golf optimize and the ASE calculator should optimise
    it unless told otherwise: as the study's GOLF rounds do (golf.max_displacement; None is the
    paper's L-BFGS)."""
    from golf import nnp
    from golf.optim import optimizer_meta

    model.meta["optimizer"] = optimizer_meta(max_displacement=max_displacement)
    nnp.save_model(path, model)
