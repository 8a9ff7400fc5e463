"""Shared fixtures: the tiny end-to-end study (real Snakemake, Psi4, RDKit, TorchANI)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "tests" / "data" / "tiny.yaml"
TINY_XTB_CONFIG = REPO / "tests" / "data" / "tiny_xtb.yaml"  # the same study on the xTB oracle
TINY_MOLECULES = REPO / "tests" / "data" / "tiny.smi"


def snakemake(
    workdir: Path,
    *args: str,
    config: tuple[str, ...] = (),
    check: bool = True,
    timeout: int = 1500,
    configfile: Path = TINY_CONFIG,
) -> subprocess.CompletedProcess:
    """Run the project's workflow with the tiny config (or ``configfile``) in ``workdir`` (real
    scheduler, local cores). ``config``: extra ``key=value`` overrides."""
    cmd = [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(configfile),
        "--config", f"molecules={TINY_MOLECULES}", *config,
        "--cores", "2",
        *args,
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def needs_psi4():
    if shutil.which("psi4") is None:
        pytest.skip("Psi4 is not installed: run bin/setup (root: apt-get install psi4)")


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> Path:
    """A finished tiny study: 3 molecules, HF/STO-3G, one GOLF round, report included."""
    needs_psi4()
    workdir = tmp_path_factory.mktemp("tiny-study")
    snakemake(workdir)
    return workdir
