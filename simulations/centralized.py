"""Centralized training of dense and Maestro models, reported at every budget β.

Methods:

- ``dense``: the dense model, trained as is. Its rows at β < 1 are the naive alternative: the
  trained dense model factored by SVD and truncated to each budget (``svd`` in the table).
- ``maestro``: the model factored (by default after a dense warm-up, below) and trained with the
  objective of ``--objective``: ``nested`` (default: the whole model on the labels plus
  sub-models of the ``--grid`` cut from it, all layers together, on the labels too, or with
  ``--distill`` on its output) or
  ``sampled`` (one sub-model per step from ``--sampler``).
- ``maestro-sampled``: ``maestro`` with ``--objective sampled`` (the paper's per-layer sampler by
  default), to compare both objectives in one run.
- ``maestro-gl``: ``maestro`` plus the hierarchical group lasso (λ = ``--lasso``) and progressive
  shrinking (ε = ``--shrink-eps``) after every epoch.
- ``fjord``: a width-sliceable dense model trained with FjORD's ordered dropout (one width per
  step from the widths whose MACs match the factored model's at each β), evaluated at those
  widths: the width-nesting anchor at matched MACs.

``--hybrid-width`` nests the factored methods' first conv by width, their factored layers by rank
(:mod:`maestro_common.lowrank.hybrid`); each β row is then evaluated at the hybrid's largest
fraction whose MACs fit the plain factored model's at β (the ``width`` column), as the
federation's tiers are, and fjord stays matched to the plain factored model.

The factored methods first train the dense model for ``--dense-warmup`` of the epochs (default
0.6, rounded to whole epochs, at least one factored epoch left), then factor its trained weights
by SVD and go on factored (Pufferfish's warm-up); their rows are then named ``<method>+warmup``.
``--dense-warmup 0`` factors at initialisation, as the paper does.

With ``--val-size N`` the last N images of a fixed shuffle of the training set are held out as a
validation split; with several ``--lrs`` each method's lr is chosen on it (mean accuracy over the
β's, ``--select-epochs`` epochs, seed ``--select-seed``, whatever ``--seeds`` this process trains,
so seeds split over processes share one trial), then every seed is trained at that lr. Every
row then also records its model's accuracy on that split (``val_accuracy``), so other settings
(e.g. ``--dense-warmup``) can be chosen on validation too, from the runs themselves.

Example::

    python -m simulations.centralized --model cnn --epochs 5 --seeds 0,1,2 \\
        --methods dense,maestro,fjord --val-size 6000 --lrs 0.02,0.05 --out runs/centralized/cnn

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

from maestro_common.app.checkpoint import write_checkpoint
from maestro_common.app.codec import model_arrays
from maestro_common.app.config import OBJECTIVES, RunConfig
from maestro_common.app.malloc import tune_malloc
from maestro_common.app.methods import get_method
from maestro_common.lowrank.accounting import count_macs, count_params
from maestro_common.lowrank.decompose import CONV_FACTORIZATIONS, INITIAL_RANKS, decompose
from maestro_common.lowrank.freezing import FREEZE_MODES, FreezeSchedule
from maestro_common.lowrank.layers import low_rank_layers
from maestro_common.lowrank.samplers import (
    SAMPLER_NAMES,
    SUBMODEL_RULES,
    NestedSampler,
    WidthSampler,
    make_sampler,
)
from maestro_common.lowrank.shrinking import shrink
from maestro_common.lowrank.training import TrainSettings, evaluate, train
from maestro_common.lowrank.width_match import width_for_macs
from maestro_common.ml.data import DATASET_INFO, load_dataset
from maestro_common.ml.models import MODEL_NAMES, build_model
from maestro_common.ml.schedules import SCHEDULES
from maestro_common.width.sliceable import make_width_sliceable
from simulations.labels import freeze_suffix
from simulations.provenance import cpu_model

log = logging.getLogger("maestro.centralized")
METHODS = ("dense", "maestro", "maestro-sampled", "maestro-gl", "fjord")
VAL_SEED = 12345  # the shuffle that picks the validation split (--val-size)


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
    lr: float = 0.0
    step_cost: float = 1.0  # MACs of one training step's passes / one dense model's pass
    width: float = 1.0  # fjord: the width evaluated at this β; a hybrid maestro: its budget
    # The same model's accuracy on the validation split (--val-size), None without one: what
    # settings other than the lr (e.g. --dense-warmup) are chosen on, never the test accuracy.
    val_accuracy: float | None = None


def _shape(args: argparse.Namespace) -> tuple[int, int, int]:
    info = DATASET_INFO[args.dataset]
    return (info.in_channels, info.image_size, info.image_size)


def _val_accuracy(model, val, budget: float, args: argparse.Namespace) -> float | None:
    """Accuracy of ``model`` at ``budget`` on the validation split (None without one)."""
    if val is None:
        return None
    return evaluate(model, val.images, val.labels, budget, device=args.device)[1]


def _budget_rows(
    model, method, args, seed, test, train_seconds, widths=None, lr=0.0, cost=1.0, val=None
) -> list[Row]:
    """One row per β; a width model (``widths``: β -> width) is evaluated at its matched width,
    a hybrid one (``widths``: β -> fraction) at its MAC-matched budget."""
    shape = _shape(args)
    rows = []
    for beta in args.betas:
        budget = widths[beta] if widths else beta
        loss, acc = evaluate(model, test.images, test.labels, budget, device=args.device)
        rows.append(
            Row(
                args.model,
                method,
                seed,
                beta,
                acc,
                loss,
                count_params(model, budget),
                count_macs(model, shape, budget),
                train_seconds,
                lr,
                cost,
                budget if widths else 1.0,
                _val_accuracy(model, val, budget, args),
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
        # What server.export needs to rebuild the same factored model (dense ignores them).
        conv_factorization=args.conv_factorization,
        initial_ranks=args.initial_ranks,
        rank_quantum=args.rank_quantum,
        hybrid_width=args.hybrid_width,
    )
    folder = args.out / cfg.name
    path = folder / "checkpoint.npz"
    write_checkpoint(path, args.epochs, model_arrays(model), cfg.to_run_config())
    (folder / "config.json").write_text(json.dumps(cfg.to_run_config(), indent=1) + "\n")
    return path


def _factor(
    model: torch.nn.Module, args: argparse.Namespace, hybrid: bool | None = None
) -> torch.nn.Module:
    """Factor ``model`` in place with the maestro options of ``args``, as the federated run does
    (``hybrid``: whether its first conv is nested by width; default ``--hybrid-width``)."""
    cfg = RunConfig(
        rank_fraction=args.rank_fraction,
        initial_ranks=args.initial_ranks,
        conv_factorization=args.conv_factorization,
        rank_quantum=args.rank_quantum,
        hybrid_width=args.hybrid_width if hybrid is None else hybrid,
    )
    return get_method("maestro").prepare(model, _shape(args), cfg)


def _build(args: argparse.Namespace) -> torch.nn.Module:
    info = DATASET_INFO[args.dataset]
    return build_model(args.model, info.num_classes, info.in_channels, info.image_size)


def matched_widths(args: argparse.Namespace) -> dict[float, float]:
    """For every β, the widest width model whose MACs fit the factored model's at β (the plain
    factored model's, also with ``--hybrid-width``)."""
    with torch.random.fork_rng(devices=[]):
        width_model = make_width_sliceable(_build(args), _shape(args))
    return _matched(width_model, args)


