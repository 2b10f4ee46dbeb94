"""Run configs and federation settings, checked before Flower starts."""

from pathlib import Path

import pytest

from simulations.harness.configs import prepare, run_config_for
from simulations.harness.errors import HarnessError
from simulations.run import parse_args
from tests.simulations.harness.runs import harness_args


def test_run_config_for_names_each_run_and_validates_it(tmp_path):
    cfg = run_config_for({"model": "lenet5"}, "fjord", 3, tmp_path, {"num-rounds": 2})
    assert cfg["run-name"] == "fjord-seed3" and cfg["seed"] == 3 and cfg["num-rounds"] == 2
    assert cfg["output-dir"] == str(tmp_path / "runs")
    with pytest.raises(ValueError, match="num-rounds"):
        run_config_for({}, "maestro", 0, tmp_path, {"num-rounds": 0})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("tier-speeds", "1e9,fast", "tier-speeds must be comma-separated numbers"),
        ("tier-down", "1e6,2e6", "tier-down must have 5 values"),
        ("tier-availability", "1.5", "availability must be in"),
    ],
)
def test_bad_profile_strings_are_refused_before_flower_starts(tmp_path, key, value, message):
    with pytest.raises(ValueError, match=message):
        run_config_for({}, "maestro", 0, tmp_path, {key: value})


def _args(tmp_path, *extra: str):
    conf = tmp_path / "x.toml"
    conf.write_text('model = "cnn"\nnum-rounds = 2\n')
    return parse_args(["--conf", str(conf), "--out", str(tmp_path / "out"), *extra])


def test_supernodes_below_min_nodes_are_refused(tmp_path):
    args = _args(tmp_path, "--supernodes", "3", "--set", "min-nodes=4")
    with pytest.raises(HarnessError, match="--supernodes 3 is below min-nodes=4"):
        prepare(args, tmp_path / "out")
    _configs, federation, flwr = prepare(_args(tmp_path, "--supernodes", "4"), tmp_path / "out")
    assert federation["num-supernodes"] == 4 and "num-supernodes=4" in flwr
    assert "malloc" not in flwr  # a harness setting, not Flower's


def _conf_args(tmp_path, conf_text: str, *extra: str):
    conf = tmp_path / "e.toml"
    conf.write_text(conf_text)
    return parse_args(["--conf", str(conf), "--out", str(tmp_path / "out"), *extra])


def test_the_experiment_file_gives_the_node_count_and_the_command_line_overrides_it(tmp_path):
    text = 'num-supernodes = 7\nmodel = "cnn"\nnum-rounds = 2\n'
    configs, federation, flwr = prepare(_conf_args(tmp_path, text), tmp_path / "out")
    assert federation["num-supernodes"] == 7 and "num-supernodes=7" in flwr
    assert all("num-supernodes" not in cfg for cfg in configs)  # not passed on as run config
    assert configs[0]["num-rounds"] == 2
    _, federation, flwr = prepare(_conf_args(tmp_path, text, "--supernodes", "4"), tmp_path / "o")
    assert federation["num-supernodes"] == 4 and "num-supernodes=4" in flwr


def test_without_a_node_count_the_harness_runs_100(tmp_path):
    _, federation, _ = prepare(_conf_args(tmp_path, 'model = "cnn"\n'), tmp_path / "out")
    assert federation["num-supernodes"] == 100


def test_the_files_node_count_is_checked_against_min_nodes_and_named(tmp_path):
    args = _conf_args(tmp_path, "num-supernodes = 3\nmin-nodes = 4\n")
    with pytest.raises(HarnessError, match=r"num-supernodes = 3 \(the experiment file\) is below"):
        prepare(args, tmp_path / "out")


@pytest.mark.parametrize("value", ["0", "2.5", '"20"', "true"])
def test_a_bad_node_count_in_the_file_is_refused(tmp_path, value):
    args = _conf_args(tmp_path, f"num-supernodes = {value}\n")
    with pytest.raises(HarnessError, match="num-supernodes must be an integer ≥ 1"):
        prepare(args, tmp_path / "out")


def test_the_node_count_is_not_a_run_config_override(tmp_path):
    args = _conf_args(tmp_path, 'model = "cnn"\n', "--set", "num-supernodes=5")
    with pytest.raises(HarnessError, match="give --supernodes N instead"):
        prepare(args, tmp_path / "out")


@pytest.mark.parametrize(
    ("name", "nodes"),
    [
        ("demo.toml", 20),
        ("shakespeare.toml", 1001),
        ("fmnist-100.toml", 100),
        ("fmnist-100-fedavg-all.toml", 100),
    ],
)
def test_each_shipped_experiment_file_says_its_node_count(name, nodes):
    from simulations.experiment import read_experiment

    path = Path(__file__).resolve().parents[3] / "simulations" / "conf" / name
    experiment = read_experiment(path)
    assert experiment.supernodes == nodes
    run_config_for(experiment.run_config, "maestro", 0, Path("out"), {})  # the rest is run config


def test_lr_sweep_needs_a_validation_split_and_owns_the_lr(tmp_path, fmnist_sample):
    conf = f'model = "lenet5"\ndata-dir = "{fmnist_sample}"\nnum-rounds = 5\n'
    args = harness_args(tmp_path, conf, "--lrs", "0.02,0.05", "--supernodes", "4")
    with pytest.raises(HarnessError, match="val-size is 0"):
        prepare(args, tmp_path / "out")
    conf += "val-size = 400\n"
    args = harness_args(tmp_path, conf, "--lrs", "0.02", "--set", "lr=0.1", "--supernodes", "4")
    with pytest.raises(HarnessError, match="leave out --set lr"):
        prepare(args, tmp_path / "out")
    args = harness_args(tmp_path, conf, "--supernodes", "2001")
    with pytest.raises(HarnessError, match="val-size=400 leaves 2000 of 2400 training examples"):
        prepare(args, tmp_path / "out")


def test_a_missing_or_foreign_bench_file_is_refused_before_flower_starts(tmp_path, fmnist_sample):
    conf = f'model = "lenet5"\ndata-dir = "{fmnist_sample}"\nnum-rounds = 1\n'
    args = harness_args(tmp_path, conf, "--bench", str(tmp_path / "none.json"), "--supernodes", "2")
    with pytest.raises(HarnessError, match=r"run `python -m simulations\.bench` to write it"):
        prepare(args, tmp_path / "out")
    (tmp_path / "other.json").write_text('{"rows": []}')
    args = harness_args(
        tmp_path, conf, "--bench", str(tmp_path / "other.json"), "--supernodes", "2"
    )
    with pytest.raises(HarnessError, match=r"not a simulations\.bench file"):
        prepare(args, tmp_path / "out")
