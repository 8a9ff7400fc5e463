"""Study configuration: YAML, validated against config/schema/config.schema.yaml, defaults filled.

A bad key or value fails before any job runs, with one line that names the key and what is allowed.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[3] / "config" / "schema" / "config.schema.yaml"


class ConfigError(Exception):
    """An invalid configuration; the message names the key and what is allowed."""


def _validator_with_defaults(schema: dict):
    from jsonschema import Draft202012Validator, validators

    properties = Draft202012Validator.VALIDATORS["properties"]

    def set_defaults(validator, props, instance, schema):
        if isinstance(instance, dict):
            for name, sub in props.items():
                if "default" in sub:
                    instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from properties(validator, props, instance, schema)

    cls = validators.extend(Draft202012Validator, {"properties": set_defaults})
    return cls(schema)


def _describe(error, schema: dict) -> str:
    key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        where = f"in '{key}'" if error.absolute_path else "at the top level"
        return f"unknown config key {', '.join(map(repr, unknown))} {where}; allowed: {allowed}"
    what = error.schema.get("description", "")
    allowed = ""
    if "enum" in error.schema:
        allowed = f"; allowed: {', '.join(map(str, error.schema['enum']))}"
    return f"config key '{key}': {error.message}{allowed}" + (f" ({what})" if what else "")


def validate(config: dict, schema_path: str | Path = SCHEMA_PATH) -> dict:
    """Validate a config dict, fill defaults, check cross-key rules. Returns the filled copy."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    config = copy.deepcopy(config or {})
    validator = _validator_with_defaults(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError(_describe(errors[0], schema))
    # Cross-key rules the schema cannot express.
    evaluation = config["evaluation"]
    too_late = [s for s in evaluation["steps"] if s > evaluation["timelimit"]]
    if too_late:
        raise ConfigError(
            f"config key 'evaluation.steps': {too_late} exceed evaluation.timelimit = {evaluation['timelimit']}"
        )
    if config["data"]["test_minima"] and not config["data"]["test"]:
        raise ConfigError("config key 'data.test_minima' needs 'data.test': the minima come from the test file")
    return _sorted_keys(config)


def _sorted_keys(value):
    """Mappings with their keys in sorted order, recursively. Rules pass config sections as
    ``params``, and Snakemake compares params by their repr: without this, reordering keys in a
    YAML file (or a default filled in) would rerun every job."""
    if isinstance(value, dict):
        return {k: _sorted_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(v) for v in value]
    return value


def load(path: str | Path) -> dict:
    """Read and validate a YAML config file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as err:  # a directory, no permission, ...
        raise ConfigError(f"{path}: cannot read the config file ({err.strerror})") from None
    except yaml.YAMLError as err:
        # PyYAML's message spans several lines (context, marks); the error must be one line.
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys to values")
    return validate(raw)


def golf_budget(config: dict) -> int:
    """Extra oracle calls of the GOLF rounds: rounds x conformations per round."""
    return config["golf"]["rounds"] * config["golf"]["per_round"]


def traj_budget(config: dict) -> int:
    """Extra oracle calls of the trajectory baseline; defaults to the GOLF budget (equal cost)."""
    return config["traj"]["budget"] or max(golf_budget(config), 1)