def hybrid_budgets(args: argparse.Namespace) -> dict[float, float]:
    """``--hybrid-width``: for every β, the largest fraction of the hybrid model whose MACs fit
    the plain factored model's at β, as the federation's tiers take (its rows' ``width``)."""
    with torch.random.fork_rng(devices=[]):
        hybrid = _factor(_build(args), args)
    return _matched(hybrid, args)


def _matched(model: torch.nn.Module, args: argparse.Namespace) -> dict[float, float]:
    with torch.random.fork_rng(devices=[]):
        plain = _factor(_build(args), args, hybrid=False)
    shape = _shape(args)
    return {b: width_for_macs(model, shape, count_macs(plain, shape, b)) for b in args.betas}


def warmup_epochs(args: argparse.Namespace) -> int:
    """Epochs a factored method trains the dense model first: ``--dense-warmup`` of all, rounded.

    The model is factored by SVD of its trained weights after them (Pufferfish's warm-up), so
    the nested objective starts from the dense model's ordered spectrum. At least one epoch is
    always left for the factored model.
    """
    if not args.dense_warmup:
        return 0
    return min(max(round(args.dense_warmup * args.epochs), 1), args.epochs - 1)


def _epoch_sampler(method: str, model, args: argparse.Namespace, seed: int, widths):
    """The sampler of one epoch of ``method`` (None: the whole model)."""
    if method == "dense":
        return None
    if method == "fjord":
        return WidthSampler(sorted(set(widths.values())), seed=seed)
    ranks = {n: m.rank for n, m in low_rank_layers(model).items()}
    objective = "sampled" if method == "maestro-sampled" else args.objective
    if objective == "nested":
        return NestedSampler(
            ranks,
            # A hybrid's sub-models are its tiers' budgets (``widths``), not the β labels.
            grid=args.grid or (sorted(widths.values()) if widths else args.betas),
            rule=args.sub_models,
            full_pass_share=args.full_pass_share,
            seed=seed,
        )
    return make_sampler(args.sampler, ranks, seed=seed)


