"""Run an experiment for several methods and seeds through `flwr run`, then one comparison report
(over every run in the output folder, so seeds added later join it).

Each (method, seed) is one Flower run on a managed local SuperLink that this harness starts on
free ports with its own FLWR_HOME, so it never reuses a SuperLink started elsewhere. Progress
(rounds done, last accuracy, time left) is printed while a run goes; full logs go to
``<out>/logs/``. A finished run is skipped and a partial one resumed when the harness is run
again with the same ``--out``.

Example::

    python -m simulations.run --conf simulations/conf/fmnist-100.toml --supernodes 100 \\
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
import time
import tomllib
from pathlib import Path

import psutil
import tomli_w

from maestro_common.config import ConfigError, RunConfig
from maestro_common.methods import METHOD_NAMES as METHODS
from maestro_common.task import load_run_config

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ROUND_RE = re.compile(r"\[ROUND (\d+)/(\d+)\]")
ACC_RE = re.compile(r"round (\d+) test accuracy: (.*)")

# glibc returns freed memory to the kernel eagerly and maps big blocks afresh each step; these
# keep it (see docs/results.md for the measured effect on training steps).
FAST_MALLOC = {
    "MALLOC_MMAP_THRESHOLD_": str(1 << 30),
    "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
    "MALLOC_TOP_PAD_": str(256 << 20),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSuperLink:
    """Environment for `flwr run` against a managed SuperLink of our own; stops it on exit."""

    def __init__(self, home: Path, fast_malloc: bool) -> None:
        self.control_port = free_port()
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLWR_HOME": str(home),
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
            "FLWR_LOCAL_CONTROL_API_PORT": str(self.control_port),
            # Run in this environment instead of `uv sync`-ing the requirements per run.
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "PYTHONUNBUFFERED": "1",
        }
        if fast_malloc:
            self.env.update(FAST_MALLOC)

    def __enter__(self) -> LocalSuperLink:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in psutil.process_iter(["cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if "flower-superlink" in cmd and f"127.0.0.1:{self.control_port}" in cmd:
                for p in [*proc.children(recursive=True), proc]:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        p.kill()


def run_config_for(base: dict, method: str, seed: int, out_dir: Path, sets: dict) -> dict:
    cfg = {
        **base,
        **sets,
        "method": method,
        "seed": seed,
        "run-name": f"{method}-seed{seed}",
        "output-dir": str(out_dir / "runs"),
    }
    load_run_config(cfg)  # fail here, with the key named, not inside Flower
    return cfg


def rounds_done(folder: Path) -> int:
    path = folder / "metrics.jsonl"
    if not path.exists():
        return 0
    return len([x for x in path.read_text().splitlines() if x.strip()])


def progress_line(name: str, rnd: int, total: int, done: int, accuracy: str, elapsed: float) -> str:
    """One progress line: rounds done, the last evaluated accuracy, time spent and left."""
    if rnd > done:
        left = f"~{elapsed / (rnd - done) * (total - rnd) / 60:.1f} min left"
    else:
        left = "time left: after the first round"
    return f"[{name}] round {rnd}/{total} | {accuracy or '…'} | {elapsed / 60:.1f} min, {left}"


def run_one(link: LocalSuperLink, cfg: dict, out_dir: Path, federation: str) -> Path:
    """One `flwr run` with live progress; returns the run folder."""
    name = cfg["run-name"]
    folder = out_dir / "runs" / name
    total = int(cfg.get("num-rounds", RunConfig().num_rounds))
    done = rounds_done(folder)
    if done >= total:
        print(f"[{name}] already finished ({done} rounds): skipped", flush=True)
        return folder
    if done:
        cfg = {**cfg, "resume": True}
        print(f"[{name}] resuming after round {done}", flush=True)
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
    start, rnd, last_acc, shown = time.monotonic(), done, "", None
    with (
        open(log_path, "a") as log,
        subprocess.Popen(
            cmd, cwd=ROOT, env=link.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if m := ROUND_RE.search(line):
                rnd = int(m.group(1)) - 1
            elif m := ACC_RE.search(line):
                rnd, last_acc = int(m.group(1)), m.group(2).strip()
            else:
                continue
            if (rnd, last_acc) == shown:
                continue  # "[ROUND k+1]" right after round k's accuracy: nothing new to show
            shown = (rnd, last_acc)
            print(
                progress_line(name, rnd, total, done, last_acc, time.monotonic() - start),
                flush=True,
            )
    finished = rounds_done(folder)
    if finished < total:
        raise RuntimeError(f"{name}: {finished} of {total} rounds recorded; see {log_path}")
    print(f"[{name}] done in {(time.monotonic() - start) / 60:.1f} min", flush=True)
    return folder


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m simulations.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--conf", type=Path, required=True, help="experiment TOML (run-config keys)")
    p.add_argument("--methods", default="maestro", help=f"comma list of {', '.join(METHODS)}")
    p.add_argument("--seeds", default="0", help="comma list of seeds")
    p.add_argument("--supernodes", type=int, default=100, help="simulated SuperNodes (clients)")
    p.add_argument("--cpus-per-client", type=int, default=1)
    p.add_argument(
        "--gpus-per-client",
        type=float,
        default=None,
        help="GPU fraction per client (default: 0.2 when CUDA is present, else 0)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a run-config key (TOML value), e.g. --set num-rounds=5",
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
    p.add_argument("--out", type=Path, default=Path("runs/compare"))
    p.add_argument("--title", default="")
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
    sets = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--set takes KEY=VALUE, got {item!r}")
        try:
            sets[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            sets[key] = value  # a bare word: take it as a string
    args.sets = sets
    if args.gpus_per_client is None:
        import torch

        args.gpus_per_client = 0.2 if torch.cuda.is_available() else 0.0
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    if shutil.which("flwr", path=str(BIN)) is None:
        sys.exit("the flwr CLI is not installed beside this Python: run `make install` first")
    out_dir = args.out.expanduser().resolve()
    base = tomllib.loads(args.conf.read_text())
    try:
        configs = [
            run_config_for(base, m, s, out_dir, args.sets) for s in args.seeds for m in args.methods
        ]
    except ConfigError as err:
        sys.exit(f"bad experiment config: {err}")
    federation = (
        f"num-supernodes={args.supernodes} client-resources-num-cpus="
        f"{args.cpus_per_client} client-resources-num-gpus={args.gpus_per_client}"
    )
    command = "python -m simulations.run " + " ".join(
        shlex.quote(a) for a in (argv or sys.argv[1:])
    )
    folders = []
    with LocalSuperLink(out_dir / ".flwr-home", args.malloc == "fast") as link:
        for cfg in configs:
            folders.append(run_one(link, cfg, out_dir, federation))
    from simulations.report import write_report

    title = args.title or f"{args.conf.stem}: {', '.join(args.methods)}"
    # Clients that train at once: Ray packs them by the CPUs (and GPU share) each one asks for.
    slots = (os.cpu_count() or 1) // max(args.cpus_per_client, 1)
    if args.gpus_per_client > 0:
        slots = min(slots, int(1 / args.gpus_per_client))
    per_round = int(configs[0].get("clients-per-round", RunConfig().clients_per_round))
    # Every run in this --out folder, not only this call's: seeds added later join the report.
    folders = sorted(p for p in (out_dir / "runs").iterdir() if (p / "metrics.jsonl").exists())
    report = write_report(
        folders,
        out_dir,
        title,
        command,
        concurrency=max(1, min(slots, per_round)),
        target=args.target_accuracy,
    )
    print(report.read_text().split("\n\n", 2)[-1] if report.exists() else "")
    (out_dir / "harness.json").write_text(json.dumps(vars(args), default=str, indent=1))
    print(f"report: {report}")
    return report


if __name__ == "__main__":
    main()
