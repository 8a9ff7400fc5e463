"""Rule random_select: the random-selection control's conformation of each GOLF trajectory."""

from golf import data
from golf.select import select_random_from_trajectories
from golf.workflow import log_to

log_to(snakemake.log[0])
params = snakemake.params
selected = select_random_from_trajectories(
    data.read(snakemake.input.trajectories), seed=params.seed, mmff_threshold=params.mmff_threshold
)
selected.attrs["round"] = int(snakemake.wildcards.round)
data.write(snakemake.output.selected, selected)
