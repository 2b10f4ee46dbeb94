"""Get a trained tier out of a run: export it for inference, or evaluate every tier of a checkpoint.

Two subcommands, both reading a checkpoint through :mod:`server.loaded_run` (a
federated run folder, or a model saved by the centralized trainer). The model is built from the
run config inside the checkpoint, covered by its checksum; a ``config.json`` beside it (or one
given with ``--config``) must agree with it, else the command stops naming the keys that
differ::

    python -m server.export export runs/demo/<run>/checkpoint.npz --beta 0.2 --out exported
    python -m server.export evaluate runs/demo/<run>/checkpoint.npz --betas 0.2,0.6,1 \\
        --out runs/demo/<run>/eval

``export`` writes ``<out>/<name>.pt2`` (``name`` a plain file name, kept inside ``out``), a
``torch.export`` program that loads with torch alone (``torch.export.load(path).module()``) and
maps raw pixels in [0, 1] of shape (B, C, H, W) to class logits (normalisation is inside), and
``<out>/<name>.json`` with the tier's budget, ranks, params, MACs, bytes, test accuracy and
latency. Each factored layer is written factored or merged into a dense one by a stated
``--target``: ``size`` (the default below the full tier) merges only where the dense form has
fewer parameters, so the artifact is never bigger than the factored tier; ``latency`` (the default
for the full tier, β = 1) merges where the dense form was measured faster on this CPU
(:func:`maestro_common.lowrank.inference.merge_where_faster`). An artifact bigger than the
factored tier is reported with a warning and ``bigger-than-factored`` in the JSON.

``evaluate`` prints the per-tier table (accuracy, loss, params, MACs, bytes, latency) and writes
it as ``tiers.md``, ``tiers.json`` and ``tiers.csv``, without re-running the federation.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import warnings
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

import torch
from flwr.common.logger import log

from maestro_common.app.config import RunConfig
from maestro_common.lowrank.accounting import count_macs, count_params
from maestro_common.lowrank.budget import use_budget
from maestro_common.lowrank.decompose import to_dense
from maestro_common.lowrank.inference import (
    Normalize,
    latency_ms,
    merge_where_faster,
    merge_where_smaller,
    tier_model,
)
from maestro_common.lowrank.layers import low_rank_layers
from maestro_common.lowrank.training import evaluate
from maestro_common.ml.data import DATASET_INFO, ArrayDataset
from maestro_common.ml.prefix import array_shapes, payload_nbytes, take_prefix
from server.loaded_run import LoadedRun, load_run, load_test_set, tier_beta

LATENCY_BATCHES = (1, 64)
# How factored layers are written: a target decides per layer; --merge forces or measures.
TARGETS = ("size", "latency")
MERGE_MODES = ("measure", "none", "all")  # measure = --target latency (the old default)
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def check_name(name: str) -> str:
    """An artifact name: a plain file name, so ``<out>/<name>.pt2`` stays inside ``out``.

    Raises
    ------
    ValueError
        For path separators, ``..``, an absolute path or other characters.
    """
    if not NAME_RE.fullmatch(name) or ".." in name:
        raise ValueError(
            f"--name {name!r} is not allowed: give a plain file name (letters, digits, '.', '_', "
            "'-'; starting with a letter or digit; no '/', '\\', '..' or absolute path; at most "
            "200 characters); it is written inside --out"
        )
    return name


def pixels(cfg: RunConfig, images: torch.Tensor) -> torch.Tensor:
    """Undo the dataset's normalisation: the artifact takes raw pixels in [0, 1]."""
    info = DATASET_INFO[cfg.dataset]
    mean = torch.tensor(info.mean).reshape(1, -1, 1, 1)
    std = torch.tensor(info.std).reshape(1, -1, 1, 1)
    return images * std + mean


