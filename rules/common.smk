# Config validation and the named helpers the rules use. Nothing here runs a job.

import os
import shutil

# The package is installed where Snakemake runs (`pip install -e .`) and into each conda env
# (envs/*.post-deploy.sh installs this checkout, found through GOLF_SOURCE).
from golf.config import ConfigError, golf_budget, traj_budget, validate
from golf.evaluate import protocol_name

os.environ.setdefault(
    "GOLF_SOURCE", os.path.dirname(os.path.abspath(workflow.main_snakefile))
)

try:
    config = validate(config)
except ConfigError as err:
    raise WorkflowError(f"invalid config: {err}") from None

ROUNDS = list(range(1, config["golf"]["rounds"] + 1))
TRAJ_K = traj_budget(config)
BYO_D0 = config["data"]["d0"]
BYO_TEST = config["data"]["test"]


# Oracle work is scattered into config oracle.chunks jobs (scatter item "i-of-N", 1-based).
scattergather:
    oracle=config["oracle"]["chunks"],


def scaled(base):
    """A resource (mem_mb, runtime in minutes) that grows with the attempt, so a retry after a
    kill for memory or time asks for more."""
    return lambda wildcards, attempt: base * attempt


def nnp_gpus():
    """1 where NNP rules will run on a GPU (resources: gpu=1), else 0."""
    device = config["nnp"]["device"]
    if device == "auto":
        return int(shutil.which("nvidia-smi") is not None)
    return int(device.startswith("cuda"))


RANDOM_CONTROL = config["control"]["random"]


def model_names():
    names = ["baseline"] + [f"golf-{r}" for r in ROUNDS]
    if ROUNDS:
        names.append(f"traj-{TRAJ_K}")
    if RANDOM_CONTROL:
        names += [f"random-{r}" for r in ROUNDS]
    return names


# Evaluation protocols (golf.evaluate.protocol_name): the paper's L-BFGS without a cap first; a
# configured golf.max_displacement adds a second, labelled row set "capped-<x>" of every NNP.
PROTOCOLS = [None] + (
    [config["golf"]["max_displacement"]]
    if config["golf"]["max_displacement"] is not None
    else []
)


def evaluation_name(model, max_displacement=None):
    """The name of one evaluation: the model's for the paper's protocol, "<model>.capped-<x>"
    for a capped one (the paper protocol's paths stay those of the model)."""
    if max_displacement is None:
        return model
    return f"{model}.{protocol_name(max_displacement)}"


def evaluation_cap(wildcards):
    """The step cap (Angstrom) of an evaluation named by wildcards.model, None for the paper's."""
    _, _, protocol = wildcards.model.partition(".")
    return float(protocol.removeprefix("capped-")) if protocol else None


def evaluation_model(wildcards):
    return wildcards.model.partition(".")[0]


def evaluated_names():
    nnps = [evaluation_name(m, cap) for cap in PROTOCOLS for m in model_names()]
    return nnps + ["mmff"]


def get_final_outputs():
    return [
        "results/report/summary.md",
        *expand("results/models/{model}.pt", model=model_names()),
        *expand("results/rounds/{round}/stats.csv", round=ROUNDS),
    ]


def get_conformers(split):
    """The unlabelled conformers of a split, or the user's own test set."""
    if split == "test" and BYO_TEST:
        return "results/imported/test.h5"
    return "results/conformers.h5"


def get_d0():
    return "results/imported/d0.h5" if BYO_D0 else "results/labels/d0.h5"


def get_labelling_input(wildcards):
    """What a labelling set is made of: D0's train conformers, or a round's selection."""
    if wildcards.set == "d0":
        return get_conformers("train")
    if wildcards.set.startswith("round-"):
        return f"results/rounds/{wildcards.set.removeprefix('round-')}/selected.h5"
    if wildcards.set.startswith("random-"):
        return f"results/rounds/{wildcards.set.removeprefix('random-')}/random.h5"
    if wildcards.set.startswith("eval-"):
        return f"results/eval/{wildcards.set.removeprefix('eval-')}/frames.h5"
    raise WorkflowError(f"unknown labelling set {wildcards.set!r}")


def get_labelling_split(wildcards):
    return "train" if wildcards.set == "d0" else None


def get_max_force_norm(wildcards):
    """The force-norm filter guards training data (D0, GOLF rounds); evaluation labels are
    measurements, and a diverged geometry's huge forces must count as divergence, not failure.
    """
    return (
        float("inf")
        if wildcards.set.startswith("eval-")
        else config["oracle"]["max_force_norm"]
    )


def get_previous_model(wildcards):
    r = int(wildcards.round)
    return "results/models/baseline.pt" if r == 1 else f"results/models/golf-{r - 1}.pt"


