# Config validation and the named helpers the rules use. Nothing here runs a job.

import os
import shutil

# The package is installed where Snakemake runs (`pip install -e .`) and into each conda env
# (envs/*.post-deploy.sh installs this checkout, found through GOLF_SOURCE).
from golf.chem.conformers import molecule_list_path
from golf.cli.config import ConfigError, golf_budget, traj_budget, validate
from golf.study.names import (
    model_name,
    parse_model,
    protocol_name,
    round_seed,
    seed_dir,
    seed_of_path,
)

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
# An imported test set that carries its minima energies needs no reference optimisations.
KNOWN_MINIMA = bool(BYO_TEST and config["data"]["test_minima"])

# One layout (issue 18): each study seed's D0 validation split (d0.h5), models, rounds,
# trajectory baseline and evaluations live under results/seed-{seed}/ (logs, benchmarks alike),
# with one seed too. Conformers, D0's labels, the reference minima, the test set, MMFF's
# evaluation and the report do not depend on the seed and stay in results/. The rules that serve
# both (labelling, oracle optimisation, evaluation) put their files under "{seeddir}": "" or
# "seed-<s>/" (golf.study.names.seed_dir).
SEEDS = config["study"]["seeds"]
RUN, LOGS, BENCH = (
    seed_dir(root, "{seed}") for root in ("results", "logs", "benchmarks")
)


def seed_of(wildcards):
    """The study seed of a job: its {seed} wildcard or {seeddir} ("seed-<s>/"); None for a job
    that all seeds share."""
    seed = getattr(wildcards, "seed", None)
    if seed is None:
        seed = seed_of_path(getattr(wildcards, "seeddir", ""))
    return None if seed is None else int(seed)


def run_dir(wildcards, root="results"):
    """results/ (or logs/, benchmarks/) of the job's seed; the shared one for unseeded jobs."""
    seed = seed_of(wildcards)
    return root if seed is None else seed_dir(root, seed)


def per_seed(pattern, **wildcards):
    """expand() of a RUN-based pattern over every seed."""
    return expand(pattern, seed=SEEDS, **wildcards)


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
# trajeq-{k} (issue 19): traj-k's data trained exactly as GOLF trains (rules/traj.smk).
TRAJ_EQUAL = config["traj"]["equal_training"]


def model_names():
    names = ["baseline"] + [model_name("golf", r) for r in ROUNDS]
    if ROUNDS:
        names.append(model_name("traj", TRAJ_K))
        if TRAJ_EQUAL:
            names.append(model_name("trajeq", TRAJ_K))
    if RANDOM_CONTROL:
        names += [model_name("random", r) for r in ROUNDS]
    return names


# Evaluation protocols (golf.study.names.protocol_name): the paper's L-BFGS without a cap first; a
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


def evaluation_seed(wildcards):
    """The study seed an NNP evaluation carries (attrs["seed"], column seed); None for MMFF."""
    return None if evaluation_model(wildcards) == "mmff" else seed_of(wildcards)


def evaluated_models():
    """The NNPs the evaluation runs: every model, or (evaluation.rounds: final) the baseline and
    the models at the full budget; each evaluation costs one DFT label per test conformation
    and labelled step."""
    if config["evaluation"]["rounds"] == "all" or not ROUNDS:
        return model_names()
    earlier = {(arm, r) for arm in ("golf", "random") for r in ROUNDS[:-1]}
    return [m for m in model_names() if parse_model(m) not in earlier]


def nnp_evaluations():
    return [evaluation_name(m, cap) for cap in PROTOCOLS for m in evaluated_models()]


def get_evaluation_files(kind):
    """Every evaluation's per-step CSV ("per_step") or label file ("labels"): each NNP of every
    seed, and MMFF's once."""
    pattern = {
        "per_step": "eval/{name}/per_step.csv",
        "labels": "labels/eval-{name}.h5",
    }[kind]
    return [
        *per_seed(f"{RUN}/{pattern}", name=nnp_evaluations()),
        f"results/{pattern.format(name='mmff')}",
    ]


def get_model_metrics():
    """Training metrics of every evaluated NNP that was trained here (the report prints its
    validation force error); an imported baseline has none."""
    models = [
        m
        for m in evaluated_models()
        if not (m == "baseline" and config["nnp"]["baseline_model"])
    ]
    return per_seed(f"{RUN}/models/{{model}}.metrics.csv", model=models)


def get_final_outputs():
    return [
        "results/report/summary.md",
        *per_seed(f"{RUN}/models/{{model}}.pt", model=model_names()),
        *per_seed(f"{RUN}/rounds/{{round}}/stats.csv", round=ROUNDS),
    ]


def get_conformers(split):
    """The unlabelled conformers of a split, or the user's own test set."""
    if split == "test" and BYO_TEST:
        return "results/imported/test.h5"
    return "results/conformers.h5"


