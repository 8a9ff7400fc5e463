"""Rule golf_train: model r = model r-1 fine-tuned on D0 and the labels of rounds 1..r.

U gradient steps per new conformation of this round (the paper's update-to-data ratio); each
batch takes golf.initial_conf_pct of its conformations from D0 (golf-paper.md §1.4). The rounds
share one cosine schedule over the whole budget, U x rounds x per_round steps.
"""

import torch

from golf import data, nnp, train
from golf.labels import ProvenanceError, common_provenance
from golf.workflow import golf_round_settings, log_to, save_study_model, user_errors

log_to(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
params = snakemake.params
d0 = data.read(snakemake.input.d0)
rounds = [data.read(path) for path in snakemake.input.labels]
# One oracle for all training labels: D0's and every round's (or a config key allows a mix).
sources = {snakemake.input.d0: d0} | dict(zip(snakemake.input.labels, rounds, strict=True))
with user_errors(ProvenanceError):
    common_provenance(sources, allow_mixed=params.allow_mixed)
new = data.concat(rounds)
labelled = [sum(c.labelled for c in r.conformers) for r in rounds]
settings = golf_round_settings(params.train, params.utd_ratio, params.budget, labelled)
model = nnp.load_model(snakemake.input.model)
result = train.train(
    model,
    d0,
    new,
    settings,
    metrics_csv=snakemake.output.metrics,
    checkpoint=params.checkpoint,
    checkpoint_every=params.train["train"]["checkpoint_every"],
)
result.model.meta["extra_oracle_calls"] = sum(c.labelled for c in new.conformers)
save_study_model(snakemake.output.model, result.model, snakemake.params.max_displacement)