def _batch(x: torch.Tensor, size: int) -> torch.Tensor:
    reps = -(-size // len(x))
    return x.repeat(reps, 1, 1, 1)[:size].contiguous()


@torch.no_grad()
def _accuracy(fn, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    correct = 0
    for start in range(0, len(labels), batch_size):
        out = fn(images[start : start + batch_size])
        correct += (out.argmax(1) == labels[start : start + batch_size]).sum().item()
    return correct / max(len(labels), 1)


def merge_rule(beta: float, target: str | None = None, merge: str | None = None) -> str:
    """How tier β's factored layers are written: ``size``, ``measure``, ``none`` or ``all``.

    ``target`` ``size`` gives ``size`` (merge only where the dense form is smaller), ``latency``
    gives ``measure`` (merge where timed faster). ``merge`` is the older flag: ``measure`` is
    ``--target latency``; ``none`` and ``all`` force every layer factored or merged. With
    neither: ``size`` below the full tier (β < 1), ``measure`` for the full tier.

    Raises
    ------
    ValueError
        For an unknown target or merge mode, or both given.
    """
    if target is not None and target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if merge is not None and merge not in MERGE_MODES:
        raise ValueError(f"merge must be one of {MERGE_MODES}, got {merge!r}")
    if target is not None and merge is not None:
        raise ValueError(
            f"give a target or a merge mode, not both (got target {target!r} and merge "
            f"{merge!r}); --merge measure is --target latency"
        )
    if merge is not None:
        return merge
    if target is None:
        target = "size" if beta < 1 else "latency"
    return "size" if target == "size" else "measure"


def export_tier(
    run: LoadedRun,
    beta: float,
    out: Path,
    test: ArrayDataset,
    merge: str | None = None,
    repeats: int = 50,
    name: str | None = None,
    target: str | None = None,
) -> dict[str, Any]:
    """Write tier β of ``run`` as ``<out>/<name>.pt2`` and its facts as ``<out>/<name>.json``.

    Returns the JSON's content. Which factored layers are merged into dense ones is
    :func:`merge_rule` of ``target`` and ``merge`` (default: the smaller form per layer below
    the full tier, the faster one for the full tier). When the written tier has more
    parameters than its factored form, a warning is logged and kept in the JSON's ``warnings``
    (with ``bigger-than-factored`` true).
    """
    rule = merge_rule(beta, target, merge)
    cfg = run.cfg
    name = check_name(f"{cfg.name}-beta{beta:g}" if name is None else name)
    if run.ops.method.width_sliced:
        raise ValueError(
            f"export supports factored (maestro) and dense (fedavg-all) models, not the width "
            f"baseline {cfg.method!r}; its tiers can be evaluated with the evaluate subcommand"
        )
    budget = run.ops.method_budget(beta)
    shape = run.ops.shape
    framework_loss, framework_acc = evaluate(run.model, test.images, test.labels, budget)
    sub = tier_model(run.model, budget)
    ranks = {n: m.rank for n, m in low_rank_layers(sub).items()}
    factored_params = count_params(sub)
    timings, sizes = [], []
    if rule == "measure":
        timings = [d.to_json() for d in merge_where_faster(sub, shape, LATENCY_BATCHES)]
    elif rule == "size":
        sizes = [d.to_json() for d in merge_where_smaller(sub)]
    elif rule == "all":
        to_dense(sub, beta=1.0)
    merged = sorted(set(ranks) - set(low_rank_layers(sub)))
    params = count_params(sub)
    notes = []
    if params > factored_params:
        notes.append(
            f"the exported tier β={beta:g} has {params:,} parameters, more than its factored "
            f"form's {factored_params:,} (merged to dense: {', '.join(merged)}; merge rule "
            f"{rule!r}); --target size writes no layer bigger than its factored form"
        )
    info = DATASET_INFO[cfg.dataset]
    wrapped = Normalize(sub, info.mean, info.std).eval()
    example = torch.zeros((2, *shape))
    program = torch.export.export(
        wrapped, (example,), dynamic_shapes={"x": {0: torch.export.Dim.DYNAMIC}}
    )
    out.mkdir(parents=True, exist_ok=True)
    artifact = out / f"{name}.pt2"
    with warnings.catch_warnings():
        # torch 2.13 warns "No complete tensor found in the group" for every CPU program it
        # saves; the program loads and runs the same (the tests check it in a torch-only process).
        warnings.filterwarnings("ignore", message="No complete tensor found")
        torch.export.save(program, artifact)
    # Measure what was written: the program loaded back, as a device would load it.
    loaded = torch.export.load(artifact).module()
    raw = pixels(cfg, test.images)
    accuracy = _accuracy(loaded, raw, test.labels)
    latency = {str(b): latency_ms(loaded, _batch(raw, b), repeats) for b in LATENCY_BATCHES}
    facts = {
        "artifact": artifact.name,
        "format": "torch.export (load with torch.export.load(path).module())",
        "input": {
            "shape": ["batch", *shape],
            "dtype": "float32",
            "pixels": "raw, in [0, 1]; the program normalises them itself",
        },
        "method": cfg.method,
        "model": cfg.model,
        "dataset": cfg.dataset,
        "round": run.checkpoint.round,
        "beta": beta,
        "budget": budget,
        "ranks": ranks,
        "merged-to-dense": merged,
        "target": {"size": "size", "measure": "latency"}.get(rule),
        "merge": rule,
        "merge-timings-ms": timings,
        "merge-params": sizes,
        "params": params,
        "factored-params": factored_params,
        "bigger-than-factored": params > factored_params,
        "warnings": notes,
        "macs": count_macs(sub, shape),
        "tier-macs": count_macs(run.model, shape, budget),
        "weight-bytes": payload_nbytes({k: v.numpy() for k, v in sub.state_dict().items()}),
        "artifact-bytes": artifact.stat().st_size,
        "test-examples": len(test),
        "test-accuracy-pct": 100 * accuracy,
        "framework-accuracy-pct": 100 * framework_acc,
        "framework-loss": framework_loss,
        "latency-ms": latency,
        "torch-threads": torch.get_num_threads(),
        "torch-version": torch.__version__,
    }
    (out / f"{name}.json").write_text(json.dumps(facts, indent=1) + "\n")
    for note in notes:
        log(WARNING, "%s", note)
    if abs(accuracy - framework_acc) > 1e-3:
        log(
            WARNING,
            "exported accuracy %.4f differs from the framework's %.4f",
            accuracy,
            framework_acc,
        )
    return facts


def evaluate_run(
    run: LoadedRun, betas: list[float], test: ArrayDataset, repeats: int = 20
) -> list[dict[str, Any]]:
    """One row per budget β: accuracy (%, ``accuracy-pct``), loss, params, MACs, bytes sent,
    latency at batch 1 and 64.

    Params, MACs and bytes are those of the run's metrics (the server's model operations);
    latency is the eager model at that budget on this CPU.
    """
    rows = []
    shapes = array_shapes(run.checkpoint.arrays)
    for beta in betas:
        budget = run.ops.method_budget(beta)
        loss, acc = evaluate(run.model, test.images, test.labels, budget)
        payload = take_prefix(run.checkpoint.arrays, run.ops.shapes(shapes, beta))
        with use_budget(run.model, budget):
            latency = {
                str(b): latency_ms(run.model, _batch(test.images, b), repeats)
                for b in LATENCY_BATCHES
            }
        rows.append(
            {
                "beta": beta,
                "budget": budget,
                "accuracy-pct": 100 * acc,
                "loss": loss,
                "params": count_params(run.model, budget),
                "macs": count_macs(run.model, run.ops.shape, budget),
                "bytes": payload_nbytes(payload),
                "latency-ms-1": latency["1"],
                "latency-ms-64": latency["64"],
                "test-examples": len(test),
            }
        )
    return rows


def tier_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| β | accuracy % | loss | params | MACs | bytes | ms @1 | ms @64 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['beta']:g} | {r['accuracy-pct']:.2f} | {r['loss']:.4f} | {r['params']:,} "
            f"| {r['macs']:,} | {r['bytes']:,} | {r['latency-ms-1']:.3f} "
            f"| {r['latency-ms-64']:.2f} |"
        )
    return "\n".join(lines)


