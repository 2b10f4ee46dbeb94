import pytest

from simulations.run import parse_args, progress_line, run_config_for


def test_progress_line_estimates_time_left_from_the_rounds_done_in_this_run():
    assert progress_line("m", 0, 50, 0, "", 30.0) == (
        "[m] round 0/50 | … | 0.5 min, time left: after the first round"
    )
    # 10 rounds (of which 4 resumed) took 120 s: 20 s a round, 40 rounds left.
    assert progress_line("m", 10, 50, 4, "β=1: 80%", 120.0) == (
        "[m] round 10/50 | β=1: 80% | 2.0 min, ~13.3 min left"
    )


def test_run_config_for_names_each_run_and_validates_it(tmp_path):
    cfg = run_config_for({"model": "lenet5"}, "fjord", 3, tmp_path, {"num-rounds": 2})
    assert cfg["run-name"] == "fjord-seed3" and cfg["seed"] == 3 and cfg["num-rounds"] == 2
    assert cfg["output-dir"] == str(tmp_path / "runs")
    with pytest.raises(ValueError, match="num-rounds"):
        run_config_for({}, "maestro", 0, tmp_path, {"num-rounds": 0})


def test_bad_harness_arguments_are_refused(tmp_path, capsys):
    conf = tmp_path / "x.toml"
    conf.write_text('model = "cnn"\n')
    with pytest.raises(SystemExit):
        parse_args(["--conf", str(conf), "--methods", "maestro,fedprox"])
    assert "unknown method(s) ['fedprox']" in capsys.readouterr().err
    args = parse_args(["--conf", str(conf), "--set", "lr=0.1", "--set", "sampler=uniform"])
    assert args.sets == {"lr": 0.1, "sampler": "uniform"}
