import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from simulations import provenance
from simulations.run import (
    HarnessError,
    Plan,
    check_folder,
    never_trained,
    parse_args,
    plan_run,
    prepare,
    progress_line,
    run_config_for,
    run_dir,
    write_comparison,
)
from tests.simulations.test_report import FINAL, fake_run


def _row(rnd: int, wall: float = 10.0, acc: dict | None = None, clients: int = 2) -> dict:
    row = {"round": rnd, "wall-seconds": wall, "clients": [{"dropped": False}] * clients}
    if acc:
        row["tiers"] = {t: {"accuracy": a} for t, a in acc.items()}
    return row


def test_progress_shows_start_up_then_rounds_with_time_left_from_round_times():
    assert progress_line("m", [], 50, 0, 42.4) == (
        "[m] starting up (SuperLink, simulation engine, clients): 42 s"
    )
    # Resumed after round 4: old rows do not count as progress of this invocation.
    old = [_row(r, wall=99.0) for r in range(1, 5)]
    assert "starting up" in progress_line("m", old, 50, 4, 5.0)
    # 6 new rounds of 20 s each (start-up excluded), 40 rounds left: 13.3 min.
    rows = old + [_row(r, wall=20.0) for r in range(5, 10)]
    rows.append(_row(10, wall=20.0, acc={"0.2": 0.75, "0.6": 0.7, "1": 0.8}))
    assert progress_line("m", rows, 50, 4, 999.0) == (
        "[m] round 10/50 | β=0.2: 75.00%, β=1: 80.00% | 20.0 s/round, ~13.3 min left"
    )


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

    path = Path(__file__).resolve().parents[2] / "simulations" / "conf" / name
    experiment = read_experiment(path)
    assert experiment.supernodes == nodes
    run_config_for(experiment.run_config, "maestro", 0, Path("out"), {})  # the rest is run config


def test_the_demo_target_takes_the_files_node_count():
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    demo = makefile[makefile.index("\ndemo:") :].split("\n\n")[0]
    assert "--conf simulations/conf/demo.toml" in demo
    # --supernodes only when DEMO_NODES is given, and by default it is not: demo.toml says 20.
    assert "$(if $(DEMO_NODES),--supernodes $(DEMO_NODES))" in demo
    assert re.search(r"^DEMO_NODES \?=\s*$", makefile, re.MULTILINE)


def test_main_refuses_before_starting_anything(tmp_path, capsys):
    from simulations.run import main

    conf = tmp_path / "x.toml"
    conf.write_text("min-nodes = 5\n")
    with pytest.raises(SystemExit, match="below min-nodes=5"):
        main(["--conf", str(conf), "--supernodes", "2", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_bad_harness_arguments_are_refused(tmp_path, capsys):
    conf = tmp_path / "x.toml"
    conf.write_text('model = "cnn"\n')
    with pytest.raises(SystemExit):
        parse_args(["--conf", str(conf), "--methods", "maestro,fedprox"])
    assert "unknown method(s) ['fedprox']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--conf", str(conf), "--select-only"])
    assert "--select-only runs the lr sweep only: give --lrs too" in capsys.readouterr().err
    args = parse_args(["--conf", str(conf), "--set", "lr=0.1", "--set", "sampler=uniform"])
    assert args.sets == {"lr": 0.1, "sampler": "uniform"}


def test_help_shows_every_flag_with_help_and_default(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in ("--supernodes", "--cpus-per-client", "--malloc", "--last-evals", "--out"):
        assert flag in text
    assert "(default: 3)" in text and "(default: fast)" in text
    assert re.search(r"num-\s*supernodes, else 100", text)


def test_never_trained():
    assert never_trained([])
    assert never_trained([_row(1, clients=0), _row(2, clients=0)])
    assert never_trained([{"round": 1, "valid-replies": 0, "no-valid-reply": True}])
    assert not never_trained([_row(1, clients=0), _row(2, clients=1)])
    assert not never_trained([{"round": 1, "valid-replies": 3}])


def _request(**changes) -> dict:
    cfg = {"num-rounds": 3, "lr": 0.1, "method": "maestro", "seed": 0, **changes}
    return provenance.make_request(cfg, {"num-supernodes": 10, "malloc": "fast"})


def _fake_run(folder, rounds: int, request: dict | None) -> None:
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(_row(r)) + "\n" for r in rounds))
    if request is not None:
        provenance.write_record(folder, request, "python -m simulations.run ...", "abc", 1)


