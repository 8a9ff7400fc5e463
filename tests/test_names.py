"""golf.study.names: the one grammar of model, protocol, seed and label-file names."""

import pytest

from golf.study import names


def test_model_names_round_trip_and_order():
    for arm, n in (("golf", 6), ("traj", 96), ("trajeq", 96), ("random", 1)):
        assert names.parse_model(names.model_name(arm, n)) == (arm, n)
    assert names.parse_model("baseline") is None and names.parse_model("golf-6.capped-0.02") is None
    with pytest.raises(ValueError, match="not a numbered arm"):
        names.model_name("mmff", 1)
    models = ["random-2", "golf-10", "trajeq-96", "mmff", "golf-2", "traj-96", "baseline", "oracle"]
    assert names.arm_models(models, "golf") == ["golf-2", "golf-10"]  # by round, not as text
    assert sorted(models, key=names.model_sort_key) == [
        "oracle", "mmff", "baseline", "golf-2", "golf-10", "traj-96", "trajeq-96", "random-2",
    ]  # fmt: skip


def test_protocols_seeds_and_label_files():
    assert names.protocol_name(None) == "paper" and names.protocol_name(0.02) == "capped-0.02"
    assert names.capped_displacement("capped-0.02") == "0.02" and names.capped_displacement("paper") is None
    assert names.seed_dir("results", 3) == "results/seed-3"
    assert names.seed_of_path("results/seed-3/labels/round-2.h5") == 3
    assert names.seed_of_path("results/labels/d0.h5") is None
    assert names.parse_label_file("results/seed-1/labels/round-2.h5") == (1.0, "golf", 2)
    assert names.parse_label_file("results/seed-1/labels/random-4.h5") == (1.0, "random", 4)
    assert names.parse_label_file("results/seed-0/optimisation/traj.h5") == (0.0, "traj", 0)
    assert names.parse_label_file("results/labels/d0.h5") is None
    assert [names.round_seed(2, r) for r in (1, 2)] == [2001, 2002]  # golf.seed 0 + study seed 2
