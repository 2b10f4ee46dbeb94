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
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import tomli_w

from maestro_common.app.config import ConfigError, RunConfig
from maestro_common.app.methods import METHOD_NAMES as METHODS
from maestro_common.app.runlock import FolderLock, FolderLockedError
from maestro_common.app.task import load_run_config
from maestro_common.ml.data import DATASET_INFO, DatasetUnavailableError
from maestro_common.ml.data.partition import holdout_split
from maestro_common.ml.data.raw import local_raw_split
from maestro_common.ml.data.shakespeare import load_shakespeare
from maestro_common.ml.data.text_sets import client_roles
from server.policy import run_profiles
from server.results import MetricsError, read_metrics
from simulations import lr_sweep, provenance
from simulations.experiment import SUPERNODES_KEY, read_experiment
from simulations.labels import method_label, method_list
from simulations.procs import (
    MARKER,
    ProcessGuard,
    TreeMemory,
    marked,
    record_processes,
    stop,
    stop_orphans,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SUPERNODES = 100  # when neither --supernodes nor the experiment file gives the count
BIN = Path(sys.executable).parent
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
POLL_SECONDS = 2.0
STARTUP_EVERY = 30.0  # seconds between start-up progress lines

# glibc returns freed memory to the kernel eagerly and maps big blocks afresh each step; these
# keep it (see docs/results.md for the measured effect on training steps).
FAST_MALLOC = {
    "MALLOC_MMAP_THRESHOLD_": str(1 << 30),
    "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
    "MALLOC_TOP_PAD_": str(256 << 20),
}


class HarnessError(RuntimeError):
    """A request the harness refuses, or a run that failed; the message says which and why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSuperLink:
    """A managed local SuperLink of our own for `flwr run`; stopped with all it started on exit.

    The harness starts it itself, with the command `flwr run` would use for its managed local
    SuperLink (same ports, same FLWR_HOME paths), and waits up to ``startup_timeout`` seconds for
    it: `flwr run` gives up after 15 s, too short on a loaded machine, and then finds it running
    and uses it. Everything started with ``env`` carries a marker in its environment, so on exit
    the SuperLink and whatever it started (flwr-simulation, Ray) are found and stopped even after
    they were detached and re-parented.
    """

    def __init__(
        self,
        home: Path,
        fast_malloc: bool,
        base_env: Mapping[str, str] | None = None,
        startup_timeout: float = 300.0,
        threads: int = 1,
    ) -> None:
        base = dict(os.environ if base_env is None else base_env)
        self.marker = base.setdefault(MARKER, os.urandom(16).hex())
        self.home = home
        self.http_port = free_port()
        self.control_port = free_port()
        self.startup_timeout = startup_timeout
        self.env = {
            **base,
            "PATH": f"{BIN}{os.pathsep}{base.get('PATH', '')}",
            "FLWR_HOME": str(home),
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(self.http_port),
            "FLWR_LOCAL_CONTROL_API_PORT": str(self.control_port),
            # Run in this environment instead of `uv sync`-ing the requirements per run.
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "PYTHONUNBUFFERED": "1",
            # Torch threads per process, pinned whatever the caller's environment says: the
            # thread count changes a client's floating-point results (and so a run's figures),
            # and more threads than reserved cores oversubscribe the machine.
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            # Without an address Ray joins the last cluster `ray start` made on this machine
            # (/tmp/ray/ray_current_cluster), even a dead one, and the simulation then hangs:
            # start a local instance unless the caller names a cluster (docs/scale.md).
            "RAY_ADDRESS": base.get("RAY_ADDRESS") or "local",
        }
        if fast_malloc:
            self.env.update(FAST_MALLOC)

    def _healthy(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.http_port}/health"
            with urllib.request.urlopen(url, timeout=1.0) as response:
                return response.status == 200
        except OSError:
            return False

    def __enter__(self) -> LocalSuperLink:
        runtime = self.home / "local-superlink"
        runtime.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(BIN / "flower-superlink"),
            "--insecure",
            "--simulation",
            "--isolation",
            "subprocess",
            "--control-api-address",
            f"127.0.0.1:{self.control_port}",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.http_port),
            "--database",
            str(runtime / "state.db"),
            "--log-file",
            str(runtime / "superlink.log"),
        ]
        self.proc = subprocess.Popen(
            cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + self.startup_timeout
        while not self._healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise HarnessError(
                    f"the local SuperLink did not start within {self.startup_timeout:.0f} s "
                    f"(exit code {self.proc.poll()}); see {runtime / 'superlink.log'}"
                )
            time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        stop(marked(self.marker))


def run_config_for(base: dict, method: str, seed: int, out_dir: Path, sets: dict) -> dict:
    """One run's run config; checked here (keys, values, tier profiles), not inside Flower."""
    cfg = {
        **base,
        **sets,
        "method": method,
        "seed": seed,
        "run-name": f"{method}-seed{seed}",
        "output-dir": str(out_dir / "runs"),
    }
    parsed = load_run_config(cfg)  # fail here, with the key named, not inside Flower
    # The same parser the ServerApp uses, so a bad tier-speeds string fails before Flower starts.
    try:
        run_profiles(parsed)
    except ValueError as err:
        raise ConfigError(f"tier profiles: {err}") from err
    return cfg


def run_dir(cfg: Mapping[str, Any]) -> Path:
    """A run's folder: ``output-dir/run-name``."""
    return Path(cfg["output-dir"]) / str(cfg["run-name"])


def read_rows(folder: Path) -> list[dict[str, Any]]:
    """The metrics rows recorded so far (a line being written is skipped)."""
    path = folder / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            if line.strip():
                rows.append(json.loads(line))
    return rows


def checked_rows(folder: Path) -> list[dict[str, Any]]:
    """The rows of a run folder's metrics.jsonl, which must be rounds 1, 2, ... in order, each
    once (a cut last line is left out: the ServerApp repairs it when it resumes).

    Raises
    ------
    HarnessError
        Naming the file, when a line is damaged or the rounds are not 1..n in order.
    """
    path = folder / "metrics.jsonl"
    try:
        rows, _ = read_metrics(path)
    except MetricsError as err:
        raise HarnessError(f"{err}; use another --out") from err
    rounds = [r["round"] for r in rows]
    if rounds != list(range(1, len(rows) + 1)):
        raise HarnessError(
            f"{path} records rounds {rounds}, not 1..{len(rows)} in order, each once: the run "
            "folder was written by more than one writer or damaged; use another --out"
        )
    return rows


def valid_replies(row: Mapping[str, Any]) -> int:
    """Train replies accepted and aggregated in a round (older rows: clients not dropped)."""
    if "valid-replies" in row:
        return int(row["valid-replies"])
    return sum(1 for c in row.get("clients", []) if not c.get("dropped"))


def never_trained(rows: Sequence[Mapping[str, Any]]) -> bool:
    """No rows at all, or no round with a valid reply: the model was never trained."""
    return not rows or all(valid_replies(r) == 0 or r.get("no-valid-reply") for r in rows)


def _accuracy(rows: Sequence[Mapping[str, Any]]) -> str:
    # Test accuracy; validation accuracy (marked "val") for runs that never see the test set.
    key = "tiers" if any(r.get("tiers") for r in rows) else "val-tiers"
    evaluated = [r for r in rows if r.get(key)]
    if not evaluated:
        return "…"
    tiers = evaluated[-1][key]
    shown = sorted(tiers, key=float)
    shown = [shown[0], shown[-1]] if len(shown) > 1 else shown
    mark = "" if key == "tiers" else "val "
    return ", ".join(f"{mark}β={t}: {100 * tiers[t]['accuracy']:.2f}%" for t in shown)


def progress_line(
    name: str, rows: Sequence[Mapping[str, Any]], total: int, done: int, startup: float
) -> str:
    """One progress line read off the metrics rows.

    Before the first new round: the start-up phase and its time. After: rounds done, the last
    accuracy (smallest and largest tier) and the time left, from the wall time of the rounds
    trained by this invocation (rounds before ``done`` were resumed, start-up is not counted).
    """
    new = [r for r in rows if r["round"] > done]
    if not new:
        return f"[{name}] starting up (SuperLink, simulation engine, clients): {startup:.0f} s"
    rnd = max(r["round"] for r in rows)
    per_round = sum(float(r.get("wall-seconds", 0.0)) for r in new) / len(new)
    left = per_round * (total - rnd)
    return (
        f"[{name}] round {rnd}/{total} | {_accuracy(rows)} | "
        f"{per_round:.1f} s/round, ~{left / 60:.1f} min left"
    )


@dataclass(frozen=True)
class Plan:
    """What to do with one requested run: ``new``, ``resume`` (after ``done`` rounds), ``skip``."""

    action: str
    done: int


def plan_run(folder: Path, request: Mapping[str, Any], total: int) -> Plan:
    """Decide whether a requested run is new, resumed or skipped; refuse anything else.

    Raises
    ------
    HarnessError
        When the folder holds results of another request (the differing settings are named),
        more rounds than requested, or results the harness did not record.
    """
    done = len(checked_rows(folder))
    record = provenance.read_record(folder)
    if done == 0 and not (folder / "checkpoint.npz").exists():
        return Plan("new", 0)
    if record is None:
        raise HarnessError(
            f"{folder} holds results without a {provenance.RECORD} (not written by this harness "
            "version), so what produced them is unknown: use another --out"
        )
    diff = provenance.differences(record["request"], request, ignore=("run-config.num-rounds",))
    if diff:
        raise HarnessError(
            f"{folder} holds results of another request; differing settings: {'; '.join(diff)}. "
            "Use another --out for another experiment (or the same settings to resume)"
        )
    if done > total:
        raise HarnessError(
            f"{folder} holds {done} rounds but num-rounds={total} was asked: a report would show "
            "rounds this command did not ask for; use another --out"
        )
    return Plan("skip", done) if done == total else Plan("resume", done)


def check_folder(
    runs_dir: Path, request: Mapping[str, Any], requested: set[str], tuned_lr: bool = False
) -> None:
    """Runs in the folder that this call does not run must share its settings (all but method,
    seed, run name and, when ``tuned_lr``, the lr each method's sweep chose), so the report over
    the folder compares like with like."""
    if not runs_dir.exists():
        return
    ignore = ("run-config.method", "run-config.seed", "run-config.run-name")
    ignore += ("run-config.lr",) if tuned_lr else ()
    for folder in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        if folder.name in requested or not (folder / "metrics.jsonl").exists():
            continue
        record = provenance.read_record(folder)
        if record is None:
            raise HarnessError(
                f"{folder} was not recorded by this harness version; use another --out"
            )
        diff = provenance.differences(record["request"], request, ignore=ignore)
        if diff:
            raise HarnessError(
                f"run {folder.name} in this --out has other settings ({'; '.join(diff)}): the "
                "report would compare unlike runs. Run it with these settings too, or use "
                "another --out"
            )


def _copy_output(stream, log_path: Path) -> None:
    """Copy the child's output to the log file, without terminal colour codes."""
    with open(log_path, "a") as log:
        for line in stream:
            log.write(ANSI_RE.sub("", line))
            log.flush()


def run_one(link: LocalSuperLink, cfg: dict, out_dir: Path, federation: str, plan: Plan) -> Path:
    """One `flwr run` with progress read off its metrics.jsonl; returns the run folder."""
    name = cfg["run-name"]
    folder = run_dir(cfg)
    total = int(cfg.get("num-rounds", RunConfig().num_rounds))
    if plan.action == "resume":
        cfg = {**cfg, "resume": True}
        print(f"[{name}] resuming after round {plan.done}", flush=True)
    conf_path = out_dir / "configs" / f"{name}.toml"
    conf_path.parent.mkdir(parents=True, exist_ok=True)
    conf_path.write_text(tomli_w.dumps(cfg))
    log_path = out_dir / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(BIN / "flwr"),
        "run",
        str(ROOT),
        "--stream",
        "--run-config",
        str(conf_path),
        "--federation-config",
        federation,
    ]
    start, shown, shown_at = time.monotonic(), "", -STARTUP_EVERY
    with subprocess.Popen(
        cmd, cwd=ROOT, env=link.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        copier = threading.Thread(target=_copy_output, args=(proc.stdout, log_path), daemon=True)
        copier.start()
        while True:
            finished = proc.poll() is not None
            now = time.monotonic() - start
            line = progress_line(name, read_rows(folder), total, plan.done, now)
            starting = "starting up" in line
            # Rounds are shown on every change, the start-up phase every STARTUP_EVERY seconds.
            if (starting and now - shown_at >= STARTUP_EVERY) or (not starting and line != shown):
                print(line, flush=True)
                shown, shown_at = line, now
            if finished:
                break
            time.sleep(POLL_SECONDS)
        copier.join(timeout=10)
    rows = checked_rows(folder)
    if len(rows) < total:
        raise HarnessError(f"{name}: {len(rows)} of {total} rounds recorded; see {log_path}")
    if never_trained(rows):
        raise HarnessError(
            f"{name}: no round had a valid reply (the model was never trained); see {log_path}"
        )
    print(f"[{name}] done in {(time.monotonic() - start) / 60:.1f} min", flush=True)
    return folder


def write_memory(folder: Path, memory: TreeMemory) -> None:
    """The run's ``memory.json``: peak PSS of the harness's process tree while it trained."""
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "peak-tree-pss-mib": round(memory.peak_mb, 1),
        "processes-at-peak": memory.peak_processes,
        "samples": memory.samples,
        "every-seconds": memory.every,
    }
    (folder / "memory.json").write_text(json.dumps(record, indent=1) + "\n")


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's layout and shows every flag's default."""


def parse_sets(items: Sequence[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as run-config values (TOML; a bare word is a string).

    Raises
    ------
    ValueError
        For an item without ``=``.
    """
    sets: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
        try:
            sets[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            sets[key] = value  # a bare word: take it as a string
    return sets


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


def check_bench(path: Path) -> None:
    """``--bench`` must be a saved benchmark, read before any run so a typo costs nothing.

    Raises
    ------
    HarnessError
        When the file is missing or not the JSON ``simulations.bench`` writes.
    """
    try:
        bench = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise HarnessError(
            f"--bench {path}: {err}; run `python -m simulations.bench` to write it"
        ) from err
    if not isinstance(bench, dict) or not isinstance(bench.get("models"), list):
        raise HarnessError(f"--bench {path} has no 'models' rows: not a simulations.bench file")


def prepare(args: argparse.Namespace, out_dir: Path) -> tuple[list[dict], dict, str]:
    """Every run's config and the federation settings, all checked before Flower starts."""
    try:
        experiment = read_experiment(args.conf)
    except ValueError as err:
        raise HarnessError(f"--conf {err}") from err
    if SUPERNODES_KEY in args.sets:
        raise HarnessError(
            f"{SUPERNODES_KEY} is the harness's node count, not a run-config key: give "
            f"--supernodes N instead of --set {SUPERNODES_KEY}=N"
        )
    base = experiment.run_config
    supernodes, given_by = experiment.nodes(args.supernodes, DEFAULT_SUPERNODES)
    try:
        configs = [
            run_config_for(base, m, s, out_dir, args.sets) for s in args.seeds for m in args.methods
        ]
    except ConfigError as err:
        raise HarnessError(f"bad experiment config: {err}") from err
    first = RunConfig.from_run_config(configs[0])
    if args.lrs and not first.val_size:
        raise HarnessError(
            "--lrs chooses each method's lr on the server's validation split, but val-size is 0: "
            "set val-size in the conf or --set val-size=<examples to hold out>"
        )
    if args.lrs and "lr" in args.sets:
        raise HarnessError("--lrs chooses the lr: leave out --set lr=...")
    if first.val_size:
        check_holdout(first, supernodes)
    if args.bench is not None:
        check_bench(args.bench)
    min_nodes = first.min_nodes
    if supernodes < min_nodes:
        raise HarnessError(
            f"{given_by} is below min-nodes={min_nodes}: the server would "
            f"wait for nodes that never come; give --supernodes ≥ {min_nodes} or --set "
            f"min-nodes=<n ≤ {supernodes}>"
        )
    federation = {
        "num-supernodes": supernodes,
        "client-resources-num-cpus": args.cpus_per_client,
        "client-resources-num-gpus": args.gpus_per_client,
        "malloc": args.malloc,
        "torch-threads": args.cpus_per_client,
    }
    harness_only = ("malloc", "torch-threads")
    flwr_federation = " ".join(f"{k}={v}" for k, v in federation.items() if k not in harness_only)
    return configs, federation, flwr_federation


def check_holdout(cfg: RunConfig, supernodes: int) -> None:
    """``val-size`` leaves every SuperNode's partition at least one example.

    Checked on local files only (the harness never downloads a dataset); without them the server
    and the clients check it when the run starts.

    Raises
    ------
    HarnessError
        When it does not (or is not below the training set's size).
    """
    if DATASET_INFO[cfg.dataset].is_text:
        # A SuperNode per role (or several roles each): no more nodes than roles.
        try:
            roles = len(load_shakespeare(cfg.data_dir or None).roles)
            client_roles(roles, 0, supernodes)
        except (ValueError, DatasetUnavailableError) as err:
            raise HarnessError(f"bad experiment config: {err}") from err
        return
    raw = local_raw_split(cfg.dataset, "train", cfg.data_dir or None)
    if raw is None:
        return
    try:
        holdout_split(len(raw.labels), cfg.val_size, supernodes)
    except ValueError as err:
        raise HarnessError(f"bad experiment config: {err}") from err


def run_planned(
    link: LocalSuperLink,
    cfg: dict,
    out_dir: Path,
    flwr_federation: str,
    plan: Plan,
    request: Mapping[str, Any],
    invocation: tuple[str, str],
) -> str | None:
    """Skip, start or resume one run as planned; the failure message, or None.

    ``invocation`` is (command, commit), recorded with the run before it trains.
    """
    name = cfg["run-name"]
    if plan.action == "skip":
        print(f"[{name}] {plan.done} rounds already finished (same request): skipped", flush=True)
        return None
    command, commit = invocation
    provenance.write_record(run_dir(cfg), request, command, commit, plan.done + 1)
    try:
        run_one(link, cfg, out_dir, flwr_federation, plan)
    except HarnessError as err:
        print(f"FAILED: {err}", flush=True)
        return str(err)
    return None


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


def plan_runs(configs: Sequence[dict], requests: Mapping[str, dict]) -> dict[str, Plan]:
    """Every run's :class:`Plan` (HarnessError when one is refused)."""
    return {
        c["run-name"]: plan_run(
            run_dir(c), requests[c["run-name"]], int(c.get("num-rounds", RunConfig().num_rounds))
        )
        for c in configs
    }


def tuning_settings(args: argparse.Namespace, configs: Sequence[dict]) -> dict | None:
    """The lr sweep's settings (None without ``--lrs``)."""
    if not args.lrs:
        return None
    rounds = args.select_rounds or int(configs[0].get("num-rounds", RunConfig().num_rounds))
    return lr_sweep.settings(args.lrs, rounds, args.select_seed, args.last_evals)


class Runner:
    """Runs planned runs on one local SuperLink, started only when a run needs training.

    Before the first run that trains, the stale report of the folder is removed (what follows
    changes the runs). A SuperLink that fails to start fails every run after it.
    """

    def __init__(
        self,
        args: argparse.Namespace,
        out_dir: Path,
        flwr_federation: str,
        invocation: tuple[str, str],
    ) -> None:
        self.args, self.out_dir = args, out_dir
        self.flwr_federation, self.invocation = flwr_federation, invocation
        self.stack = contextlib.ExitStack()
        self.link: LocalSuperLink | None = None
        self.guard: ProcessGuard | None = None
        self.broken: str | None = None

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def _start(self) -> LocalSuperLink:
        for stale in ("report.md", "results.csv", "summary.csv"):
            (self.out_dir / stale).unlink(missing_ok=True)
        guard = self.guard = self.stack.enter_context(ProcessGuard())
        # Recorded before and after the SuperLink starts, so that a harness killed with SIGKILL
        # leaves enough behind for the next one of this folder to stop what it started.
        record_processes(self.out_dir, guard.marker, [psutil.Process()])
        link = self.stack.enter_context(
            LocalSuperLink(
                self.out_dir / ".flwr-home",
                self.args.malloc == "fast",
                guard.env,
                threads=self.args.cpus_per_client,
            )
        )
        record_processes(
            self.out_dir, guard.marker, [psutil.Process(), psutil.Process(link.proc.pid)]
        )
        return link

    def run(self, cfg: dict, plan: Plan, request: Mapping[str, Any]) -> str | None:
        """Skip, start or resume one run as planned; the failure message, or None."""
        if plan.action != "skip" and self.link is None and self.broken is None:
            try:
                self.link = self._start()
            except HarnessError as err:
                self.broken = str(err)
        if plan.action != "skip" and self.broken is not None:
            print(f"FAILED: [{cfg['run-name']}] {self.broken}", flush=True)
            return f"{cfg['run-name']}: {self.broken}"
        # The harness and everything it started (SuperLink, simulation, Ray and its workers).
        memory = TreeMemory(lambda: [psutil.Process(), *self.guard.descendants()])
        trains = plan.action != "skip"
        with memory if trains else contextlib.nullcontext():
            failure = run_planned(
                self.link,  # type: ignore[arg-type]  (None only for a skipped run)
                cfg,
                self.out_dir,
                self.flwr_federation,
                plan,
                request,
                self.invocation,
            )
        if trains:
            write_memory(run_dir(cfg), memory)
            print(
                f"[{cfg['run-name']}] peak memory of the harness's process tree: "
                f"{memory.peak_mb:.0f} MiB PSS ({memory.peak_processes} processes)",
                flush=True,
            )
        return failure


@dataclass
class Sweep:
    """The lr sweep of one invocation: its runs, their requests and plans, its settings."""

    configs: list[dict]
    requests: dict[str, dict]
    plans: dict[str, Plan]
    federation: dict
    tuning: dict
    out_dir: Path
    last_k: int

    @classmethod
    def plan(
        cls,
        args: argparse.Namespace,
        out_dir: Path,
        configs: Sequence[dict],
        federation: dict,
        tuning: dict,
    ) -> Sweep:
        """One sweep run per method and lr, checked and planned (HarnessError when refused)."""
        try:
            lr_sweep.check_selection(out_dir, tuning)
        except ValueError as err:
            raise HarnessError(str(err)) from err
        methods = list(dict.fromkeys(c["method"] for c in configs))
        first = {m: next(c for c in configs if c["method"] == m) for m in methods}
        runs = []
        for method in methods:
            for lr in args.lrs:
                cfg = lr_sweep.sweep_config(
                    first[method], lr, tuning["select-rounds"], tuning["select-seed"], out_dir
                )
                try:
                    load_run_config(cfg)
                except ConfigError as err:
                    raise HarnessError(f"bad sweep config: {err}") from err
                runs.append(cfg)
        requests = {c["run-name"]: provenance.make_request(c, federation) for c in runs}
        return cls(
            runs, requests, plan_runs(runs, requests), federation, tuning, out_dir, args.last_evals
        )

    def run(
        self, runner: Runner, configs: Sequence[dict], failures: list[str]
    ) -> tuple[list[dict], dict[str, dict], dict[str, Plan]]:
        """Run the sweep, choose each method's lr, write ``lr-selection.json``; return the main
        runs with their lr set, their requests and plans (failures are appended)."""
        results: dict[str, dict[float, Any]] = {}
        for cfg in self.configs:
            name = cfg["run-name"]
            failure = runner.run(cfg, self.plans[name], self.requests[name])
            if failure:
                failures.append(failure)
            got = failure or read_rows(run_dir(cfg))
            results.setdefault(method_label(cfg), {})[float(cfg["lr"])] = got
        chosen = {m: lr_sweep.method_selection(r, self.last_k) for m, r in results.items()}
        lr_sweep.write_selection(self.out_dir, self.tuning, chosen)
        main_configs, requests, plans = [], {}, {}
        for cfg in configs:
            name, method = cfg["run-name"], method_label(cfg)
            lr = chosen[method]["lr"]
            if lr is None:
                failures.append(f"{name}: not run, no sweep run of {method} gave a score")
                continue
            print(f"[{name}] lr {lr:g} chosen on the validation split", flush=True)
            cfg = {**cfg, "lr": lr}
            request = provenance.make_request(cfg, self.federation, self.tuning)
            try:
                total = int(cfg.get("num-rounds", RunConfig().num_rounds))
                plans[name] = plan_run(run_dir(cfg), request, total)
            except HarnessError as err:
                print(f"FAILED: {err}", flush=True)
                failures.append(str(err))
                continue
            main_configs.append(cfg)
            requests[name] = request
        return main_configs, requests, plans


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
