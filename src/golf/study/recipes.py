"""How the study makes each arm's data and models: GOLF's round training (and the random
control's, which trains alike), the paper's traj-k, trajeq-k (traj-k's frames trained as GOLF
trains), the oracle optimisations' chunks, and the random control's draw. Each rule's script reads
its files, calls one of these and writes the result."""

from __future__ import annotations

from golf import data
from golf.data.dataset import Dataset
from golf.oracle.labels import ProvenanceError, common_provenance
from golf.study.jobs import train_settings, user_errors

__all__ = [
    "check_one_oracle",
    "golf_round_settings",
    "trajeq_frames",
    "train_golf_round",
    "train_traj",
    "train_trajeq",
    "oracle_optimisation_chunk",
    "random_control_selection",
]


def check_one_oracle(sources: dict[str, Dataset], allow_mixed: bool) -> None:
    """One oracle for every training label, D0's and the new data's (or config
    oracle.allow_mixed_provenance allows a mix); a mix is the user's to fix: one line, no traceback."""
    with user_errors(ProvenanceError):
        common_provenance(sources, allow_mixed=allow_mixed)


def golf_round_settings(params: dict, utd_ratio: int, budget: int, labelled: list[int]):
    """TrainSettings of GOLF's round r = len(labelled), where ``labelled[q]`` is the number of new
    labels of round q + 1: U gradient steps per new label of round r (at least U), on the slice
    after the earlier rounds' steps of one cosine schedule over U x ``budget`` (the GOLF budget).
    Rule golf_train uses it, and trajeq (rules/traj.smk) with GOLF's own counts, so the two train
    the same steps on the same schedule."""
    u = utd_ratio
    return train_settings(
        params,
        steps=u * max(labelled[-1], 1),
        schedule_start=u * sum(labelled[:-1]),
        schedule_total=u * budget,
    )


