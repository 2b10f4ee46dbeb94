"""Centralized training of dense and Maestro models, reported at every budget β.

Methods:

- ``dense``: the dense model, trained as is. Its rows at β < 1 are the naive alternative: the
  trained dense model factored by SVD and truncated to each budget (``svd`` in the table).
- ``maestro``: the model factored at initialisation and trained with ordered dropout.
- ``maestro-gl``: ``maestro`` plus the hierarchical group lasso (λ = ``--lasso``) and progressive
  shrinking (ε = ``--shrink-eps``) after every epoch.

Example::

    python -m maestro_common.centralized --model cnn --epochs 5 --seeds 0,1,2 \\
        --methods dense,maestro,maestro-gl --out runs/centralized/cnn

With ``--out`` every trained model is also saved as ``<out>/<method>-seed<seed>/checkpoint.npz``
(with its ``config.json``), which ``python -m server.export`` evaluates and exports.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from maestro_common.accounting import count_macs, count_params
from maestro_common.checkpoint import write_checkpoint
from maestro_common.codec import model_arrays
from maestro_common.config import RunConfig
from maestro_common.data import DATASET_INFO, load_dataset
from maestro_common.decompose import CONV_FACTORIZATIONS, decompose
from maestro_common.freezing import FREEZE_MODES, FreezeSchedule
from maestro_common.layers import low_rank_layers, set_rank_quantum
from maestro_common.malloc import tune_malloc
from maestro_common.models import MODEL_NAMES, build_model
from maestro_common.samplers import SAMPLER_NAMES, make_sampler
from maestro_common.shrinking import shrink
from maestro_common.training import TrainSettings, evaluate, train

log = logging.getLogger("maestro.centralized")
METHODS = ("dense", "maestro", "maestro-gl")


@dataclass(frozen=True)
class Row:
    model: str
    method: str  # dense, svd, maestro, maestro-gl
    seed: int
    beta: float
    accuracy: float
    loss: float
    params: int
    macs: int
    train_seconds: float


def _budget_rows(model, method, args, seed, test, train_seconds) -> list[Row]:
    info = DATASET_INFO[args.dataset]
    shape = (info.in_channels, info.image_size, info.image_size)
    rows = []
    for beta in args.betas:
        loss, acc = evaluate(model, test.images, test.labels, beta, device=args.device)
        rows.append(
            Row(
                args.model,
                method,
                seed,
                beta,
                acc,
                loss,
                count_params(model, beta),
                count_macs(model, shape, beta),
                train_seconds,
            )
        )
        log.info("%s seed=%d β=%.2f acc=%.4f params=%d", method, seed, beta, acc, rows[-1].params)
    return rows


def save_model(model: torch.nn.Module, method: str, seed: int, args: argparse.Namespace) -> Path:
    """Save a trained model as a run folder (checkpoint.npz and config.json) under ``args.out``.

    The run config names the federated method with the same model (dense: ``fedavg-all``, the
    factored ones: ``maestro``), so ``python -m server.export`` evaluates and exports it
    as it does a federated run. Returns the checkpoint's path.
    """
    cfg = RunConfig(
        method="fedavg-all" if method == "dense" else "maestro",
        model=args.model,
        dataset=args.dataset,
        data_dir=str(args.data_dir or ""),
        rank_fraction=args.rank_fraction,
        tier_fractions=",".join(f"{b:g}" for b in dict.fromkeys(args.betas)),
        num_rounds=args.epochs,
        seed=seed,
        run_name=f"{method}-seed{seed}",
    )
    folder = args.out / cfg.name
    path = folder / "checkpoint.npz"
    write_checkpoint(path, args.epochs, model_arrays(model), cfg.to_run_config())
    (folder / "config.json").write_text(json.dumps(cfg.to_run_config(), indent=1) + "\n")
    return path


def run_one(method: str, seed: int, args: argparse.Namespace, train_ds, test_ds) -> list[Row]:
    """Train one model with ``method`` and ``seed``; rows for every β."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    info = DATASET_INFO[args.dataset]
    torch.manual_seed(seed)
    model = build_model(args.model, info.num_classes, info.in_channels, info.image_size)
    if method != "dense":
        decompose(
            model, rank_fraction=args.rank_fraction, conv_factorization=args.conv_factorization
        )
        set_rank_quantum(model, args.rank_quantum)
    freezing = None if method == "dense" else FreezeSchedule(args.freeze, args.freeze_groups, seed)
    settings = TrainSettings(
        epochs=1,
        batch_size=args.batch_size,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        lasso=args.lasso if method == "maestro-gl" else 0.0,
    )
    seconds = 0.0
    for epoch in range(args.epochs):
        sampler = None
        if method != "dense":
            ranks = {n: m.rank for n, m in low_rank_layers(model).items()}
            sampler = make_sampler(args.sampler, ranks, seed=seed * 1000 + epoch)
        result = train(
            model,
            train_ds.images,
            train_ds.labels,
            settings,
            sampler,
            seed=seed * 1000 + epoch,
            device=args.device,
            freezing=freezing,
            period_offset=epoch,
        )
        seconds += result.seconds
        if method == "maestro-gl" and args.shrink_eps > 0:
            kept = shrink(model, args.shrink_eps)
            log.info("epoch %d: ranks after shrinking %s", epoch + 1, kept)
        log.info(
            "%s seed=%d epoch %d/%d loss=%.4f (%.1fs)",
            method,
            seed,
            epoch + 1,
            args.epochs,
            result.loss,
            result.seconds,
        )
    if args.out:
        save_model(model, method, seed, args)
    if method == "dense":
        loss, acc = evaluate(model, test_ds.images, test_ds.labels, device=args.device)
        info_shape = (info.in_channels, info.image_size, info.image_size)
        rows = [
            Row(
                args.model,
                "dense",
                seed,
                1.0,
                acc,
                loss,
                count_params(model),
                count_macs(model, info_shape),
                seconds,
            )
        ]
        decompose(model)  # exact at full rank; each β below is the truncated SVD
        return rows + _budget_rows(model, "svd", args, seed, test_ds, seconds)
    return _budget_rows(model, method, args, seed, test_ds, seconds)


