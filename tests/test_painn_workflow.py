"""The tiny end-to-end study with the paper's backbone (nnp.architecture: painn)."""

import shutil

import pandas as pd
import pytest
import torch
import yaml
from conftest import TINY_CONFIG, snakemake

from golf.nnp.model import load_model

PAINN = {"nnp": {"architecture": "painn", "painn": {"n_atom_basis": 16, "n_interactions": 2, "n_rbf": 16}}}


@pytest.mark.slow
def test_tiny_study_with_painn(tiny_study, tmp_path):
    """The tiny study rerun with PaiNN: every model is a PaiNN, and the report has every model.
    A copy of the ANI study, so its label cache serves D0, rounds and references."""
    study = tmp_path / "study"
    shutil.copytree(tiny_study, study, symlinks=True)
    override = tmp_path / "painn.yaml"
    override.write_text(yaml.safe_dump(PAINN))
    snakemake(study, "--configfile", str(TINY_CONFIG), str(override))
    for name in ("baseline", "golf-1"):
        model = load_model(study / f"results/seed-0/models/{name}.pt")
        assert model.architecture == "painn" and model.meta["hyperparameters"]["n_atom_basis"] == 16
        blob = torch.load(study / f"results/seed-0/models/{name}.pt", weights_only=True)
        assert any(k.startswith("model.representation.") for k in blob["state_dict"])
    summary = pd.read_csv(study / "results/report/summary.csv")
    assert {"baseline", "golf-1"} <= set(summary["model"])
