"""Uniform against MAC-aware tier ranks on saved models: accuracy per budget, validation and test.

A uniform tier of budget β keeps ⌈β·r_l⌉ components of every factored layer;
:func:`maestro_common.lowrank.allocation.tier_ranks` spends the same MACs and parameters on the
components that remove the most residual energy per cost, measured on the weights
(``weights``) or on the layers' outputs over training images (``outputs``). This tool scores
both against uniform ranks on models the centralized trainer saved (``--out``): Maestro's
factored models as trained, dense ones after their exact SVD (so the rows are SVD truncation).
The validation split is the trainer's (run-config ``val-size``, held out as the federation holds
it out), so a rule can be chosen on it; the test accuracy is reported beside it.

Example::

    python -m simulations.experiments.rank_allocation runs/cent/cnn-maestro-warm \\
        runs/cent/cnn-dense --val-size 6000 --out runs/cent/allocation.json
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path

import torch

from maestro_common.app.methods import METHODS
from maestro_common.lowrank.allocation import tier_ranks
from maestro_common.lowrank.decompose import decompose
from maestro_common.lowrank.layers import budget_ranks
from maestro_common.lowrank.training import evaluate
from maestro_common.ml.data import DATASET_INFO, load_dataset
from server.export import load_run
from simulations.centralized import split_validation

log = logging.getLogger("maestro.rank_allocation")
RULES = ("uniform", "weights", "outputs")
# Methods whose models are width-sliced: no ranks to allocate.
WIDTH_METHODS = tuple(name for name, m in METHODS.items() if m.width_sliced)


def saved_runs(folders: list[Path]) -> list[Path]:
    """The checkpoints of factored or dense runs under ``folders`` (width runs are skipped)."""
    found = []
    for folder in folders:
        for ckpt in sorted(folder.glob("*/checkpoint.npz")):
            method = ckpt.parent.name.rsplit("-seed", 1)[0].split("+")[0]
            if method in WIDTH_METHODS:
                continue  # a width model: no ranks to allocate
            found.append(ckpt)
    if not found:
        raise SystemExit(f"no saved dense or factored run under {[str(f) for f in folders]}")
    return found


def score_run(ckpt: Path, betas: list[float], val, test, calibration: torch.Tensor) -> list[dict]:
    """Validation and test accuracy of one saved model at each β under every rule."""
    run = load_run(ckpt)
    model = run.model
    kind = "maestro"
    if run.cfg.method == "fedavg-all":
        decompose(model)  # exact at full rank: its tiers are the SVD truncations
        kind = "svd"
    shape = run.ops.shape
    rules = {
        "uniform": {b: budget_ranks(model, b) for b in betas},
        "weights": tier_ranks(model, shape, betas),
        "outputs": tier_ranks(model, shape, betas, inputs=calibration),
    }
    rows = []
    for beta in betas:
        for rule, ranks in rules.items():
            rows.append(
                {
                    "run": str(ckpt.parent),
                    "kind": kind,
                    "beta": beta,
                    "rule": rule,
                    "ranks": ranks[beta],
                    "val": evaluate(model, val.images, val.labels, ranks=ranks[beta])[1],
                    "test": evaluate(model, test.images, test.labels, ranks=ranks[beta])[1],
                }
            )
            log.info("%s %s β=%g %s: %s", ckpt.parent.name, kind, beta, rule, rows[-1])
    return rows


def summarize(rows: list[dict]) -> str:
    """Mean validation / test accuracy over the seeds of each folder, kind, β and rule."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        folder = Path(r["run"]).parent.name
        groups.setdefault((folder, r["kind"], r["beta"], r["rule"]), []).append(r)
    lines = [
        "| folder | kind | β | rule | validation % | test % | runs |",
        "|---|---|---|---|---|---|---|",
    ]
    for (folder, kind, beta, rule), rs in sorted(groups.items()):
        val = statistics.mean(100 * r["val"] for r in rs)
        test = statistics.mean(100 * r["test"] for r in rs)
        lines.append(
            f"| {folder} | {kind} | {beta:g} | {rule} | {val:.2f} | {test:.2f} | {len(rs)} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m simulations.experiments.rank_allocation", description=__doc__
    )
    p.add_argument("folders", nargs="+", type=Path, help="--out folders of the centralized trainer")
    p.add_argument("--dataset", default="fashion-mnist", choices=sorted(DATASET_INFO))
    p.add_argument("--data-dir", default=None, help="folder with the dataset's files")
    p.add_argument("--val-size", type=int, default=6000, help="the trainer's val-size")
    p.add_argument("--calibration", type=int, default=1024, help="training images for 'outputs'")
    p.add_argument("--betas", default="0.25,0.5,0.75", help="budgets below 1 to compare")
    p.add_argument("--limit-test", type=int, default=0, help="use only the first N test images")
    p.add_argument("--out", type=Path, default=None, help="JSON file for every row")
    args = p.parse_args(argv)
    try:
        args.betas = [float(b) for b in args.betas.split(",") if b]
    except ValueError:
        p.error(f"--betas must be a comma list of numbers in (0, 1), got {args.betas!r}")
    if not args.betas or any(not 0 < b < 1 for b in args.betas):
        p.error(f"--betas must be numbers in (0, 1), got {args.betas}")
    if args.val_size < 1 or args.calibration < 1:
        p.error("--val-size and --calibration must be ≥ 1")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    train = load_dataset(args.dataset, "train", args.data_dir)
    if args.val_size >= len(train):
        raise SystemExit(f"--val-size {args.val_size} must be below {len(train)} images")
    fit, val = split_validation(train, args.val_size)
    test = load_dataset(args.dataset, "test", args.data_dir)
    if args.limit_test:
        test = test.subset(torch.arange(min(args.limit_test, len(test))))
    calibration = fit.images[: args.calibration]
    rows = []
    for ckpt in saved_runs(args.folders):
        rows += score_run(ckpt, args.betas, val, test, calibration)
    print(summarize(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