def trajeq_frames(trajectories, round_: int, rounds: int):
    """trajeq's new data after round ``round_`` of ``rounds``: the trajectory baseline's frames that
    cost an oracle call (golf.oracle.trajectories.extra_frames), in the seeded start order the budget
    was spent in (``rank``, then ``step``), the first floor(round_ x n / rounds) of them. Round r
    thus adds the next k/R, as GOLF's round r adds its per_round labels to the earlier rounds'."""
    from golf.oracle.trajectories import extra_frames

    frames = extra_frames(trajectories)

    def position(i: int) -> tuple:
        c = frames.conformers[i]
        return c.props.get("rank", c.props["traj"]), c.props["traj"], c.props["step"]

    order = sorted(range(len(frames)), key=position)
    return frames.subset(order[: round_ * len(order) // rounds])


def _train(model, d0: Dataset, new: Dataset | None, settings, params: dict, metrics_csv, checkpoint):
    """golf.train.train with the rule's metrics file and resumable checkpoint."""
    from golf import train  # torch: not in the oracle rules' environment, which imports this module

    checkpoint_every = params["train"]["checkpoint_every"]
    return train.train(
        model, d0, new, settings, metrics_csv=metrics_csv, checkpoint=checkpoint, checkpoint_every=checkpoint_every
    )


def train_golf_round(
    model, d0: Dataset, rounds: list[Dataset], params: dict, *, utd_ratio: int, budget: int, metrics_csv, checkpoint
):
    """golf-r (or random-r): model r-1 fine-tuned on D0 and the labels of rounds 1..r.

    U gradient steps per new conformation of this round (the paper's update-to-data ratio); each
    batch takes golf.initial_conf_pct of its conformations from D0 (golf-paper.md §1.4). The
    rounds share one cosine schedule over the whole budget, U x rounds x per_round steps.
    ``params``: the rule's ``train`` params (rules/common.smk ``train_params``)."""
    new = data.concat(rounds)
    labelled = [sum(c.labelled for c in r.conformers) for r in rounds]
    settings = golf_round_settings(params, utd_ratio, budget, labelled)
    result = _train(model, d0, new, settings, params, metrics_csv, checkpoint)
    result.model.meta["extra_oracle_calls"] = sum(c.labelled for c in new.conformers)
    return result.model


def train_traj(model, d0: Dataset, optimisations: Dataset, params: dict, *, steps: int, metrics_csv, checkpoint):
    """traj-k as in the paper (golf-paper.md §2): the baseline fine-tuned once, batches drawn
    uniformly from D0 and the trajectories' frames that cost an oracle call, ``steps`` gradient
    steps (U x the GOLF budget)."""
    from golf.oracle.trajectories import extra_frames

    trajectories = extra_frames(optimisations)
    # D0's attributes carry its validation split; the trajectory frames start from D0 conformations
    # that are not held out, so training keeps them (golf.train.trainer validates by D0's marks).
    pool = data.concat([d0, trajectories], attrs=dict(d0.attrs))
    settings = train_settings(params, steps=steps)
    result = _train(model, pool, None, settings, params, metrics_csv, checkpoint)
    result.model.meta["extra_oracle_calls"] = len(trajectories)
    return result.model


def train_trajeq(
    model,
    d0: Dataset,
    optimisations: Dataset,
    golf_rounds: list[Dataset],
    params: dict,
    *,
    utd_ratio: int,
    budget: int,
    round_: int,
    rounds: int,
    metrics_csv,
    checkpoint,
):
    """trajeq-k's round ``round_`` (issue 19): traj-k's frames trained exactly as GOLF trains.

    It fine-tunes round r-1 (the baseline for r = 1) on D0 and the first r x k/R frames in the
    seeded start order (:func:`trajeq_frames`), with golf_train's settings from GOLF's own label
    counts of rounds 1..r (``golf_rounds``), so it trains golf-r's gradient steps at golf-r's
    place of the shared schedule, whatever labels GOLF lost to failures."""
    labelled = [sum(c.labelled for c in r.conformers) for r in golf_rounds]
    settings = golf_round_settings(params, utd_ratio, budget, labelled)
    new = trajeq_frames(optimisations, round_, rounds)
    # The frames start from D0 conformations that are not held out (this seed's split), so
    # training keeps them all; an empty slice (k < R) trains on D0 alone, as GOLF would.
    result = _train(model, d0, new if len(new) else None, settings, params, metrics_csv, checkpoint)
    result.model.meta["extra_oracle_calls"] = len(new)
    result.model.meta["trajeq"] = {"round": round_, "rounds": rounds, "golf_labelled": labelled}
    return result.model


def oracle_optimisation_chunk(oracle, starts: Dataset, chunk: int, n_chunks: int, traj: dict | None, **settings):
    """Oracle optimisation trajectories of chunk ``chunk`` of ``n_chunks`` (0-based).

    The reference minima (``traj`` None): starts chunk, chunk + n_chunks, ... The trajectory
    baseline (``traj``: ``seed``, ``share``): labelled D0 conformations of molecules that
    training does not hold out for validation, in a seeded random order; the chunk runs whole
    trajectories until its share of the budget is spent, and the gather keeps k in that order
    (each frame's ``rank`` is its start's rank in the whole order). ``settings``: the rest of
    :func:`golf.oracle.trajectories.oracle_trajectories`'s arguments."""
    from golf.oracle.trajectories import oracle_trajectories, shuffled
    from golf.train.validation import validation_predicate

    budget = None
    if traj is not None:
        held_out = validation_predicate(starts)
        starts = starts.subset([c.labelled and not held_out(c) for c in starts.conformers])
        order = shuffled(len(starts), traj["seed"])[chunk::n_chunks]
        budget = traj["share"]
    else:
        order = list(range(chunk, len(starts), n_chunks))
    trajectories = oracle_trajectories(oracle, starts, budget=budget, whole_trajectories=True, order=order, **settings)
    for frame in trajectories.conformers:  # the rank in the whole seeded order, for the gather
        frame.props["rank"] = chunk + frame.props["rank"] * n_chunks
    return trajectories


def random_control_selection(
    model,
    trajectories: Dataset,
    known: list[Dataset],
    *,
    seed: int,
    round_: int,
    mmff_threshold: float,
    parallel: int,
    timelimit: int,
    max_displacement: float | None,
) -> Dataset:
    """The random-selection control's conformations of GOLF round ``round_``'s trajectories.

    The trajectories GOLF selects are continued past their first MMFF rise with the round's model
    (golf-(r-1), which explored them), so the control draws from whole NNP trajectories; ``known``
    (D0 and the control's earlier labels) is what it must not label again."""
    from golf.active.explore import continue_trajectories
    from golf.active.select import SelectionError, random_control_trajectories, select_random_from_trajectories

    beyond_end = continue_trajectories(
        model,
        trajectories,
        random_control_trajectories(trajectories, mmff_threshold),
        parallel=parallel,
        timelimit=timelimit,
        max_displacement=max_displacement,
    )
    with user_errors(SelectionError):
        selected = select_random_from_trajectories(
            trajectories, seed=seed, mmff_threshold=mmff_threshold, beyond_end=beyond_end, known=known
        )
    selected.attrs.update(
        round=round_,
        frames_beyond_end=len(beyond_end),
        rerun_max_deviation=beyond_end.attrs["rerun_max_deviation"],
        beyond_end_nnp_seconds=beyond_end.attrs["nnp_seconds"],
        beyond_end_mmff_seconds=beyond_end.attrs["mmff_seconds"],
    )
    return selected