def get_round_labels(wildcards):
    """Labels of every round up to and including this one (round r reads rounds <= r only)."""
    return [f"results/labels/round-{r}.h5" for r in range(1, int(wildcards.round) + 1)]


def get_previous_random(wildcards):
    """The random control chains like GOLF: random-(r-1) -> random-r, from the baseline."""
    r = int(wildcards.round)
    return (
        "results/models/baseline.pt" if r == 1 else f"results/models/random-{r - 1}.pt"
    )


def get_random_labels(wildcards):
    return [f"results/labels/random-{r}.h5" for r in range(1, int(wildcards.round) + 1)]


def get_random_seed(wildcards):
    """The control's draw, a different reproducible stream every round (as golf_optimize's)."""
    return config["golf"]["seed"] * 1000 + int(wildcards.round)


def get_model_for_eval(wildcards):
    model = evaluation_model(wildcards)
    return [] if model == "mmff" else f"results/models/{model}.pt"


def get_eval_gpus(wildcards):
    return 0 if wildcards.model == "mmff" else nnp_gpus()


def get_reference():
    if BYO_TEST and config["data"]["test_minima"]:
        return "results/imported/reference.h5"
    return "results/optimisation/reference.h5"


def get_import_source(wildcards):
    return config["data"][wildcards.name]


def get_traj_trajectories():
    """The trajectory baseline's data, which the report counts as extra oracle calls."""
    return ["results/optimisation/traj.h5"] if ROUNDS else []


def get_round_benchmarks(wildcards):
    """Benchmark files of a round's jobs, read for the round's time-per-stage columns."""
    r = wildcards.round
    return {
        "optimize": [f"benchmarks/golf/{r}/optimize.tsv"],
        "select": [f"benchmarks/golf/{r}/select.tsv"],
        "label": gather.oracle(f"benchmarks/label/round-{r}/chunk-{{scatteritem}}.tsv"),
        "train": [f"benchmarks/golf/{r}/train.tsv"],
    }


def get_optimisation_input(wildcards):
    """Start conformations: D0 for the trajectory baseline, the test split for the reference."""
    if wildcards.set == "traj":
        return get_d0()
    if wildcards.set == "reference":
        return get_conformers("test")
    raise WorkflowError(f"unknown optimisation set {wildcards.set!r}")


def get_optimisation_split(wildcards):
    return "test" if wildcards.set == "reference" and not BYO_TEST else None


def get_traj_params(wildcards):
    """The trajectory baseline's start order and budget; None for the reference optimisations.

    Each chunk runs whole trajectories until its share of k is spent; the gather then keeps
    trajectories in the seeded start order until k (see golf.oracle_optimize.gather_trajectories).
    """
    if wildcards.set != "traj":
        return None
    return {
        "seed": config["golf"]["seed"],
        "share": -(-TRAJ_K // config["oracle"]["chunks"]),  # ceil: the shares cover k
        "validation": validation_params(),
    }


def get_gather_budget(wildcards):
    return TRAJ_K if wildcards.set == "traj" else None


def get_optimisation_max_steps(wildcards):
    if wildcards.set == "traj":
        return config["traj"]["max_steps"]
    return config["optimisation"]["max_steps"]


def oracle_params():
    """The oracle settings a label depends on; not how a set is cut (chunks) nor the gather's
    filter, so changing those reruns no Psi4 job."""
    skip = ("chunks", "max_force_norm", "allow_mixed_provenance")
    return {k: v for k, v in config["oracle"].items() if k not in skip}


def model_params():
    """What golf.workflow.new_model reads: a config-shaped mapping of the model's settings."""
    oracle = config["oracle"]
    # baseline_model is no setting of a trained model (and must not rerun existing baselines).
    nnp = {k: v for k, v in config["nnp"].items() if k != "baseline_model"}
    return {
        "nnp": nnp,
        "elements": config["elements"],
        "oracle": {"method": oracle["method"], "basis": oracle["basis"]},
        "train": config["train"],
    }


def train_params():
    """Everything golf.workflow.train_settings reads."""
    return {
        "train": config["train"],
        "device": config["nnp"]["device"],
        "initial_conf_pct": config["golf"]["initial_conf_pct"],
    }


def validation_params():
    """What decides training's validation molecules (golf.workflow.validation_molecules)."""
    return {k: config["train"][k] for k in ("val_fraction", "seed")}


REPORT_PLOTS = [
    "pct_vs_step",
    "eres_vs_step",
    "success_vs_oracle_calls",
    "nnp_error_vs_step",
    "pct_distribution",
]


def report_settings():
    """The settings shown beside the report's table."""
    keys = ("oracle", "conformers", "golf", "traj", "train", "nnp", "evaluation")
    return {key: config[key] for key in keys} | {"molecules": config["molecules"]}