def summarize(rows: list[Row]) -> str:
    """A markdown table: mean ± std over seeds for every (method, β)."""
    groups: dict[tuple[str, float], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.method, r.beta), []).append(r)
    lines = [
        "| model | method | β | accuracy % (mean ± std) | seeds | params | MACs |",
        "|---|---|---|---|---|---|---|",
    ]
    for (method, beta), rs in groups.items():
        accs = [100 * r.accuracy for r in rs]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        params = round(statistics.mean(r.params for r in rs))
        macs = round(statistics.mean(r.macs for r in rs))
        lines.append(
            f"| {rs[0].model} | {method} | {beta:.2f} | {statistics.mean(accs):.2f} ± {std:.2f} "
            f"| {len(rs)} | {params:,} | {macs:,} |"
        )
    return "\n".join(lines)


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m maestro_common.centralized",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default="cnn", choices=MODEL_NAMES)
    p.add_argument("--dataset", default="fashion-mnist", choices=sorted(DATASET_INFO))
    p.add_argument("--data-dir", default=None, help="folder with the dataset's files")
    p.add_argument("--methods", default="dense,maestro", help=f"comma list of {METHODS}")
    p.add_argument("--seeds", type=_ints, default=[0])
    p.add_argument("--epochs", type=int, default=5)
    # Hyper-parameter defaults are the federated run's (TrainSettings takes the run config's).
    train, run = TrainSettings(), RunConfig()
    p.add_argument("--batch-size", type=int, default=train.batch_size)
    p.add_argument("--lr", type=float, default=train.lr)
    p.add_argument("--momentum", type=float, default=train.momentum)
    p.add_argument("--weight-decay", type=float, default=train.weight_decay)
    p.add_argument(
        "--max-grad-norm", type=float, default=train.max_grad_norm, help="clip gradients (0: off)"
    )
    p.add_argument("--sampler", default=run.sampler, choices=SAMPLER_NAMES)
    p.add_argument(
        "--rank-fraction", type=float, default=run.rank_fraction, help="initial kept rank fraction"
    )
    # maestro-gl is the method with the lasso on, so its λ is not the run config's 0 (off).
    p.add_argument("--lasso", type=float, default=1e-4, help="λ of the group lasso (maestro-gl)")
    p.add_argument(
        "--shrink-eps", type=float, default=run.shrink_eps, help="ε of shrinking (maestro-gl)"
    )
    p.add_argument("--betas", type=_floats, default=[0.25, 0.5, 0.75, 1.0])
    p.add_argument("--limit-train", type=int, default=0, help="use only the first N train images")
    p.add_argument("--limit-test", type=int, default=0, help="use only the first N test images")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument(
        "--conv-factorization",
        default="svd",
        choices=CONV_FACTORIZATIONS,
        help="how kxk convs are factored: svd (kxk→r, 1x1 r→out) or tucker (1x1, kxk core, 1x1)",
    )
    p.add_argument(
        "--rank-quantum", type=int, default=1, help="round tier ranks down to multiples of this"
    )
    p.add_argument(
        "--freeze",
        default="none",
        choices=FREEZE_MODES,
        help="sequential freezing of factors, rotating per epoch",
    )
    p.add_argument("--freeze-groups", type=int, default=2, help="layer groups (--freeze layer)")
    p.add_argument("--out", type=Path, default=None, help="folder for rows.json and table.md")
    args = p.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in args.methods if m not in METHODS]
    if bad:
        p.error(f"unknown method(s) {bad}; allowed: {', '.join(METHODS)}")
    if any(not 0 < b <= 1 for b in args.betas):
        p.error(f"--betas must lie in (0, 1], got {args.betas}")
    if args.epochs < 1:
        p.error("--epochs must be ≥ 1")
    if args.rank_quantum < 1 or args.freeze_groups < 1:
        p.error("--rank-quantum and --freeze-groups must be ≥ 1")
    return args


def main(argv: list[str] | None = None) -> list[Row]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    tune_malloc()
    if args.threads:
        torch.set_num_threads(args.threads)
    train_ds = load_dataset(args.dataset, "train", args.data_dir)
    test_ds = load_dataset(args.dataset, "test", args.data_dir)
    if args.limit_train:
        train_ds = train_ds.subset(torch.arange(min(args.limit_train, len(train_ds))))
    if args.limit_test:
        test_ds = test_ds.subset(torch.arange(min(args.limit_test, len(test_ds))))
    start = time.perf_counter()
    rows: list[Row] = []
    for seed in args.seeds:
        for method in args.methods:
            rows += run_one(method, seed, args, train_ds, test_ds)
    table = summarize(rows)
    print(table)
    print(
        f"\n({len(args.seeds)} seed(s), {args.epochs} epoch(s), "
        f"{time.perf_counter() - start:.0f} s in all)"
    )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "rows.json").write_text(json.dumps([asdict(r) for r in rows], indent=1))
        cmd = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        (args.out / "args.json").write_text(json.dumps(cmd, indent=1))
        (args.out / "table.md").write_text(table + "\n")
    return rows


if __name__ == "__main__":
    main()
