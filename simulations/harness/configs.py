"""Each run's run config and the federation settings, from the command line and the experiment
file, all checked before Flower starts (a bad key, value or node count fails here, named)."""

from __future__ import annotations

import argparse
import json
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from maestro_common.app.config import ConfigError, RunConfig
from maestro_common.app.task import load_run_config
from maestro_common.ml.data import DATASET_INFO, DatasetUnavailableError
from maestro_common.ml.data.partition import holdout_split
from maestro_common.ml.data.raw import local_raw_split
from maestro_common.ml.data.shakespeare import load_shakespeare
from maestro_common.ml.data.text_sets import client_roles
from server.policy import run_profiles
from simulations import lr_sweep
from simulations.experiment import SUPERNODES_KEY, read_experiment
from simulations.harness.errors import HarnessError

DEFAULT_SUPERNODES = 100  # when neither --supernodes nor the experiment file gives the count


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


def total_rounds(cfg: Mapping[str, Any]) -> int:
    """The rounds a run config asks for (the run config's default when it names none)."""
    return int(cfg.get("num-rounds", RunConfig().num_rounds))


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
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
        try:
            sets[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            sets[key] = value  # a bare word: take it as a string
    return sets


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


def tuning_settings(args: argparse.Namespace, configs: Sequence[dict]) -> dict | None:
    """The lr sweep's settings (None without ``--lrs``)."""
    if not args.lrs:
        return None
    rounds = args.select_rounds or total_rounds(configs[0])
    return lr_sweep.settings(args.lrs, rounds, args.select_seed, args.last_evals)
