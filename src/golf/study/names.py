"""The study's names: models, evaluation protocols, seed directories and per-round seeds.

The one place that builds or parses them (the rules in ``rules/common.smk`` import it too):

- models: "baseline", "golf-<r>" (GOLF after round r), "traj-<k>" (the paper's trajectory
  baseline at k extra oracle calls), "trajeq-<k>" (traj-k's data trained as GOLF trains),
  "random-<r>" (the random-selection control after round r), "mmff", "oracle";
- protocols: "paper" (the paper's L-BFGS) or "capped-<Angstrom>" (each step capped);
- seeds: a study's repeat s lives under ``seed-<s>/``;
- label files (built by the rules' paths, read back here): GOLF's round r is labelled as
  ``labels/round-<r>.h5``, the random control's as ``labels/random-<r>.h5``; the trajectory
  baseline's frames are ``optimisation/traj.h5``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "ARMS",
    "PAPER_PROTOCOL",
    "model_name",
    "parse_model",
    "arm_models",
    "model_sort_key",
    "protocol_name",
    "capped_displacement",
    "seed_dir",
    "seed_of_path",
    "round_seed",
    "parse_label_file",
]

ARMS = ("golf", "traj", "trajeq", "random")  # numbered models: <arm>-<round or budget>
_MODEL = re.compile(rf"({'|'.join(ARMS)})-(\d+)")
_ORDER = {"oracle": 0, "mmff": 1, "baseline": 2, **{arm: 3 + i for i, arm in enumerate(ARMS)}}
PAPER_PROTOCOL = "paper"
_CAPPED = re.compile(r"capped-([0-9.eE+-]+)")
_SEED_DIR = re.compile(r"seed-(\d+)")
_LABEL_FILE = re.compile(r"(round|random)-(\d+)\.h5")


def model_name(arm: str, number: int) -> str:
    """``<arm>-<number>``: "golf-6", "traj-96", "trajeq-96", "random-6"."""
    if arm not in ARMS:
        raise ValueError(f"not a numbered arm: {arm!r} (one of {', '.join(ARMS)})")
    return f"{arm}-{int(number)}"


def parse_model(model: str) -> tuple[str, int] | None:
    """(arm, round or budget) of a numbered model, None for any other name."""
    m = _MODEL.fullmatch(model)
    return (m.group(1), int(m.group(2))) if m else None


def arm_models(models: Iterable[str], arm: str) -> list[str]:
    """The models of one numbered arm, by round or budget."""
    numbered = [(parse_model(m), m) for m in models]
    return [m for p, m in sorted((p, m) for p, m in numbered if p and p[0] == arm)]


def model_sort_key(model: str) -> tuple:
    """Order for tables and legends: oracle, mmff, baseline, golf-1.., traj-<k>, trajeq-<k>,
    random-<n>, others."""
    if model in _ORDER:
        return (_ORDER[model], 0, model)
    parsed = parse_model(model)
    if parsed:
        return (_ORDER[parsed[0]], parsed[1], model)
    return (3 + len(ARMS), 0, model)


def protocol_name(max_displacement: float | None) -> str:
    """ "paper" for the paper's L-BFGS, "capped-<Angstrom>" for one with a step cap."""
    if max_displacement is None:
        return PAPER_PROTOCOL
    if not max_displacement > 0:
        raise ValueError(f"max_displacement must be > 0 Angstrom or None, got {max_displacement}")
    return f"capped-{max_displacement:g}"


def capped_displacement(protocol: str) -> str | None:
    """The step cap (as written) of a "capped-<Angstrom>" protocol, None for any other."""
    m = _CAPPED.fullmatch(protocol)
    return m.group(1) if m else None


def seed_dir(root: str, seed: int | str) -> str:
    """The directory of seed ``seed``'s results under ``root``."""
    return f"{root}/seed-{seed}"


def seed_of_path(path: str | Path) -> int | None:
    """The seed of a result file, from its ``seed-<s>/`` directory; None outside one."""
    m = _SEED_DIR.search(Path(path).as_posix())
    return int(m.group(1)) if m else None


def round_seed(seed: int, round_index: int) -> int:
    """The random stream of GOLF round ``round_index`` (its start sample, the random control's
    draw): different every round, reproducible from the study's seed."""
    return int(seed) * 1000 + int(round_index)


def parse_label_file(path: str | Path) -> tuple[float | None, str, int] | None:
    """(seed or None, arm "golf"/"random"/"traj", round; 0 for traj) of a label file by its path:
    ``[seed-<s>/]labels/round-<r>.h5``, ``labels/random-<r>.h5``, ``optimisation/traj.h5``;
    None for any other."""
    path = Path(path)
    seed = seed_of_path(path)
    seed = None if seed is None else float(seed)
    m = _LABEL_FILE.fullmatch(path.name)
    if m:
        return seed, "golf" if m.group(1) == "round" else "random", int(m.group(2))
    if path.name == "traj.h5":
        return seed, "traj", 0
    return None
