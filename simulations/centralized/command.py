"""``python -m simulations.centralized``: train methods × seeds centrally, print and save results.

With ``--out`` it writes ``summary.csv`` (the federated report's schema, so
``python -m simulations.paired`` reads it), ``rows.json`` (every field of every row),
``table.md``, ``args.json`` (the run config, flags and CPU), ``lr-selection.json`` and each trained
model as ``<out>/<label>-seed<seed>/`` (``checkpoint.npz`` and ``config.json``, which
``python -m server.export`` evaluates and exports).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict

import torch

from maestro_common.app.config import ConfigError
from maestro_common.app.malloc import tune_malloc
from maestro_common.app.task import resolve_device
from simulations.centralized.data import load_data
from simulations.centralized.options import Options, parse_args
from simulations.centralized.rows import Row, summarize, summary_frame
from simulations.centralized.runner import choose_lr, run_one
from simulations.labels import method_label
from simulations.provenance import cpu_model

log = logging.getLogger("maestro.centralized")


def train_all(opts: Options) -> tuple[list[Row], dict[str, dict[float, float]]]:
    """Every (seed, method) of ``opts``, each method at its lr (chosen on validation with
    ``--lrs``); the rows and the lr trials' scores per method label."""
    first = opts.first
    device = str(resolve_device(first))
    data = load_data(first, opts.limit_train)
    chosen = {m: cfg.lr for m, cfg in opts.configs.items()}
    selection: dict[str, dict[float, float]] = {}
    for m, cfg in opts.configs.items():
        if opts.lrs:
            label = method_label(cfg.to_run_config())
            chosen[m], selection[label] = choose_lr(
                cfg,
                opts.lrs,
                opts.select_epochs,
                data,
                device,
                opts.select_seed,
                opts.select_train,
            )
            log.info("%s: lr %g chosen on validation", label, chosen[m])
    rows: list[Row] = []
    for seed in opts.seeds:
        for m, cfg in opts.configs.items():
            run = cfg.replace(seed=seed, lr=chosen[m])
            rows += run_one(run, opts.epochs, data, device, opts.out)
    return rows, selection


def write_outputs(opts: Options, rows: list[Row], selection: dict, table: str) -> None:
    """The files listed in the module's docstring, under ``opts.out``."""
    out = opts.out
    assert out is not None
    out.mkdir(parents=True, exist_ok=True)
    summary_frame(rows).to_csv(out / "summary.csv", index=False)
    (out / "rows.json").write_text(json.dumps([asdict(r) for r in rows], indent=1))
    (out / "table.md").write_text(table + "\n")
    record = {
        "run-config": opts.run_config,
        "methods": list(opts.configs),
        "seeds": opts.seeds,
        "epochs": opts.epochs,
        "lrs": opts.lrs,
        "select-epochs": opts.select_epochs,
        "select-train": opts.select_train,
        "select-seed": opts.select_seed,
        "limit-train": opts.limit_train,
        "threads": opts.threads,
        "cpu": cpu_model(),  # results differ between CPU models (rounding of their kernels)
    }
    (out / "args.json").write_text(json.dumps(record, indent=1))
    (out / "lr-selection.json").write_text(
        json.dumps({m: {f"{k:g}": v for k, v in sc.items()} for m, sc in selection.items()})
    )


def main(argv: list[str] | None = None, prog: str | None = None) -> list[Row]:
    """Train and compare; ``prog`` names the command in help and errors."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    opts = parse_args(argv, prog)
    tune_malloc()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    start = time.perf_counter()
    try:
        rows, selection = train_all(opts)
    except ConfigError as err:  # e.g. val-size too large for the training set
        raise SystemExit(f"{prog or 'python -m simulations.centralized'}: error: {err}") from err
    table = summarize(rows)
    print(table)
    print(
        f"\n({len(opts.seeds)} seed(s), {opts.epochs} epoch(s), "
        f"{time.perf_counter() - start:.0f} s in all)"
    )
    if opts.out is not None:
        write_outputs(opts, rows, selection, table)
    return rows
