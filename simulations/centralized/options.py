"""The centralized trainer's command line: the run config, the federation's way, plus a few flags.

Settings are run-config keys (:class:`~maestro_common.app.config.RunConfig`), with the
federation's names and defaults, but ``transmission``: nothing is sent, so Maestro's factors
train as prefixes and ``sub-models = "auto"`` is the sandwich. ``--conf FILE.toml`` (an
experiment file of the federated harness; its ``num-supernodes`` is the harness's and is
ignored) and repeatable ``--set KEY=VALUE`` (a TOML value; a bare word is a string), later ones
winning. Flags remain only for what has no key: the methods and seeds (lists), the epochs, the lr
grid and its trial, ``--limit-train``, ``--threads`` and the output folder. The flags of the
trainer's earlier interface that have a key are refused with the key to use
(:data:`REMOVED_FLAGS`); a flag whose key went with its variant says so
(:data:`maestro_common.app.removed.REMOVED_KEYS`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maestro_common.app.config import ConfigError, RunConfig
from maestro_common.app.methods import METHOD_NAMES, get_method
from maestro_common.app.removed import REMOVED_KEYS, removed_key_message
from maestro_common.app.task import check_names, resolve_device
from maestro_common.ml.data import DATASET_INFO
from simulations.experiment import SUPERNODES_KEY, read_experiment
from simulations.harness.configs import parse_sets

# Flags of the earlier interface -> the run-config key that replaced each (None: no key).
REMOVED_FLAGS: dict[str, str | None] = {
    "--model": "model",
    "--dataset": "dataset",
    "--data-dir": "data-dir",
    "--batch-size": "batch-size",
    "--lr": "lr",
    "--lr-schedule": "lr-schedule",
    "--val-size": "val-size",
    "--objective": "objective",
    "--sub-models": "sub-models",
    "--full-pass-share": "full-pass-share",
    "--momentum": "momentum",
    "--weight-decay": "weight-decay",
    "--max-grad-norm": "max-grad-norm",
    "--sampler": "sampler",
    "--rank-fraction": "rank-fraction",
    "--hybrid-width": "hybrid-width",
    "--distill": "distill",
    "--distill-temperature": "distill-temperature",
    "--pass-average": "pass-average",
    "--initial-ranks": "initial-ranks",
    "--frobenius-decay": "frobenius-decay",
    "--rank-quantum": "rank-quantum",
    "--dense-warmup": "dense-warmup",
    "--lasso": "lasso",
    "--shrink-eps": "shrink-eps",
    "--betas": "tier-fractions",
    "--limit-test": "max-test-examples",
    "--device": "device",
    "--conv-factorization": "conv-factorization",
    "--freeze": "freeze",
    "--freeze-groups": "freeze-groups",
    "--freeze-per-epoch": "freeze-per-epoch",
    "--grid": None,
}
# Method names of the earlier interface -> what replaced each.
OLD_METHODS = {
    "dense": "fedavg-all (its SVD truncations are the svd rows)",
    "maestro-sampled": "maestro with --set objective=sampled",
    "maestro-gl": "maestro with --set lasso=1e-4 --set shrink-every=1",
}
DEFAULT_EPOCHS = 5
DESCRIPTION = """\
Train the federation's methods centrally (all the training data in one place) and score every
tier. Settings are the federation's run-config keys with its defaults: --conf FILE.toml (an
experiment file of the federated harness; num-supernodes is ignored) and --set KEY=VALUE
(repeatable, wins over the file). num-rounds is replaced by --epochs; keys of the federation
only (clients, partitioning, aggregation, tier profiles, ...) are ignored. See
docs/centralized.md ("The command line") for which key replaced each earlier flag.

Shakespeare:
  python -m simulations.centralized --conf simulations/conf/shakespeare.toml \\
      --methods maestro,fjord,fedavg-all --epochs 500 --out runs/cent/shakespeare
