"""The package's layers (docs/ARCHITECTURE.md): no module imports from a subpackage above its own.

Read from the source with ``ast`` (imports inside functions count too), so the check needs no
optional dependency and sees what a reader sees.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "golf"

# What each subpackage may import from golf besides itself (docs/ARCHITECTURE.md, "Layers").
ALLOWED = {
    "units": set(),
    "data": {"units"},
    "chem": {"data", "units"},
    "nnp": {"data", "units"},
    "oracle": {"data", "units"},
    "optim": {"data", "nnp", "units"},
    "train": {"data", "nnp", "units"},
    "active": {"data", "chem", "nnp", "optim", "units"},
    "study": {"data", "chem", "nnp", "oracle", "optim", "train", "active", "units"},
    "cli": {"data", "chem", "nnp", "oracle", "optim", "train", "active", "study", "units"},
}


def _layer(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]  # golf/<layer>/<module>.py, or golf/units.py


def _golf_imports(path: Path) -> set[str]:
    """The golf subpackages (or top-level modules) a module imports."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "golf":
            parts = node.module.split(".")
            names = parts[1:2] or [a.name for a in node.names]  # `from golf import data`
            out.update(names)
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("golf."))
    return out


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def test_every_module_is_in_a_layer():
    assert {_layer(p) for p in MODULES} == set(ALLOWED)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_runs_up_the_layers(path):
    layer = _layer(path)
    wrong = _golf_imports(path) - ALLOWED[layer] - {layer}
    assert not wrong, f"golf.{layer} may not import {sorted(wrong)} ({path.relative_to(PACKAGE)})"


# What each rule's script imports, in its conda environment (envs/*.yaml), without the packages
# that environment lacks: a package __init__ that loads torch eagerly would break the light ones.
ENVIRONMENTS = {
    "chem": (
        {"torch", "torchani", "matplotlib", "psi4", "tblite", "geometric"},
        ["golf.chem.conformers", "golf.train.validation", "golf.study.evaluate", "golf.active.select",
         "golf.active.round_stats", "golf.oracle.labels", "golf.oracle.trajectories", "golf.study.jobs"],
    ),
    "psi4": (
        {"torch", "torchani", "rdkit", "pandas", "matplotlib"},
        ["golf.oracle.oracle", "golf.oracle.labels", "golf.oracle.trajectories", "golf.study.jobs",
         "golf.study.recipes", "golf.train.validation"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("env", sorted(ENVIRONMENTS))
def test_light_environments_import_what_their_rules_need(env):
    import subprocess
    import sys

    blocked, modules = ENVIRONMENTS[env]
    script = f"""
import importlib, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {sorted(blocked)!r}:
            raise ImportError(f"{{name}} is not in the {env} environment")
sys.meta_path.insert(0, Block())
for module in {modules!r}:
    importlib.import_module(module)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
