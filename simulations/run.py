"""Run an experiment for several methods and seeds through `flwr run`, then one comparison report
(over every run in the output folder, so seeds added later join it).

Each (method, seed) is one Flower run on a managed local SuperLink that this harness starts on
free ports with its own FLWR_HOME, so it never reuses a SuperLink started elsewhere. Progress is
read from each run's metrics.jsonl: a start-up phase (SuperLink, simulation engine, clients),
then rounds with the last accuracy and the time left (from the rounds' own wall time, start-up
excluded). Full logs, without terminal colour codes, go to ``<out>/logs/``.

Each run folder keeps its full request (every run-config key, the federation settings) and the
commands and commits that trained it (``harness.json``). Run again with the same ``--out``, a
finished run is skipped and a partial one resumed only if the request is the same (``num-rounds``
may grow); any other difference is refused with the settings that differ named: use another
``--out`` for another experiment.

With ``--lrs`` every method first gets the same tuning budget (:mod:`simulations.lr_sweep`): one
run per lr at ``--select-rounds`` rounds and seed ``--select-seed``, validated on the run's
``val-size`` held-out training examples with the test set never evaluated (in
``<out>/select/<method>-lr<lr>/``); the lr with the best mean over tiers of the mean of the last
``--last-evals`` validation accuracies is then used for every seed of that method
(``<out>/lr-selection.json``, a table in the report).

Every process the harness starts (SuperLink, flwr-simulation, Ray) is stopped when it ends, also
on SIGTERM, SIGHUP or Ctrl-C. One harness at a time writes an ``--out`` folder: it holds
``<out>/writer.lock`` (a second one is refused, naming the holder's pid and host), and before it
reads the folder it stops what an earlier harness of the same folder left running (killed with
SIGKILL, its SuperLink and ServerApp would go on writing the runs), found through
``<out>/processes.json``. The harness exits non-zero when a run failed or never trained (no
round with a valid reply).

The experiment file may give the number of simulated SuperNodes as ``num-supernodes``
(:mod:`simulations.experiment`; read here, never passed to Flower as run config); ``--supernodes``
overrides it, and without either the harness runs 100.

Example (``fmnist-100.toml`` sets ``num-supernodes = 100``)::

    python -m simulations.run --conf simulations/conf/fmnist-100.toml \\
        --methods maestro,fjord,heterofl,fedavg-all,fedavg-fit --seeds 0 --out runs/compare
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import sys
from pathlib import Path

from maestro_common.app.config import RunConfig
from maestro_common.app.methods import METHOD_NAMES as METHODS
from maestro_common.app.runlock import FolderLock, FolderLockedError
from simulations import lr_sweep, provenance
from simulations.experiment import SUPERNODES_KEY
from simulations.harness.configs import (
    DEFAULT_SUPERNODES,
    check_bench,
    check_holdout,
    parse_sets,
    prepare,
    run_config_for,
    run_dir,
    tuning_settings,
)
from simulations.harness.errors import HarnessError
from simulations.harness.plans import Plan, check_folder, plan_run, plan_runs
from simulations.harness.progress import (
    checked_rows,
    never_trained,
    progress_line,
    read_rows,
    valid_replies,
)
from simulations.harness.runner import (
    ANSI_RE,
    POLL_SECONDS,
    STARTUP_EVERY,
    Runner,
    copy_output,
    run_one,
    run_planned,
    write_memory,
)
from simulations.harness.superlink import BIN, FAST_MALLOC, ROOT, LocalSuperLink, free_port
from simulations.harness.sweep import Sweep
from simulations.labels import method_list
from simulations.procs import stop_orphans

_copy_output = copy_output  # its name before the split

# The names this module had before the harness moved into simulations/harness/, kept importable
# from here for scripts and tests written against them (new code imports the harness's modules).
__all__ = [
    "ANSI_RE",
    "BIN",
    "DEFAULT_SUPERNODES",
    "FAST_MALLOC",
    "METHODS",
    "POLL_SECONDS",
    "ROOT",
    "STARTUP_EVERY",
    "HarnessError",
    "LocalSuperLink",
    "Plan",
    "Runner",
    "Sweep",
    "_copy_output",
    "check_bench",
    "check_folder",
    "check_holdout",
    "checked_rows",
    "copy_output",
    "free_port",
    "main",
    "never_trained",
    "own_folder",
    "parse_args",
    "parse_sets",
    "plan_run",
    "plan_runs",
    "prepare",
    "progress_line",
    "read_rows",
    "run_config_for",
    "run_dir",
    "run_experiment",
    "run_one",
    "run_planned",
    "tuning_settings",
    "valid_replies",
    "write_comparison",
    "write_memory",
]


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's layout and shows every flag's default."""


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=prog or "python -m simulations.run", description=__doc__, formatter_class=_Formatter
    )
    p.add_argument(
        "--conf", type=Path, required=True, help="experiment TOML file of run-config keys"
    )
    p.add_argument(
        "--methods", default="maestro", help=f"comma list of methods: {', '.join(METHODS)}"
    )
    p.add_argument("--seeds", default="0", help="comma list of integer seeds")
    p.add_argument(
        "--supernodes",
        type=int,
        default=None,
        help="simulated SuperNodes (clients); at least the run config's min-nodes (None: the "
        f"experiment file's {SUPERNODES_KEY}, else {DEFAULT_SUPERNODES})",
    )
    p.add_argument(
        "--cpus-per-client",
        type=int,
        default=1,
        help="CPU cores Ray reserves per client (clients training at once = cores / this)",
    )
    p.add_argument(
        "--gpus-per-client",
        type=float,
        default=None,
        help="GPU fraction Ray reserves per client (None: 0.2 when CUDA is present, else 0; "
        "untested: no GPU was available, see docs/scale.md)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a run-config key (TOML value), e.g. --set num-rounds=5; repeatable",
    )
    p.add_argument(
        "--malloc",
        choices=("fast", "default"),
        default="fast",
        help="glibc malloc tuning for the clients (see docs/results.md)",
    )
    p.add_argument(
        "--target-accuracy",
        type=float,
        default=0.8,
        help="accuracy whose virtual time-to-reach the report gives",
    )
    p.add_argument(
        "--bench",
        type=Path,
        default=None,
        help="simulations.bench's bench.json (e.g. runs/bench/bench.json): the report gains a "
        "time axis, each tier's measured train step time and accuracy against it",
    )
    p.add_argument(
        "--last-evals",
        type=int,
        default=3,
        help="the report's headline accuracy is the mean over each run's last this many "
        "evaluations (and an lr sweep's score, over validation evaluations)",
    )
    p.add_argument(
        "--lrs",
        default="",
        help="comma list of learning rates: choose each method's lr on the validation split "
        "(needs val-size > 0) before its runs; empty: no sweep, the run config's lr",
    )
    p.add_argument(
        "--select-rounds",
        type=int,
        default=None,
        help="rounds of each sweep run (None: the run config's num-rounds)",
    )
    p.add_argument("--select-seed", type=int, default=0, help="seed of the sweep runs")
    p.add_argument(
        "--select-only",
        action="store_true",
        help="with --lrs: run the sweep, write lr-selection.json and stop, so the seeds can be "
        "trained later (e.g. in parallel chains with --set lr=<chosen>)",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=2,
        help="a run that stops before its last round is resumed from its checkpoint up to this "
        "many times, after a try that recorded a new round (e.g. when Flower ends a run after a "
        "missed heartbeat because the machine paused), and once in all after a try that "
        "recorded none (a start-up that failed); 0: never",
    )
    p.add_argument("--out", type=Path, default=Path("runs/compare"), help="output folder")
    p.add_argument("--title", default="", help="report title (default: conf name and methods)")
    p.add_argument(
        "--paired-against",
        type=method_list,
        default=[],
        help="comma list of methods: the report compares every other method with each, seed by "
        "seed (simulations.paired: mean difference per tier, 95%% interval, verdict)",
    )
    args = p.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in args.methods if m not in METHODS]
    if bad:
        p.error(f"unknown method(s) {bad}; allowed: {', '.join(METHODS)}")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        p.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if not args.conf.exists():
        p.error(f"--conf {args.conf} does not exist")
    if args.supernodes is not None and args.supernodes < 1:
        p.error(f"--supernodes must be ≥ 1, got {args.supernodes}")
    if args.cpus_per_client < 1:
        p.error(f"--cpus-per-client must be ≥ 1, got {args.cpus_per_client}")
    if args.retries < 0:
        p.error(f"--retries must be ≥ 0, got {args.retries}")
    if args.last_evals < 1:
        p.error(f"--last-evals must be ≥ 1, got {args.last_evals}")
    try:
        args.lrs = lr_sweep.parse_lrs(args.lrs) if args.lrs.strip() else ()
    except ValueError as err:
        p.error(str(err))
    if args.select_rounds is not None and args.select_rounds < 1:
        p.error(f"--select-rounds must be ≥ 1, got {args.select_rounds}")
    if args.select_seed < 0:
        p.error(f"--select-seed must be ≥ 0, got {args.select_seed}")
    if args.select_only and not args.lrs:
        p.error("--select-only runs the lr sweep only: give --lrs too")
    try:
        args.sets = parse_sets(args.set)
    except ValueError as err:
        p.error(str(err))
    if args.gpus_per_client is None:
        import torch

        args.gpus_per_client = 0.2 if torch.cuda.is_available() else 0.0
    return args