def test_same_request_is_skipped_or_resumed_another_is_refused(tmp_path):
    folder = tmp_path / "maestro-seed0"
    assert plan_run(folder, _request(), 3).action == "new"
    _fake_run(folder, range(1, 3), _request())
    assert plan_run(folder, _request(), 3).action == "resume"
    assert plan_run(folder, _request(**{"num-rounds": 9}), 9).done == 2  # more rounds: resume
    with pytest.raises(HarnessError, match=r"run-config.lr: 0.1 -> 0.2"):
        plan_run(folder, _request(lr=0.2), 3)
    other_fed = provenance.make_request({"num-rounds": 3, "lr": 0.1}, {"num-supernodes": 20})
    with pytest.raises(HarnessError, match=r"federation\.num-supernodes: 10 -> 20"):
        plan_run(folder, other_fed, 3)
    with pytest.raises(HarnessError, match="holds 2 rounds but num-rounds=1"):
        plan_run(folder, _request(**{"num-rounds": 1}), 1)
    _fake_run(tmp_path / "done", range(1, 4), _request())
    assert plan_run(tmp_path / "done", _request(), 3).action == "skip"
    _fake_run(tmp_path / "old", range(1, 4), None)
    with pytest.raises(HarnessError, match=r"without a harness\.json"):
        plan_run(tmp_path / "old", _request(), 3)


def test_defaults_count_as_settings(tmp_path):
    # An explicit value equal to the default is the same request; a changed default is not.
    assert not provenance.differences(_request(), _request(momentum=0.9))
    assert provenance.differences(_request(), _request(momentum=0.5)) == [
        "run-config.momentum: 0.9 -> 0.5"
    ]


def test_a_key_older_records_lack_reads_as_its_default():
    # A run recorded before warmup-method existed ran as its default does now; a new value
    # for it is still a different request.
    old = _request()
    del old["run-config"]["warmup-method"]
    assert not provenance.differences(old, _request())
    assert provenance.differences(old, _request(**{"warmup-method": "fjord"})) == [
        "run-config.warmup-method: 'fedavg-all' -> 'fjord'"
    ]


def test_a_moved_out_folder_holds_the_same_runs(tmp_path):
    # Where the folder lies is not a setting: a copied or moved --out is skipped, not refused
    # (records written before output-dir was volatile hold it; it is ignored there too).
    old = _request()
    old["run-config"]["output-dir"] = "/elsewhere/runs"
    assert not provenance.differences(old, _request(**{"output-dir": str(tmp_path / "runs")}))


def test_other_runs_in_the_folder_must_share_the_settings(tmp_path):
    runs = tmp_path / "runs"
    _fake_run(runs / "fjord-seed0", range(1, 4), _request(method="fjord"))
    check_folder(runs, _request(), {"maestro-seed0"})  # another method and seed: fine
    with pytest.raises(HarnessError, match="fjord-seed0 in this --out has other settings"):
        check_folder(runs, _request(lr=0.5), {"maestro-seed0"})


def test_ray_starts_locally_unless_a_cluster_is_named(tmp_path):
    """A stale /tmp/ray/ray_current_cluster (left by `ray start`) must not capture the run."""
    from simulations.run import LocalSuperLink

    local = LocalSuperLink(tmp_path, fast_malloc=False, base_env={"PATH": "/usr/bin"})
    named = LocalSuperLink(
        tmp_path, fast_malloc=False, base_env={"PATH": "/usr/bin", "RAY_ADDRESS": "10.0.0.1:6379"}
    )
    assert local.env["RAY_ADDRESS"] == "local"
    assert named.env["RAY_ADDRESS"] == "10.0.0.1:6379"


