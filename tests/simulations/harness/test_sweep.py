"""The lr sweep: one short run per method and lr, then each method's runs with its choice."""

import json

from simulations.harness.configs import prepare, run_dir, tuning_settings
from simulations.harness.sweep import Sweep
from simulations.run import parse_args
from tests.simulations.harness.runs import harness_args, recorded_run


def _plan_sweep(
    tmp_path, data, lrs: str, seeds: str, rounds: str, methods: str = "maestro,fjord", *more: str
):
    """A 5-round lenet5 conf with a validation split, swept for ``methods``."""
    conf = f'model = "lenet5"\ndata-dir = "{data}"\nnum-rounds = 5\nval-size = 400\n'
    args = harness_args(
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
        recorded_run(run_dir(cfg), [], None)
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

    root = Path(__file__).resolve().parents[3]
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