def main(argv: list[str] | None = None, prog: str | None = None) -> Path:
    """Run the experiment; exit non-zero when a request is refused or a run failed.

    ``prog`` names the command in help and errors (``maestro-fl run`` through the one CLI).
    """
    args = parse_args(argv, prog)
    if shutil.which("flwr", path=str(BIN)) is None:
        sys.exit("the flwr CLI is not installed beside this Python: run `make install` first")
    out_dir = args.out.expanduser().resolve()
    command = "python -m simulations.run " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    commit = provenance.git_commit(ROOT)
    try:
        configs, federation, flwr_federation = prepare(args, out_dir)
    except HarnessError as err:
        sys.exit(f"refused: {err}")
    with own_folder(out_dir):
        return run_experiment(args, out_dir, configs, federation, flwr_federation, command, commit)


@contextlib.contextmanager
def own_folder(out_dir: Path):
    """Hold ``out_dir``'s writer lock (exit, refused, when another harness holds it) and stop
    what an earlier harness of the folder left running, before anything reads the folder."""
    try:
        lock = FolderLock(out_dir, "harness (python -m simulations.run)").acquire()
    except FolderLockedError as err:
        sys.exit(f"refused: {err}")
    try:
        stopped = stop_orphans(out_dir)
        if stopped:
            print(
                f"harness: stopped {len(stopped)} process(es) an earlier harness of {out_dir} "
                "left running:\n" + "\n".join(f"  {s}" for s in stopped),
                flush=True,
            )
        yield lock
    finally:
        lock.release()


