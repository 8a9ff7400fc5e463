# golf-workflow: GOLF (Tsypin et al., ICLR 2024) as a Snakemake workflow.
# The flow and the file layout are described in README.md and docs/ARCHITECTURE.md.


from snakemake.utils import min_version

min_version("9.0")


# The default study's config, unless the command line names config files: then they are the
# whole config (the schema fills in what they leave out), in the main process and in every job
# step alike. Merging config/config.yaml under them only where it is found (a checkout, not a
# SLURM job step's own view) made job steps and the main process disagree (issue 21).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "rules/report/workflow.rst"


wildcard_constraints:
    set=r"[A-Za-z0-9_.-]+",
    scatteritem=r"\d+-of-\d+",
    round=r"\d+",
    # an evaluation: a model name, or "<model>.capped-<x>" for its capped protocol
    model=r"[A-Za-z0-9_-]+(\.capped-[0-9.e+-]+)?",
    k=r"\d+",
    seed=r"\d+",
    # the directory of a seed's files ("seed-<s>/"), or "" for those all seeds share
    seeddir=r"(seed-\d+/)?",


include: "rules/common.smk"
include: "rules/conformers.smk"
include: "rules/import.smk"
include: "rules/label.smk"
include: "rules/nnp.smk"
include: "rules/golf.smk"
include: "rules/traj.smk"
include: "rules/evaluate.smk"


rule all:
    default_target: True
    input:
        get_final_outputs(),
