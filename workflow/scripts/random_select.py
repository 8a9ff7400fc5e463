"""Rule random_select: the random-selection control's conformation of each GOLF trajectory.

The trajectories GOLF selects are continued past their first MMFF rise with the round's model
(golf-(r-1), which explored them), so the control draws from whole NNP trajectories; D0 and the
control's earlier labels are what it must not label again.
"""

import torch

from golf import data, nnp
from golf.explore import continue_trajectories
from golf.select import SelectionError, random_control_trajectories, select_random_from_trajectories
from golf.workflow import log_to, user_errors

log_to(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
params = snakemake.params
trajectories = data.read(snakemake.input.trajectories)
model = nnp.load_model(snakemake.input.model, device=nnp.resolve_device(params.device))
beyond_end = continue_trajectories(
    model,
    trajectories,
    random_control_trajectories(trajectories, params.mmff_threshold),
    parallel=params.parallel,
    timelimit=params.timelimit,
    max_displacement=params.max_displacement,
)
known = [data.read(snakemake.input.d0), *(data.read(p) for p in snakemake.input.known)]
with user_errors(SelectionError):
    selected = select_random_from_trajectories(
        trajectories, seed=params.seed, mmff_threshold=params.mmff_threshold, beyond_end=beyond_end, known=known
    )
selected.attrs.update(
    round=int(snakemake.wildcards.round),
    frames_beyond_end=len(beyond_end),
    rerun_max_deviation=beyond_end.attrs["rerun_max_deviation"],
    beyond_end_nnp_seconds=beyond_end.attrs["nnp_seconds"],
    beyond_end_mmff_seconds=beyond_end.attrs["mmff_seconds"],
)
data.write(snakemake.output.selected, selected)