def write_tier_table(rows: list[dict[str, Any]], out: Path, title: str) -> str:
    """Write ``tiers.md``, ``tiers.json`` and ``tiers.csv`` into ``out``; returns the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    table = tier_markdown(rows)
    (out / "tiers.md").write_text(f"# {title}\n\n{table}\n")
    (out / "tiers.json").write_text(json.dumps(rows, indent=1) + "\n")
    with open(out / "tiers.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return table


def _floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from err
    if not values or any(not 0 < b <= 1 for b in values):
        raise argparse.ArgumentTypeError(f"budgets must lie in (0, 1], got {text!r}")
    return values


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=prog or "python -m server.export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("checkpoint", type=Path, help="a run's checkpoint.npz")
    common.add_argument(
        "--config",
        type=Path,
        help="a run config file to check against the checkpoint's own (default: config.json "
        "beside it, if any); the model is always built from the checkpoint's checksummed config",
    )
    common.add_argument("--test-data", type=Path, help="test set: IDX folder (t10k-*) or .npz")
    common.add_argument("--data-dir", help="folder with the run's dataset (default: the run's)")
    common.add_argument("--limit-test", type=int, default=0, help="first N test images (0: all)")
    common.add_argument("--threads", type=int, default=1, help="torch CPU threads (latency)")
    common.add_argument("--out", type=Path, required=True, help="output folder")
    ex = sub.add_parser("export", parents=[common], help="write one tier as an inference artifact")
    which = ex.add_mutually_exclusive_group(required=True)
    which.add_argument("--beta", type=float, help="budget β in (0, 1]")
    which.add_argument("--tier", type=int, help="index into the run's tier-fractions")
    form = ex.add_mutually_exclusive_group()
    form.add_argument(
        "--target",
        choices=TARGETS,
        help="per factored layer, write the smaller form (size) or the one timed faster "
        "(latency); default: size below the full tier, latency for β = 1",
    )
    form.add_argument(
        "--merge",
        choices=MERGE_MODES,
        help="older flag: measure = --target latency; none keeps every layer factored, all "
        "merges every one (a tier bigger than its factored form is reported)",
    )
    ex.add_argument("--repeats", type=int, default=50, help="timed calls per latency")
    ex.add_argument(
        "--name", help="artifact file name without suffix, written inside --out (no paths)"
    )
    ev = sub.add_parser("evaluate", parents=[common], help="per-tier table of a checkpoint")
    ev.add_argument("--betas", type=_floats, help="budgets (default: the run's tier-fractions)")
    ev.add_argument("--repeats", type=int, default=20, help="timed calls per latency")
    args = p.parse_args(argv)
    if args.limit_test < 0 or args.threads < 1 or args.repeats < 1:
        p.error("--limit-test must be ≥ 0, --threads and --repeats ≥ 1")
    return args


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Export a tier or evaluate every tier; 0, or 2 with the reason on stderr.

    ``prog`` names the command in help and errors (the subcommand follows it).
    """
    args = parse_args(argv, prog)
    torch.set_num_threads(args.threads)
    try:
        run = load_run(args.checkpoint, args.config)
        test = load_test_set(run.cfg, args.test_data, args.data_dir, args.limit_test)
        if args.command == "export":
            beta = tier_beta(run.cfg, args.beta, args.tier)
            facts = export_tier(
                run, beta, args.out, test, args.merge, args.repeats, args.name, args.target
            )
            log(INFO, "wrote %s", args.out / facts["artifact"])
            hidden = ("merge-timings-ms", "merge-params")
            print(json.dumps({k: v for k, v in facts.items() if k not in hidden}, indent=1))
        else:
            betas = args.betas or list(run.cfg.tiers)
            rows = evaluate_run(run, betas, test, args.repeats)
            cfg = run.cfg
            title = f"{cfg.name} ({cfg.method} {cfg.model}), round {run.checkpoint.round}"
            print(write_tier_table(rows, args.out, title))
            log(INFO, "wrote %s/tiers.{md,json,csv}", args.out)
    except ValueError as err:  # CheckpointError, ConfigError and bad budgets are ValueErrors
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