"""


@dataclass(frozen=True)
class Options:
    """A parsed command line: one checked run config per method (at the first seed)."""

    configs: dict[str, RunConfig]  # method -> its run config
    seeds: list[int]
    epochs: int
    lrs: list[float]
    select_epochs: int
    select_train: int
    select_seed: int
    limit_train: int
    threads: int
    out: Path | None
    run_config: dict[str, Any]  # the file's keys and the --set ones, as given

    @property
    def first(self) -> RunConfig:
        return next(iter(self.configs.values()))


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog or "python -m simulations.centralized",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # --lr (now a key) must not pass for --lrs
    )
    p.add_argument("--conf", type=Path, help="experiment file (TOML run-config keys)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a run-config key (TOML value), e.g. --set lr=0.05; repeatable, wins over --conf",
    )
    p.add_argument(
        "--methods", help=f"comma list of {', '.join(METHOD_NAMES)} (default: the key method)"
    )
    p.add_argument("--seeds", type=_ints, help="comma list of seeds (default: the key seed)")
    p.add_argument(
        "--epochs",
        type=int,
        default=DEFAULT_EPOCHS,
        help="epochs of centralized training: each one pass over the training images, or "
        "local-steps steps when that key is > 0 (the character task needs it)",
    )
    p.add_argument("--lrs", type=_floats, default=[], help="lr grid chosen on val-size examples")
    p.add_argument("--select-epochs", type=int, default=2, help="epochs of each lr trial")
    p.add_argument("--select-train", type=int, default=0, help="train images of a trial (0: all)")
    p.add_argument("--select-seed", type=int, default=0, help="seed of the lr trials")
    p.add_argument("--limit-train", type=int, default=0, help="use only the first N train images")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", type=Path, default=None, help="folder for summary.csv, rows, models")
    return p


def _refuse_removed(p: argparse.ArgumentParser, unknown: list[str]) -> None:
    for item in unknown:
        flag = item.split("=", 1)[0]
        if flag in REMOVED_FLAGS:
            key = REMOVED_FLAGS[flag]
            if key in REMOVED_KEYS:
                p.error(f"{flag}: {removed_key_message(key)}")
            if key is None:
                p.error(
                    f"{flag} was removed: a nested step's sub-models are the tiers' budgets "
                    "(--set tier-fractions=...)"
                )
            p.error(f"{flag} was removed: use the run-config key, --set {key}=VALUE")
    if unknown:
        p.error(f"unrecognized arguments: {' '.join(unknown)}")


def run_config_of(conf: Path | None, sets: dict[str, Any]) -> dict[str, Any]:
    """The run-config keys of ``conf`` (without the harness's) updated by ``sets``.

    Raises
    ------
    ValueError
        For an unreadable experiment file, or ``num-supernodes`` among ``sets``.
    """
    if SUPERNODES_KEY in sets:
        raise ValueError(
            f"{SUPERNODES_KEY} is the federated harness's node count; the centralized trainer "
            "has no nodes: leave it out"
        )
    base = read_experiment(conf).run_config if conf is not None else {}
    return {**base, **sets}


def method_config(values: dict[str, Any], method: str, seed: int, epochs: int) -> RunConfig:
    """The checked run config of one method (num-rounds is the epochs: see the CLI's docs).

    Raises
    ------
    ConfigError
        With the run config's own message, for a bad key, value or combination.
    """
    if "transmission" in values:
        raise ConfigError(
            f"transmission = {values['transmission']!r}: the centralized trainer trains one "
            "model on all the data and sends no components: leave transmission out"
        )
    if get_method(method).ordered:
        # Nothing is sent, so its factors are trained as if sent as prefixes, and the
        # default (auto) sub-models are the sandwich's (RunConfig.sub_model_rule).
        values = {**values, "transmission": "prefix"}
    cfg = RunConfig.from_run_config({**values, "method": method, "seed": seed})
    cfg = cfg.replace(num_rounds=epochs)  # checks dense-warmup against the epochs
    check_names(cfg)
    if DATASET_INFO[cfg.dataset].is_text and not cfg.local_steps:
        raise ConfigError(
            f"dataset {cfg.dataset!r}: set local-steps > 0, the optimiser steps of a "
            "centralized epoch (its windows are drawn from every role's training text)"
        )
    return cfg


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> Options:
    """Parse and check everything before any data is read; errors exit 2 naming the problem."""
    p = parser(prog)
    args, unknown = p.parse_known_args(argv)
    _refuse_removed(p, unknown)
    try:
        sets = parse_sets(args.set)
        values = run_config_of(args.conf, sets)
        base = RunConfig.from_run_config(values)
    except (ValueError, OSError) as err:  # ConfigError is a ValueError
        p.error(str(err))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    methods = methods or [base.method]
    seeds = args.seeds if args.seeds is not None else [base.seed]
    for m in methods:
        if m in OLD_METHODS:
            p.error(f"method {m!r} was renamed: use {OLD_METHODS[m]}")
    if not seeds or min(seeds) < 0:
        p.error(f"--seeds must be a comma list of seeds ≥ 0, got {args.seeds}")
    if args.epochs < 1 or args.select_epochs < 1:
        p.error("--epochs and --select-epochs must be ≥ 1")
    if args.select_seed < 0 or args.select_train < 0 or args.limit_train < 0:
        p.error("--select-seed, --select-train and --limit-train must be ≥ 0")
    if any(lr <= 0 for lr in args.lrs):
        p.error(f"--lrs must be > 0, got {args.lrs}")
    if args.lrs and "lr" in sets:
        p.error("--lrs chooses the lr: leave out --set lr=...")
    if args.lrs and not base.val_size:
        p.error("--lrs chooses the lr on a validation split: --set val-size=<examples held out>")
    configs = {}
    try:
        for m in methods:
            get_method(m)
            configs[m] = method_config(values, m, seeds[0], args.epochs)
    except ConfigError as err:
        p.error(str(err))
    if args.lrs:
        try:
            for m in methods:
                method_config(values, m, args.select_seed, args.select_epochs)
        except ConfigError as err:
            p.error(f"the lr trials' --select-epochs {args.select_epochs} (as num-rounds): {err}")
    try:
        resolve_device(configs[methods[0]])
    except RuntimeError as err:
        p.error(str(err))
    return Options(
        configs=configs,
        seeds=seeds,
        epochs=args.epochs,
        lrs=args.lrs,
        select_epochs=args.select_epochs,
        select_train=args.select_train,
        select_seed=args.select_seed,
        limit_train=args.limit_train,
        threads=args.threads,
        out=args.out,
        run_config=values,
    )