def _cost(method: str, model, args, result, widths) -> float:
    """MACs of one training step relative to one pass of the dense model."""
    shape = _shape(args)
    with torch.random.fork_rng(devices=[]):
        dense_macs = count_macs(_build(args), shape)
    if method == "dense":
        return 1.0
    return result.cost_per_step(lambda p: count_macs(model, shape, p), dense_macs)


def run_one(
    method: str,
    seed: int,
    args: argparse.Namespace,
    train_ds,
    test_ds,
    lr: float | None = None,
    val_ds=None,
) -> list[Row]:
    """Train one model with ``method`` and ``seed`` (at ``lr``, default ``--lr``); rows per β.

    With ``val_ds`` every row also carries the model's accuracy on it (``val_accuracy``).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    lr = args.lr if lr is None else lr
    torch.manual_seed(seed)
    model = _build(args)
    factored = method not in ("dense", "fjord")
    widths = None  # β -> the budget a row is evaluated at, where it is not β itself
    if method == "fjord":
        widths = matched_widths(args)
    elif factored and args.hybrid_width:
        widths = hybrid_budgets(args)
    # A factored method with a dense warm-up trains the dense model first, then factors it.
    warmup = warmup_epochs(args) if factored else 0
    if method == "fjord":
        make_width_sliceable(model, _shape(args))
    elif factored and not warmup:
        _factor(model, args)
    freezing = (
        FreezeSchedule(args.freeze, args.freeze_groups, seed, args.freeze_per_epoch)
        if factored
        else None
    )
    settings = TrainSettings(
        epochs=1,
        batch_size=args.batch_size,
        lr=lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        lasso=args.lasso if method == "maestro-gl" else 0.0,
        frobenius_decay=args.frobenius_decay if factored else 0.0,
        distill=args.distill,
        distill_temperature=args.distill_temperature,
        pass_average=args.pass_average,
        lr_schedule=args.lr_schedule,
    )
    steps_per_epoch = -(-len(train_ds) // args.batch_size)
    seconds, cost_sum = 0.0, 0.0
    for epoch in range(args.epochs):
        if warmup and epoch == warmup:
            _factor(model, args)  # SVD of the trained weights: exact at full rank
            log.info("%s seed=%d: factored after %d dense warm-up epoch(s)", method, seed, epoch)
        phase = "dense" if epoch < warmup else method
        sampler = _epoch_sampler(phase, model, args, seed * 1000 + epoch, widths)
        result = train(
            model,
            train_ds.images,
            train_ds.labels,
            settings,
            sampler,
            seed=seed * 1000 + epoch,
            device=args.device,
            freezing=freezing if phase != "dense" else None,
            period_offset=epoch,
            step_offset=epoch * steps_per_epoch,
            total_steps=args.epochs * steps_per_epoch,
        )
        seconds += result.seconds
        cost_sum += _cost(phase, model, args, result, widths)
        if phase == "maestro-gl" and args.shrink_eps > 0:
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
    cost = cost_sum / args.epochs
    if args.out:
        save_model(model, method, seed, args)
    if method == "dense":
        loss, acc = evaluate(model, test_ds.images, test_ds.labels, device=args.device)
        rows = [
            Row(
                args.model,
                "dense",
                seed,
                1.0,
                acc,
                loss,
                count_params(model),
                count_macs(model, _shape(args)),
                seconds,
                lr,
                cost,
                val_accuracy=_val_accuracy(model, val_ds, 1.0, args),
            )
        ]
        decompose(model)  # exact at full rank; each β below is the truncated SVD
        return rows + _budget_rows(
            model, "svd", args, seed, test_ds, seconds, lr=lr, cost=cost, val=val_ds
        )
    label = (
        method
        + ("+hybrid" if args.hybrid_width else "")
        + ("+fd" if factored and args.frobenius_decay else "")
        + (freeze_suffix(args.freeze, args.freeze_per_epoch) if factored else "")
        + ("+warmup" if warmup else "")
    )
    return _budget_rows(model, label, args, seed, test_ds, seconds, widths, lr, cost, val_ds)


def split_validation(train_ds, val_size: int):
    """(training, validation): the last ``val_size`` images of a fixed shuffle are held out.

    The shuffle's seed is fixed, so every run (and any later evaluation of a saved model) holds
    out the same images whatever its own seed.
    """
    order = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(VAL_SEED))
    return train_ds.subset(order[:-val_size]), train_ds.subset(order[-val_size:])


def choose_lr(method: str, args: argparse.Namespace, train_ds, val_ds) -> tuple[float, dict]:
    """The lr of ``--lrs`` with the best mean validation accuracy over the β's (``--select-seed``).

    Dense is judged on the dense model alone: its SVD truncations are baselines derived from it,
    and the truncation to a quarter of the rank (whose validation accuracy swings by tens of
    points between settings) would otherwise decide the choice.
    """
    sub = argparse.Namespace(**{**vars(args), "epochs": args.select_epochs})
    if args.select_train:
        train_ds = train_ds.subset(torch.arange(min(args.select_train, len(train_ds))))
    scores = {}
    for lr in args.lrs:
        rows = run_one(method, args.select_seed, sub, train_ds, val_ds, lr)
        if method == "dense":
            rows = [r for r in rows if r.method == "dense"]
        scores[lr] = statistics.mean(r.accuracy for r in rows)
        log.info("lr selection %s lr=%g: mean validation accuracy %.4f", method, lr, scores[lr])
    return max(scores, key=lambda lr: scores[lr]), scores


def summarize(rows: list[Row]) -> str:
    """A markdown table: mean ± std over seeds for every (method, β)."""
    groups: dict[tuple[str, float], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.method, r.beta), []).append(r)
    lines = [
        "| model | method | β | accuracy % (mean ± std) | validation % | seeds | params | MACs "
        "| lr | step cost |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (method, beta), rs in groups.items():
        accs = [100 * r.accuracy for r in rs]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        vals = [100 * r.val_accuracy for r in rs if r.val_accuracy is not None]
        val = f"{statistics.mean(vals):.2f}" if vals else "–"
        params = round(statistics.mean(r.params for r in rs))
        macs = round(statistics.mean(r.macs for r in rs))
        lines.append(
            f"| {rs[0].model} | {method} | {beta:.2f} | {statistics.mean(accs):.2f} ± {std:.2f} "
            f"| {val} | {len(rs)} | {params:,} | {macs:,} | {rs[0].lr:g} "
            f"| {statistics.mean(r.step_cost for r in rs):.2f} |"
        )
    return "\n".join(lines)


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=prog or "python -m simulations.centralized",
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
    p.add_argument("--lr", type=float, default=train.lr, help="lr when --lrs is not given")
    p.add_argument("--lrs", type=_floats, default=[], help="lr grid chosen on --val-size images")
    p.add_argument("--select-epochs", type=int, default=2, help="epochs of each lr trial")
    p.add_argument("--select-train", type=int, default=0, help="train images of a trial (0: all)")
    p.add_argument("--select-seed", type=int, default=0, help="seed of the lr trials")
    p.add_argument("--val-size", type=int, default=0, help="train images held out (validation)")
    p.add_argument("--lr-schedule", default="cosine", choices=SCHEDULES)
    p.add_argument("--objective", default="nested", choices=OBJECTIVES, help="maestro's")
    p.add_argument("--sub-models", default="sandwich", choices=SUBMODEL_RULES)
    p.add_argument("--distill", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--distill-temperature", type=float, default=1.0)
    p.add_argument(
        "--pass-average",
        action=argparse.BooleanOptionalAction,
        default=train.pass_average,
        help="nested: each gradient is the mean over the step's passes that used it (off: sum)",
    )
    p.add_argument("--full-pass-share", type=float, default=1.0, help="steps that run the prefix")
    p.add_argument("--grid", type=_floats, default=[], help="sub-model fractions (default β's)")
    p.add_argument("--momentum", type=float, default=train.momentum)
    p.add_argument("--weight-decay", type=float, default=train.weight_decay)
    p.add_argument(
        "--max-grad-norm", type=float, default=train.max_grad_norm, help="clip gradients (0: off)"
    )
    p.add_argument("--sampler", default=run.sampler, choices=SAMPLER_NAMES)
    p.add_argument(
        "--rank-fraction", type=float, default=run.rank_fraction, help="initial kept rank fraction"
    )
    p.add_argument(
        "--initial-ranks", default="full", choices=INITIAL_RANKS, help="breakeven: ≤ dense size"
    )
    p.add_argument(
        "--hybrid-width",
        action="store_true",
        help="factored methods: nest the first conv by width, the factored layers by rank "
        "(fjord is then matched to the hybrid's MACs at each β)",
    )
    p.add_argument(
        "--dense-warmup",
        type=float,
        default=0.6,
        help="share of the epochs the factored methods first train the dense model, then factor "
        "it by SVD (0: factored from initialisation, the paper's method)",
    )
    # maestro-gl is the method with the lasso on, so its λ is not the run config's 0 (off).
    p.add_argument("--lasso", type=float, default=1e-4, help="λ of the group lasso (maestro-gl)")
    p.add_argument(
        "--frobenius-decay",
        type=float,
        default=train.frobenius_decay,
        help="λ of Frobenius decay, ½λ‖U Vᵀ‖² per factored layer (factored methods; 0: off)",
    )
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
        help="how kxk convs are factored: svd (kxk→r, 1x1 r→out), tucker (1x1, kxk core, 1x1) "
        "or tucker-b2/-b4 (the branched Tucker: the core in 2 or 4 groups)",
    )
    p.add_argument(
        "--rank-quantum", type=int, default=1, help="round tier ranks down to multiples of this"
    )
    p.add_argument(
        "--freeze",
        default="none",
        choices=FREEZE_MODES,
        help="sequential freezing, rotating per epoch: one factor of every factored layer, a "
        "group of factored layers, or a stage of the whole model (docs/fast-tiers.md)",
    )
    p.add_argument(
        "--freeze-groups",
        type=int,
        default=2,
        help="groups (--freeze layer) or stages (--freeze stage)",
    )
    p.add_argument(
        "--freeze-per-epoch",
        type=int,
        default=1,
        help="freezing periods per epoch: what is frozen changes this often",
    )
    p.add_argument("--out", type=Path, default=None, help="folder for rows.json and table.md")
    args = p.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in args.methods if m not in METHODS]
    if bad:
        p.error(f"unknown method(s) {bad}; allowed: {', '.join(METHODS)}")
    if any(not 0 < b <= 1 for b in args.betas):
        p.error(f"--betas must lie in (0, 1], got {args.betas}")
    if args.select_seed < 0:
        p.error(f"--select-seed must be ≥ 0, got {args.select_seed}")
    if args.epochs < 1 or args.select_epochs < 1:
        p.error("--epochs and --select-epochs must be ≥ 1")
    if args.lrs and args.val_size <= 0:
        p.error("--lrs needs a validation split: give --val-size > 0")
    if any(lr <= 0 for lr in [*args.lrs, args.lr]):
        p.error("learning rates must be > 0")
    if not 0 <= args.full_pass_share <= 1:
        p.error(f"--full-pass-share must be in [0, 1], got {args.full_pass_share}")
    if any(not 0 < g <= 1 for g in args.grid):
        p.error(f"--grid must lie in (0, 1], got {args.grid}")
    if args.rank_quantum < 1 or args.freeze_groups < 1 or args.freeze_per_epoch < 1:
        p.error("--rank-quantum, --freeze-groups and --freeze-per-epoch must be ≥ 1")
    if args.frobenius_decay < 0:
        p.error(f"--frobenius-decay must be ≥ 0, got {args.frobenius_decay}")
    if not 0 <= args.dense_warmup < 1:
        p.error(f"--dense-warmup must be in [0, 1), got {args.dense_warmup}")
    return args


def main(argv: list[str] | None = None, prog: str | None = None) -> list[Row]:
    """Train and compare; ``prog`` names the command in help and errors."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv, prog)
    tune_malloc()
    if args.threads:
        torch.set_num_threads(args.threads)
    train_ds = load_dataset(args.dataset, "train", args.data_dir)
    test_ds = load_dataset(args.dataset, "test", args.data_dir)
    if args.limit_train:
        train_ds = train_ds.subset(torch.arange(min(args.limit_train, len(train_ds))))
    if args.limit_test:
        test_ds = test_ds.subset(torch.arange(min(args.limit_test, len(test_ds))))
    val_ds = None
    if args.val_size:
        if args.val_size >= len(train_ds):
            raise SystemExit(f"--val-size {args.val_size} must be below {len(train_ds)} images")
        train_ds, val_ds = split_validation(train_ds, args.val_size)
    start = time.perf_counter()
    chosen = {m: args.lr for m in args.methods}
    selection = {}
    if args.lrs:
        for method in args.methods:
            chosen[method], selection[method] = choose_lr(method, args, train_ds, val_ds)
            log.info("%s: lr %g chosen on validation", method, chosen[method])
    rows: list[Row] = []
    for seed in args.seeds:
        for method in args.methods:
            rows += run_one(method, seed, args, train_ds, test_ds, chosen[method], val_ds)
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
        cmd["cpu"] = cpu_model()  # results differ between CPU models (rounding of their kernels)
        (args.out / "args.json").write_text(json.dumps(cmd, indent=1))
        (args.out / "table.md").write_text(table + "\n")
        (args.out / "lr-selection.json").write_text(
            json.dumps({m: {str(k): v for k, v in sc.items()} for m, sc in selection.items()})
        )
    return rows


if __name__ == "__main__":
    main()
