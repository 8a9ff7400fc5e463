"""The study: evaluation with the paper's protocol, metrics, statistics, the report, and the
library side of the workflow's jobs. The top layer under :mod:`golf.cli`: it may import every
other subpackage.

- :mod:`golf.study.evaluate`: the test set, NNP and MMFF trajectories from it, per-step tables.
- :mod:`golf.study.metrics`: pct, E_res, success, divergence, COV/MAT per model and step.
- :mod:`golf.study.stats`: paired, molecule-level and seed-aware comparisons (Holm).
- :mod:`golf.study.report`: summary.md, the CSV tables, the paper's table beside ours.
- :mod:`golf.study.budget`: each arm's extra oracle calls, real calls and new conformations.
- :mod:`golf.study.paper`: the paper's Table 2.
- :mod:`golf.study.plots`: the report's figures.
- :mod:`golf.study.names`: model, protocol and seed names, the per-round seed.
- :mod:`golf.study.jobs`: what the workflow's scripts share (logging, settings from config,
  model building and saving).
- :mod:`golf.study.recipes`: how each arm trains and selects (GOLF's rounds, traj-k, trajeq-k,
  the random control, oracle optimisation chunks).

Its modules are imported one by one (the report's plotting stack stays out of every job).
"""
