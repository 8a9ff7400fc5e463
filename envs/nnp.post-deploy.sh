#!/usr/bin/env bash
# Snakemake runs this in the new env after creating it from the .yaml beside it. It installs this
# checkout's golf package, so the rule scripts can `import golf`. Not a `pip: -e ..` entry in the
# .yaml: Snakemake copies the .yaml into .snakemake/conda/, where that relative path points nowhere.
# The Snakefile exports GOLF_SOURCE (the checkout); by hand: GOLF_SOURCE=. bash envs/<name>.post-deploy.sh
# --no-deps: this env's conda packages are the dependencies; pip must not pull PyPI wheels over them.
set -euo pipefail
python -m pip install --no-deps --editable "${GOLF_SOURCE:?set GOLF_SOURCE to the golf-workflow checkout}"
