"""Rule golf_select: the conformation of each trajectory that goes to the oracle, or its skip."""

from golf import data
from golf.active.select import select_from_trajectories
from golf.study.jobs import log_to

log_to(snakemake.log[0])
selected = select_from_trajectories(data.read(snakemake.input.trajectories), snakemake.params.mmff_threshold)
selected.attrs["round"] = int(snakemake.wildcards.round)
data.write(snakemake.output.selected, selected)