def get_d0(wildcards=None):
    """D0 with its seed's validation split, made by the d0 rule: what training and every start
    pool of that seed read. Without wildcards a pattern for a rule's input (with {seed}); with
    them (an input function) the job's own file."""
    if wildcards is None:
        return f"{RUN}/d0.h5"
    return f"{run_dir(wildcards)}/d0.h5"


def get_d0_source():
    return "results/imported/d0.h5" if BYO_D0 else "results/labels/d0.h5"


def get_labelling_input(wildcards):
    """What a labelling set is made of: D0's train conformers, or a round's selection."""
    if wildcards.set == "d0":
        return get_conformers("train")
    run = run_dir(wildcards)
    if wildcards.set.startswith("round-"):
        return f"{run}/rounds/{wildcards.set.removeprefix('round-')}/selected.h5"
    if wildcards.set.startswith("random-"):
        return f"{run}/rounds/{wildcards.set.removeprefix('random-')}/random.h5"
    if wildcards.set.startswith("eval-"):
        return f"{run}/eval/{wildcards.set.removeprefix('eval-')}/frames.h5"
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
    r, run = int(wildcards.round), run_dir(wildcards)
    return f"{run}/models/baseline.pt" if r == 1 else f"{run}/models/golf-{r - 1}.pt"


def get_round_labels(wildcards):
    """Labels of every round up to and including this one (round r reads rounds <= r only)."""
    run = run_dir(wildcards)
    return [f"{run}/labels/round-{r}.h5" for r in range(1, int(wildcards.round) + 1)]


def get_previous_random(wildcards):
    """The random control chains like GOLF: random-(r-1) -> random-r, from the baseline."""
    r, run = int(wildcards.round), run_dir(wildcards)
    return f"{run}/models/baseline.pt" if r == 1 else f"{run}/models/random-{r - 1}.pt"


def get_random_labels(wildcards):
    run = run_dir(wildcards)
    return [f"{run}/labels/random-{r}.h5" for r in range(1, int(wildcards.round) + 1)]


def get_random_seed(wildcards):
    """The control's draw, a different reproducible stream every round (as golf_optimize's)."""
    return round_seed(golf_seed(wildcards), wildcards.round)


def get_model_for_eval(wildcards):
    model = evaluation_model(wildcards)
    return [] if model == "mmff" else f"{run_dir(wildcards)}/models/{model}.pt"


def get_eval_gpus(wildcards):
    return 0 if wildcards.model == "mmff" else nnp_gpus()


def get_test_set_source():
    """An imported test set with its minima energies, or the oracle's reference optimisations."""
    if KNOWN_MINIMA:
        return "results/imported/test.h5"
    return "results/optimisation/reference.h5"


def get_import_source(wildcards):
    return config["data"][wildcards.name]


def get_traj_trajectories():
    """The trajectory baseline's data, which the report counts as extra oracle calls."""
    return per_seed(f"{RUN}/optimisation/traj.h5") if ROUNDS else []


def get_report_round_labels():
    """The GOLF rounds' label files of every seed (flat, seed by seed, rounds in order): the
    report's extra oracle calls and each arm's coverage (molecules and starts it added).
    """
    return per_seed(f"{RUN}/labels/round-{{round}}.h5", round=ROUNDS)


def get_report_random_labels():
    """The random control's label files of every seed, like the GOLF rounds' (empty when the
    control is off)."""
    if not RANDOM_CONTROL:
        return []
    return per_seed(f"{RUN}/labels/random-{{round}}.h5", round=ROUNDS)


def get_report_d0():
    """Every seed's D0 (its validation split differs by seed): the report's coverage base."""
    return per_seed(get_d0())


def get_round_benchmarks(wildcards):
    """Benchmark files of a round's jobs, read for the round's time-per-stage columns."""
    r, bench = wildcards.round, run_dir(wildcards, "benchmarks")
    return {
        "optimize": [f"{bench}/golf/{r}/optimize.tsv"],
        "select": [f"{bench}/golf/{r}/select.tsv"],
        "label": gather.oracle(f"{bench}/label/round-{r}/chunk-{{scatteritem}}.tsv"),
        "train": [f"{bench}/golf/{r}/train.tsv"],
    }


def get_optimisation_input(wildcards):
    """Start conformations: the seed's D0 for the trajectory baseline (its starts avoid that
    seed's validation split), the test split for the reference."""
    if wildcards.set == "traj":
        return get_d0(wildcards)
    if wildcards.set == "reference":
        return get_conformers("test")
    raise WorkflowError(f"unknown optimisation set {wildcards.set!r}")


def get_optimisation_split(wildcards):
    return "test" if wildcards.set == "reference" and not BYO_TEST else None