def _sweep_args(tmp_path, conf: str, *extra: str):
    path = tmp_path / "s.toml"
    path.write_text(conf)
    return parse_args(["--conf", str(path), "--out", str(tmp_path / "out"), *extra])


def test_lr_sweep_needs_a_validation_split_and_owns_the_lr(tmp_path, fmnist_sample):
    conf = f'model = "lenet5"\ndata-dir = "{fmnist_sample}"\nnum-rounds = 5\n'
    args = _sweep_args(tmp_path, conf, "--lrs", "0.02,0.05", "--supernodes", "4")
    with pytest.raises(HarnessError, match="val-size is 0"):
        prepare(args, tmp_path / "out")
    conf += "val-size = 400\n"
    args = _sweep_args(tmp_path, conf, "--lrs", "0.02", "--set", "lr=0.1", "--supernodes", "4")
    with pytest.raises(HarnessError, match="leave out --set lr"):
        prepare(args, tmp_path / "out")
    args = _sweep_args(tmp_path, conf, "--supernodes", "2001")
    with pytest.raises(HarnessError, match="val-size=400 leaves 2000 of 2400 training examples"):
        prepare(args, tmp_path / "out")


def _plan_sweep(
    tmp_path, data, lrs: str, seeds: str, rounds: str, methods: str = "maestro,fjord", *more: str
):
    """A 5-round lenet5 conf with a validation split, swept for ``methods``."""
    from simulations.run import Sweep, tuning_settings

    conf = f'model = "lenet5"\ndata-dir = "{data}"\nnum-rounds = 5\nval-size = 400\n'
    args = _sweep_args(
        tmp_path,
        conf,
        *("--lrs", lrs, "--methods", methods, "--seeds", seeds),
        *("--select-rounds", rounds, "--supernodes", "4", *more),
    )
    out = tmp_path / "out"
    configs, federation, _ = prepare(args, out)
    tuning = tuning_settings(args, configs)
    return args, out, configs, tuning, Sweep.plan(args, out, configs, federation, tuning)


def test_sweep_plans_one_short_run_per_method_and_lr(tmp_path, fmnist_sample):
    from simulations.run import tuning_settings

    args, out, configs, tuning, sweep = _plan_sweep(
        tmp_path, fmnist_sample, "0.02,0.05", "1,2", "3"
    )
    assert tuning == {"lrs": "0.02,0.05", "select-rounds": 3, "select-seed": 0, "last-k": 3}
    names = [c["run-name"] for c in sweep.configs]
    assert names == ["maestro-lr0.02", "maestro-lr0.05", "fjord-lr0.02", "fjord-lr0.05"]
    assert all(p.action == "new" for p in sweep.plans.values())
    run = sweep.requests["fjord-lr0.05"]["run-config"]
    assert (run["num-rounds"], run["seed"], run["lr"], run["test-eval"]) == (3, 0, 0.05, False)
    assert sweep.configs[3]["output-dir"] == str(out / "select") and run["val-size"] == 400
    # Without --select-rounds the sweep runs the full horizon.
    args.select_rounds = None
    assert tuning_settings(args, configs)["select-rounds"] == 5


def test_tuned_lrs_may_differ_between_methods_in_one_folder(tmp_path):
    runs = tmp_path / "runs"
    _fake_run(runs / "fjord-seed0", range(1, 4), _request(method="fjord", lr=0.05))
    with pytest.raises(HarnessError, match=r"run-config\.lr"):
        check_folder(runs, _request(lr=0.1), {"maestro-seed0"})
    check_folder(runs, _request(lr=0.1), {"maestro-seed0"}, tuned_lr=True)
    with pytest.raises(HarnessError, match="momentum"):
        check_folder(runs, _request(lr=0.1, momentum=0.5), {"maestro-seed0"}, tuned_lr=True)


