"""Plain Flower FedAvg beside the harness: where does a round's time go without maestro-fl?

Runs ``simulations/experiments/plain_fedavg`` (Flower's own ``FedAvg.start`` and a ClientApp that
trains the dense model) through the same local SuperLink, simulation engine, SuperNode count and
client resources as ``python -m simulations.run``, on the same data and partition (the
maestro-fl run config's keys it shares are taken from ``--conf``), then prints the same timing
table the harness's report shows. Compare it with the harness's ``fedavg-all`` method (the same
dense model trained by every client) with ``--set clients-per-eval=0`` (the plain app evaluates on
the server only)::

    python -m simulations.experiments.plain_flower --conf simulations/conf/demo.toml \\
        --set num-rounds=10 --out runs/plain
    python -m simulations.run --conf simulations/conf/demo.toml \\
        --methods fedavg-all --set num-rounds=10 --set clients-per-eval=0 --out runs/side
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import tomli_w

from simulations.experiment import read_experiment
from simulations.harness.configs import parse_sets
from simulations.harness.progress import read_rows
from simulations.harness.runner import copy_output
from simulations.harness.superlink import BIN, ROOT, LocalSuperLink
from simulations.procs import ProcessGuard
from simulations.report import Run, timing_table

APP = ROOT / "simulations" / "experiments" / "plain_fedavg"


def app_keys() -> set[str]:
    """The run-config keys the plain app has."""
    return set(tomllib.loads((APP / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"])


def plain_config(conf: dict, sets: dict, out_file: Path) -> tuple[dict, list[str]]:
    """The plain app's run config from a maestro-fl conf and overrides; the keys it dropped."""
    wanted = {**conf, **sets}
    keys = app_keys()
    dropped = sorted(k for k in wanted if k not in keys)
    cfg = {k: v for k, v in wanted.items() if k in keys}
    cfg["output-file"] = str(out_file)
    return cfg, dropped


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m simulations.experiments.plain_flower",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--conf", type=Path, required=True, help="maestro-fl experiment TOML")
    p.add_argument(
        "--supernodes",
        type=int,
        default=None,
        help="simulated SuperNodes (default: the experiment file's num-supernodes, else 20)",
    )
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a conf key"
    )
    p.add_argument("--out", type=Path, default=Path("runs/plain"), help="output folder")
    args = p.parse_args(argv)
    if not args.conf.exists():
        p.error(f"--conf {args.conf} does not exist")
    try:
        args.sets = parse_sets(args.set)
    except ValueError as err:
        p.error(str(err))
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    out = args.out.expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    metrics = out / "metrics.jsonl"
    metrics.unlink(missing_ok=True)
    try:
        experiment = read_experiment(args.conf)
    except ValueError as err:
        sys.exit(f"--conf {err}")
    supernodes, _ = experiment.nodes(args.supernodes, 20)
    cfg, dropped = plain_config(experiment.run_config, args.sets, metrics)
    if dropped:
        print(f"not used by the plain app (maestro-fl only): {', '.join(dropped)}", flush=True)
    conf_path = out / "plain.toml"
    conf_path.write_text(tomli_w.dumps(cfg))
    federation = (
        f"num-supernodes={supernodes} client-resources-num-cpus=1 client-resources-num-gpus=0.0"
    )
    cmd = [str(BIN / "flwr"), "run", str(APP), "--stream", "--run-config", str(conf_path)]
    cmd += ["--federation-config", federation]
    with (
        ProcessGuard() as guard,
        LocalSuperLink(out / ".flwr-home", True, guard.env) as link,
        subprocess.Popen(
            cmd, cwd=APP, env=link.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as proc,
    ):
        copier = threading.Thread(target=copy_output, args=(proc.stdout, out / "plain.log"))
        copier.start()
        proc.wait()
        copier.join(timeout=10)
    rows = read_rows(out)
    total = int(cfg.get("num-rounds", 3))
    if len(rows) < total:
        sys.exit(f"the plain run recorded {len(rows)} of {total} rounds; see {out / 'plain.log'}")
    run = Run(out, {"method": "plain-fedavg", "seed": int(cfg.get("seed", 0))}, tuple(rows))
    # Clients that train at once, as the harness's report counts them (one core per client).
    concurrency = max(1, min(os.cpu_count() or 1, int(cfg.get("clients-per-round", 10))))
    print(timing_table([run], concurrency=concurrency, target=0.8))
    return out


if __name__ == "__main__":
    main()