def get_traj_params(wildcards):
    """The trajectory baseline's start order and budget; None for the reference optimisations.

    Each chunk runs whole trajectories until its share of k is spent; the gather then keeps
    trajectories in the seeded start order until k (see golf.oracle.trajectories.gather_trajectories).
    """
    if wildcards.set != "traj":
        return None
    return {
        "seed": golf_seed(wildcards),
        "share": -(-TRAJ_K // config["oracle"]["chunks"]),  # ceil: the shares cover k
    }


def get_gather_budget(wildcards):
    return TRAJ_K if wildcards.set == "traj" else None


def get_optimisation_max_steps(wildcards):
    if wildcards.set == "traj":
        return config["traj"]["max_steps"]
    return config["optimisation"]["max_steps"]


def get_optimisation_optimiser(wildcards):
    """geomeTRIC for the reference minima; the trajectory baseline keeps the paper's Cartesian
    optimiser (golf.oracle.trajectories)."""
    if wildcards.set == "traj":
        return "lbfgs"
    return config["optimisation"]["reference_optimiser"]


def oracle_params():
    """The oracle settings a label depends on; not how a set is cut (chunks) nor the gather's
    filter, so changing those reruns no Psi4 job."""
    skip = ("chunks", "max_force_norm", "allow_mixed_provenance")
    return {k: v for k, v in config["oracle"].items() if k not in skip}


def seeded_train(wildcards):
    """config train with train.seed offset by the job's study seed (independent repeats)."""
    return config["train"] | {"seed": config["train"]["seed"] + seed_of(wildcards)}


def golf_seed(wildcards):
    return config["golf"]["seed"] + seed_of(wildcards)


def golf_params(wildcards):
    """config golf with golf.seed offset by the job's study seed."""
    return config["golf"] | {"seed": golf_seed(wildcards)}


def model_params(wildcards):
    """What golf.study.jobs.new_model reads: a config-shaped mapping of the model's settings."""
    oracle = config["oracle"]
    # baseline_model is no setting of a trained model (and must not rerun existing baselines).
    nnp = {k: v for k, v in config["nnp"].items() if k != "baseline_model"}
    return {
        "nnp": nnp,
        "elements": config["elements"],
        "oracle": {k: oracle[k] for k in ("program", "method", "basis")},
        "train": seeded_train(wildcards),
    }


def train_params(wildcards):
    """Everything golf.study.jobs.train_settings reads."""
    return {
        "train": seeded_train(wildcards),
        "device": config["nnp"]["device"],
        "initial_conf_pct": config["golf"]["initial_conf_pct"],
    }


def validation_split():
    """Training's validation split mimics the test split: by conformer when the test set is new
    conformers of the training molecules, else by molecule (imported data, the paper's).
    """
    if BYO_D0:
        return "molecule"
    return config["conformers"]["split"]


def validation_params(wildcards):
    """D0's validation split of a study seed, decided once for every model of that seed
    (golf.train.validation.mark_validation), seeded by train.seed + the study seed (issue 19): the
    split is part of what varies from seed to seed, so the seed-to-seed spread includes it.
    """
    return {
        "val_fraction": config["train"]["val_fraction"],
        "seed": seeded_train(wildcards)["seed"],
        "by": validation_split(),
    }


def trajeq_round(wildcards):
    """The GOLF round a trajeq job stands for: its {round}, or the last for trajeq-{k} itself."""
    r = getattr(wildcards, "round", None)
    return ROUNDS[-1] if r is None else int(r)


def get_previous_trajeq(wildcards):
    """trajeq chains like GOLF: baseline -> round 1 -> ... -> round R (= trajeq-{k})."""
    r, run = trajeq_round(wildcards), run_dir(wildcards)
    if r == 1:
        return f"{run}/models/baseline.pt"
    return f"{run}/models/trajeq-{wildcards.k}/round-{r - 1}.pt"


def get_trajeq_golf_labels(wildcards):
    """GOLF's labels of rounds 1..r: trajeq's round r trains as many steps as golf-r did (U x the
    labels GOLF's round r added) at the same place of the same schedule."""
    run = run_dir(wildcards)
    return [f"{run}/labels/round-{q}.h5" for q in range(1, trajeq_round(wildcards) + 1)]


REPORT_PLOTS = [
    "pct_vs_step",
    "eres_vs_step",
    "success_vs_oracle_calls",
    "nnp_error_vs_step",
    "pct_distribution",
]


def report_settings():
    """The settings shown beside the report's table."""
    keys = (
        "oracle",
        "conformers",
        "golf",
        "traj",
        "control",
        "study",
        "train",
        "nnp",
        "evaluation",
    )
    return {key: config[key] for key in keys} | {"molecules": config["molecules"]}