class _FakeRunner:
    """Records runs instead of training: a sweep run's validation accuracy is 1 - |lr - 0.05|,
    and the runs of ``fail`` fail."""

    def __init__(self, fail: str = "") -> None:
        self.fail = fail
        self.ran: list[str] = []

    def run(self, cfg, plan, request):
        self.ran.append(cfg["run-name"])
        if cfg["method"] == self.fail:
            return f"{cfg['run-name']}: boom"
        acc = 1 - abs(cfg["lr"] - 0.05)
        rows = [{"round": 1, "val-tiers": {"1": {"accuracy": acc, "loss": 0.1}}}]
        _fake_run(run_dir(cfg), [], None)
        (run_dir(cfg) / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return None


def test_sweep_chooses_per_method_and_sets_the_main_runs_lr(tmp_path, fmnist_sample):
    from simulations import lr_sweep

    _, out, configs, tuning, sweep = _plan_sweep(
        tmp_path, fmnist_sample, "0.02,0.05,0.1", "0,1", "2"
    )
    failures: list[str] = []
    runner = _FakeRunner(fail="fjord")
    main, requests, plans = sweep.run(runner, configs, failures)
    assert runner.ran[:3] == ["maestro-lr0.02", "maestro-lr0.05", "maestro-lr0.1"]
    # maestro: lr 0.05 scores best; fjord's sweep failed, so its seeds are not run.
    assert [(c["run-name"], c["lr"]) for c in main] == [
        ("maestro-seed0", 0.05),
        ("maestro-seed1", 0.05),
    ]
    assert len(failures) == 3 + 2 and "fjord-seed1: not run" in failures[-1]
    request = requests["maestro-seed1"]
    assert request["run-config"]["lr"] == 0.05 and request["run-config"]["num-rounds"] == 5
    assert request["run-config"]["test-eval"] is True and request["lr-selection"] == tuning
    assert plans["maestro-seed1"].action == "new"
    selection = lr_sweep.read_selection(out)
    assert selection["methods"]["maestro"]["lr"] == 0.05
    assert selection["methods"]["fjord"]["lr"] is None


def test_a_variants_lr_is_chosen_and_kept_under_its_own_label(tmp_path, fmnist_sample):
    from simulations import lr_sweep

    _, out, configs, _, sweep = _plan_sweep(
        tmp_path, fmnist_sample, "0.05,0.1", "0", "2", "maestro", "--set", "dense-warmup=0.4"
    )
    main, _, _ = sweep.run(_FakeRunner(), configs, [])
    assert [(c["run-name"], c["lr"]) for c in main] == [("maestro-seed0", 0.05)]
    assert set(lr_sweep.read_selection(out)["methods"]) == {"maestro+warmup"}


def test_the_headline_conf_and_its_documented_sweep_parse(tmp_path):
    """docs/federated.md's headline command, up to the point where Flower would start."""
    from pathlib import Path

    from maestro_common.app.config import RunConfig
    from simulations.run import Sweep, tuning_settings

    root = Path(__file__).resolve().parents[2]
    text = (root / "docs" / "federated.md").read_text()
    flags = "--lrs 0.02,0.05,0.1 --select-rounds 50 --out runs/fmnist-100-r100"
    assert flags in text and "--seeds 0,1,2" in text
    args = parse_args(
        [
            *("--conf", str(root / "simulations/conf/fmnist-100.toml"), "--supernodes", "100"),
            *("--methods", "maestro,fjord,heterofl,fedavg-fit,fedavg-all", "--seeds", "0,1,2"),
            *("--lrs", "0.02,0.05,0.1", "--select-rounds", "50", "--out", str(tmp_path / "o")),
        ]
    )
    configs, federation, _ = prepare(args, tmp_path / "o")
    cfg = RunConfig.from_run_config(configs[0])
    assert (cfg.num_rounds, cfg.val_size, cfg.lr_schedule, cfg.eval_every) == (
        100,
        5000,
        "cosine",
        10,
    )
    sweep = Sweep.plan(args, tmp_path / "o", configs, federation, tuning_settings(args, configs))
    assert len(sweep.configs) == 15 and len(configs) == 15


def test_a_missing_or_foreign_bench_file_is_refused_before_flower_starts(tmp_path, fmnist_sample):
    conf = f'model = "lenet5"\ndata-dir = "{fmnist_sample}"\nnum-rounds = 1\n'
    args = _sweep_args(tmp_path, conf, "--bench", str(tmp_path / "none.json"), "--supernodes", "2")
    with pytest.raises(HarnessError, match=r"run `python -m simulations\.bench` to write it"):
        prepare(args, tmp_path / "out")
    (tmp_path / "other.json").write_text('{"rows": []}')
    args = _sweep_args(tmp_path, conf, "--bench", str(tmp_path / "other.json"), "--supernodes", "2")
    with pytest.raises(HarnessError, match=r"not a simulations\.bench file"):
        prepare(args, tmp_path / "out")


def test_every_invocation_names_the_cpu_model(tmp_path):
    folder = tmp_path / "maestro-seed0"
    _fake_run(folder, range(1, 2), _request())
    record = provenance.read_record(folder)
    assert record["invocations"][0]["cpu"] == provenance.cpu_model() != ""


def test_cpu_model_reads_the_model_name_or_falls_back(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU 9000\nflags\t: avx\n")
    assert provenance.cpu_model(info) == "Some CPU 9000"
    assert provenance.cpu_model(tmp_path / "missing") not in ("", "Some CPU 9000")


def test_the_harness_report_pairs_methods_when_asked(tmp_path):
    (tmp_path / "runs").mkdir()
    for method, seed in FINAL:
        fake_run(tmp_path / "runs", method, seed)
    args = SimpleNamespace(
        title="t",
        conf=Path("tiny.toml"),
        methods=["maestro", "fedavg-fit"],
        cpus_per_client=1,
        gpus_per_client=0,
        target_accuracy=0.8,
        last_evals=1,
        bench=None,
        paired_against=["fedavg-fit"],
    )
    text = write_comparison(args, tmp_path, [{}], "abc").read_text()
    assert "| maestro | fedavg-fit | 0.2 | 2 | 0,1 | +10.00 / +12.00 |" in text


def test_a_folder_with_rounds_out_of_order_or_damaged_is_refused_by_name(tmp_path):
    # What two writers on one folder left (issue 30): a round twice, out of order.
    folder = tmp_path / "twice"
    _fake_run(folder, [1, 2, 3, 2], _request())
    with pytest.raises(HarnessError, match=r"line 4 records round 2 after round 3") as err:
        plan_run(folder, _request(), 3)
    assert str(folder / "metrics.jsonl") in str(err.value)
    _fake_run(tmp_path / "gap", [1, 3], _request())
    with pytest.raises(HarnessError, match=r"records rounds \[1, 3\], not 1..2 in order"):
        plan_run(tmp_path / "gap", _request(), 3)
    _fake_run(tmp_path / "cut", [1, 2], _request())
    with open(tmp_path / "cut" / "metrics.jsonl", "a") as f:
        f.write('{"round": 3, "wall')  # a cut last line: left to the ServerApp to repair
    assert plan_run(tmp_path / "cut", _request(), 3) == Plan("resume", 2)
    (tmp_path / "cut" / "metrics.jsonl").write_text('{"round": 1}\n{"rou\n{"round": 2}\n')
    with pytest.raises(HarnessError, match=r"metrics.jsonl: line 2 is not JSON"):
        plan_run(tmp_path / "cut", _request(), 3)


def test_a_second_harness_on_a_held_out_folder_is_refused(tmp_path):
    from maestro_common.app.runlock import FolderLock
    from simulations.run import main

    conf = tmp_path / "x.toml"
    conf.write_text('model = "lenet5"\nmin-nodes = 2\n')
    out = tmp_path / "out"
    held = FolderLock(out, "harness (python -m simulations.run)")
    refused = pytest.raises(SystemExit, match=rf"refused: {out} is being written by harness")
    with held, refused:
        main(["--conf", str(conf), "--supernodes", "2", "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["writer.lock"]  # nothing else touched
