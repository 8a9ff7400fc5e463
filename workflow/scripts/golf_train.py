"""Rules golf_train and random_train: model r = model r-1 fine-tuned on D0 and the labels of rounds
1..r (golf.study.recipes.train_golf_round)."""

import torch

from golf import data, nnp
from golf.study.jobs import log_to, save_study_model
from golf.study.recipes import check_one_oracle, train_golf_round

log_to(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
params = snakemake.params
d0 = data.read(snakemake.input.d0)
rounds = {path: data.read(path) for path in snakemake.input.labels}
check_one_oracle({snakemake.input.d0: d0} | rounds, params.allow_mixed)
model = train_golf_round(
    nnp.load_model(snakemake.input.model),
    d0,
    list(rounds.values()),
    params.train,
    utd_ratio=params.utd_ratio,
    budget=params.budget,
    metrics_csv=snakemake.output.metrics,
    checkpoint=params.checkpoint,
)
save_study_model(snakemake.output.model, model, params.max_displacement)
