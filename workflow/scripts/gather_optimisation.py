"""Rule gather_optimisation: the chunks of a set of oracle optimisations in one file."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1] / "src"))

from golf import data
from golf.workflow import log_to

log_to(snakemake.log[0])
chunks = [data.read(path) for path in snakemake.input.chunks]
attrs = dict(chunks[0].attrs)
attrs["oracle_calls"] = sum(int(c.attrs.get("oracle_calls", 0)) for c in chunks)
trajectories = data.concat(chunks, attrs=attrs)
trajectories.conformers.sort(key=lambda c: (c.props["traj"], c.props["step"]))
data.write(snakemake.output.trajectories, trajectories)