def run_experiment(
    args: argparse.Namespace,
    out_dir: Path,
    configs: list[dict],
    federation: dict,
    flwr_federation: str,
    command: str,
    commit: str,
) -> Path:
    """Plan, run and report the experiment in ``out_dir`` (held by this harness)."""
    try:
        tuning = tuning_settings(args, configs)
        requests = {c["run-name"]: provenance.make_request(c, federation, tuning) for c in configs}
        check_folder(
            out_dir / "runs",
            next(iter(requests.values())),
            set(requests),
            tuned_lr=tuning is not None,
        )
        sweep = Sweep.plan(args, out_dir, configs, federation, tuning) if tuning else None
        # Without a sweep every run's request is known now; with one, once its lr is chosen.
        plans = {} if tuning else plan_runs(configs, requests)
    except HarnessError as err:
        sys.exit(f"refused: {err}")
    failures: list[str] = []
    main_configs = configs
    with Runner(args, out_dir, flwr_federation, (command, commit)) as runner:
        if sweep is not None:
            main_configs, requests, plans = sweep.run(runner, configs, failures)
        if args.select_only:
            main_configs = []
        for cfg in main_configs:
            name = cfg["run-name"]
            failure = runner.run(cfg, plans[name], requests[name])
            if failure:
                failures.append(failure)
    (out_dir / "harness-args.json").write_text(json.dumps(vars(args), default=str, indent=1))
    if args.select_only:
        report = out_dir / lr_sweep.SELECTION
        print(f"lr chosen per method: {report}")
    else:
        report = write_comparison(args, out_dir, configs, commit)
        print(f"report: {report}")
    if failures:
        sys.exit("failed runs:\n" + "\n".join(f"  - {f}" for f in failures))
    return report


def write_comparison(
    args: argparse.Namespace, out_dir: Path, configs: list[dict], commit: str
) -> Path:
    """The report over every run of the folder (seeds added later join it)."""
    from simulations.report import write_report

    title = args.title or f"{args.conf.stem}: {', '.join(args.methods)}"
    # Clients that train at once: Ray packs them by the CPUs (and GPU share) each one asks for.
    slots = (os.cpu_count() or 1) // max(args.cpus_per_client, 1)
    if args.gpus_per_client > 0:
        slots = min(slots, int(1 / args.gpus_per_client))
    per_round = int(configs[0].get("clients-per-round", RunConfig().clients_per_round))
    runs_dir = out_dir / "runs"
    found = runs_dir.iterdir() if runs_dir.exists() else []
    folders = sorted(p for p in found if read_rows(p))
    if not folders:
        print("no run recorded any round: no report")
        return out_dir / "report.md"
    report = write_report(
        folders,
        out_dir,
        title,
        commit=commit,
        concurrency=max(1, min(slots, per_round)),
        target=args.target_accuracy,
        last_k=args.last_evals,
        selection=lr_sweep.read_selection(out_dir),
        bench=json.loads(args.bench.read_text()) if args.bench else None,
        paired_against=args.paired_against,
    )
    print(report.read_text().split("\n\n", 2)[-1] if report.exists() else "")
    return report


if __name__ == "__main__":
    main()
