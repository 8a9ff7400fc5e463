"""golf.cli.config: schema validation with defaults, one-line errors naming the key, the shipped configs."""

from pathlib import Path

import pytest
import yaml

from golf.cli import config as golf_config
from golf.cli.config import ConfigError, golf_budget, load, traj_budget, validate

REPO = Path(__file__).resolve().parents[1]


def _error(config: dict) -> str:
    with pytest.raises(ConfigError) as info:
        validate(config)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_are_filled_at_every_level():
    filled = validate({})
    schema = yaml.safe_load(golf_config.SCHEMA_PATH.read_text())
    # every section of the schema appears, with every key that has a default
    for section, sub in schema["properties"].items():
        assert section in filled, section
        for key, spec in sub.get("properties", {}).items():
            if "default" in spec:
                if isinstance(spec["default"], dict):  # a nested section: its own defaults are filled in too
                    assert spec["default"].items() <= filled[section][key].items(), f"{section}.{key}"
                else:
                    assert filled[section][key] == spec["default"], f"{section}.{key}"
    assert filled["conformers"]["per_molecule"] == 4
    assert filled["golf"]["mmff_threshold"] == 300
    assert filled["oracle"]["max_force_norm"] == 10.5
    assert filled["data"]["d0"] is None


def test_given_values_win_and_input_is_not_changed():
    given = {"golf": {"rounds": 7}, "oracle": {"method": "b3lyp"}}
    filled = validate(given)
    assert filled["golf"]["rounds"] == 7 and filled["golf"]["per_round"] == 16  # sibling default filled
    assert filled["oracle"]["method"] == "b3lyp" and filled["oracle"]["basis"] == "sto-3g"
    assert given == {"golf": {"rounds": 7}, "oracle": {"method": "b3lyp"}}
    assert golf_budget(filled) == 7 * 16 and traj_budget(filled) == 7 * 16
    assert traj_budget(validate({"traj": {"budget": 5}})) == 5


def test_defaults_are_not_shared_between_calls():
    a = validate({})
    a["nnp"]["layers"].append(1)
    a["elements"].append("Br")
    b = validate({})
    assert b["nnp"]["layers"] == [128, 96, 64] and "Br" not in b["elements"]


def test_unknown_top_level_key_names_it_and_the_allowed_keys():
    message = _error({"golff": {}})
    assert "'golff'" in message and "top level" in message
    assert "golf" in message and "conformers" in message and "evaluation" in message


def test_unknown_nested_key_names_it_and_the_allowed_keys():
    message = _error({"golf": {"per_round": 4, "perround": 4}})
    assert "'perround'" in message and "'golf'" in message
    for allowed in ("per_round", "parallel", "timelimit", "mmff_threshold"):
        assert allowed in message


@pytest.mark.parametrize(
    "config, key",
    [
        ({"conformers": {"per_molecule": "four"}}, "conformers.per_molecule"),
        ({"conformers": {"per_molecule": 0}}, "conformers.per_molecule"),
        ({"conformers": {"test_fraction": 0.95}}, "conformers.test_fraction"),
        ({"oracle": {"timeout_s": 0}}, "oracle.timeout_s"),
        ({"golf": {"rounds": 1.5}}, "golf.rounds"),
        ({"golf": {"rounds": True}}, "golf.rounds"),
        ({"nnp": {"device": "gpu"}}, "nnp.device"),
        ({"nnp": {"layers": [16, 0]}}, "nnp.layers.1"),
        ({"elements": ["H", "Br"]}, "elements.1"),
        ({"evaluation": {"steps": []}}, "evaluation.steps"),
        ({"study": {"seeds": []}}, "study.seeds"),
        ({"study": {"seeds": [0, 0]}}, "study.seeds"),
        ({"study": {"seeds": [-1]}}, "study.seeds.0"),
        ({"control": {"random": "yes"}}, "control.random"),
        ({"nnp": {"baseline_model": 3}}, "nnp.baseline_model"),
    ],
)
def test_bad_value_names_the_key(config, key):
    message = _error(config)
    assert f"'{key}'" in message


def test_enum_error_lists_allowed_values():
    message = _error({"elements": ["H", "Br"]})
    assert "allowed: H, C, N, O, F, S, Cl" in message


def test_evaluation_steps_beyond_timelimit():
    message = _error({"evaluation": {"timelimit": 50, "steps": [1, 30, 60, 100]}})
    assert "evaluation.steps" in message and "[60, 100]" in message and "50" in message
    assert validate({"evaluation": {"timelimit": 50, "steps": [1, 50]}})["evaluation"]["steps"] == [1, 50]


@pytest.mark.parametrize("name", ["config/config.yaml", "config/paper.yaml", "tests/data/tiny.yaml"])
def test_shipped_configs_validate(name):
    filled = load(REPO / name)
    raw = yaml.safe_load((REPO / name).read_text())
    for section, values in raw.items():
        if isinstance(values, dict):
            for key, value in values.items():
                assert filled[section][key] == value
        else:
            assert filled[section] == values
    assert filled["evaluation"]["steps"][-1] <= filled["evaluation"]["timelimit"]


def test_load_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load(tmp_path / "nope.yaml")


def test_load_invalid_yaml_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("golf:\n  rounds: 3\n per_round: [1, 2\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert "not valid YAML" in message and str(path) in message
    assert "\n" not in message
    assert "line" in message  # the user learns where


def test_load_non_mapping_and_empty(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load(path)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    assert load(empty) == validate({})


def test_load_a_directory_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError):
        load(tmp_path)


def test_validated_config_has_sorted_keys_at_every_level():
    # Rules pass config sections as params; Snakemake compares their repr, so key order must not
    # depend on the YAML file's order (a reordered file would rerun every job).
    a = validate({"train": {"seed": 1, "lr": 0.01}, "golf": {"rounds": 2}})
    b = validate({"golf": {"rounds": 2}, "train": {"lr": 0.01, "seed": 1}})
    assert repr(a) == repr(b)
    assert list(a) == sorted(a) and list(a["train"]) == sorted(a["train"])


def test_study_defaults_one_seed_no_control_no_imported_baseline():
    config = validate({})
    assert config["study"]["seeds"] == [0]
    assert config["control"]["random"] is False
    assert config["nnp"]["baseline_model"] is None


def test_traj_equal_training_is_on_by_default():
    assert validate({})["traj"]["equal_training"] is True
    assert validate({"traj": {"equal_training": False}})["traj"]["equal_training"] is False
    assert "traj.equal_training" in _error({"traj": {"equal_training": "yes"}})


def test_schema_elements_are_the_supported_elements():
    """One element table (golf.data.molecule.ELEMENTS): the schema allows and defaults to it."""
    from golf.data.molecule import ELEMENTS

    elements = yaml.safe_load(golf_config.SCHEMA_PATH.read_text())["properties"]["elements"]
    assert elements["items"]["enum"] == list(ELEMENTS) == elements["default"]
