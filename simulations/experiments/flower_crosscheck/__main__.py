"""The cross-check's command line: ``python -m simulations.experiments.flower_crosscheck``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from maestro_common.ml.models import build_model
from simulations.experiments.flower_crosscheck.fjord import (
    FJORD_P_S,
    FJORD_RESNET_WIDTHS,
    compare_fjord_aggregation,
    compare_fjord_submodels,
    rounding_sweep,
)
from simulations.experiments.flower_crosscheck.heterofl import (
    HETEROFL_RATES,
    compare_heterofl_aggregation,
    compare_heterofl_submodels,
)
from simulations.experiments.flower_crosscheck.loading import load_flower
from simulations.experiments.flower_crosscheck.ours import TIERS, tier_widths

# ----------------------------------------------------------------------------------------- CLI


def batch(kind: str, size: int, seed: int) -> torch.Tensor:
    """The first ``size`` Fashion-MNIST test images, or seeded Gaussian ones."""
    if kind == "random":
        return torch.randn(size, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    from maestro_common.ml.data import load_fashion_mnist

    return load_fashion_mnist("test").images[:size].float()


def run(args: argparse.Namespace) -> dict[str, Any]:
    code = load_flower(Path(args.flower), args.flower_commit)
    x = batch(args.input, args.batch, args.seed)
    report: dict[str, Any] = {
        "flower_commit": code.commit,
        "placeholders": code.stubs,
        "input": f"{args.input} x{args.batch}",
        "fjord": [],
        "fjord_aggregation": [],
    }
    sizes: set[int] = set(FJORD_RESNET_WIDTHS)
    for model in args.models.split(","):
        widths = tier_widths(model, args.tiers)
        report["fjord"].append(compare_fjord_submodels(code, model, widths, x, args.seed))
        report["fjord_aggregation"].append(
            compare_fjord_aggregation(code, model, widths, x, args.seed)
        )
        dense = build_model(model)
        sizes |= {
            m.weight.shape[0] for m in dense.modules() if isinstance(m, nn.Conv2d | nn.Linear)
        }
    grid = [round(k / 100, 2) for k in range(1, 101)]
    report["rounding"] = {
        "sizes": sorted(sizes),
        "grid": "0.01..1.00",
        "differs": rounding_sweep(code, sizes, grid),
        "differs_any_size_1_512": rounding_sweep(code, range(1, 513), grid),
    }
    report["rounding_fjord_p_s"] = rounding_sweep(code, FJORD_RESNET_WIDTHS, FJORD_P_S)
    rates = sorted(set(HETEROFL_RATES) | set(tier_widths("cnn", args.tiers)), reverse=True)
    report["heterofl"] = compare_heterofl_submodels(code, rates, x, args.seed)
    report["heterofl_aggregation"] = compare_heterofl_aggregation(
        code, list(HETEROFL_RATES), args.seed
    )
    return report


def summary(report: Mapping[str, Any]) -> str:
    """The report as short text lines."""
    lines = [f"Flower commit {report['flower_commit']}; input {report['input']}"]
    if report["placeholders"]:
        lines.append(
            "placeholder modules (imported, never called): " + ", ".join(report["placeholders"])
        )
    for block in report["fjord"]:
        for r in block["rows"]:
            lines.append(
                f"fjord {block['model']} p={r['p']:.4f}: dims equal {r['dims_equal']}, "
                f"params theirs {r['params_theirs']} ours {r['params_ours']}, "
                f"logits max|Δ| {r['logits_max_abs_diff']:.3g}"
            )
    for block in report["fjord_aggregation"]:
        lines.append(f"fjord aggregation {block['model']}: max|Δ| {block['max_abs_diff']:.3g}")
    diffs = report["rounding"]["differs"]
    lines.append(
        f"rounding sweep, sizes {report['rounding']['sizes']}, p {report['rounding']['grid']}: "
        f"{len(diffs)} (size, p) pairs differ"
        + (
            ""
            if not diffs
            else ": "
            + ", ".join(f"{d['size']}@{d['p']} {d['theirs']} vs {d['ours']}" for d in diffs)
        )
    )
    anywhere = report["rounding"]["differs_any_size_1_512"]
    lines.append(
        f"rounding sweep, every size 1..512: {len(anywhere)} pairs differ, e.g. "
        + ", ".join(f"{d['size']}@{d['p']} {d['theirs']} vs {d['ours']}" for d in anywhere[:6])
    )
    fjord_own = len(report["rounding_fjord_p_s"])
    lines.append(f"rounding at FjORD's own p_s on its ResNet widths: {fjord_own} differ")
    for r in report["heterofl"]["rows"]:
        lines.append(
            f"heterofl conv rate={r['rate']:.4f}: shapes equal {r['shapes_equal']}, "
            f"params theirs {r['params_theirs']} ours {r['params_ours']}, logits max|Δ| "
            f"eval {r['logits_max_abs_diff_eval']:.3g} train {r['logits_max_abs_diff_train']:.3g}"
        )
    agg = report["heterofl_aggregation"]
    lines.append(
        f"heterofl aggregation, rates {agg['client_rates']}: max|Δ| equal weights "
        f"{agg['max_abs_diff_equal_weights']:.3g}, num-examples weights "
        f"{agg['max_abs_diff_num_examples_weights']:.3g}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m simulations.experiments.flower_crosscheck",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--flower", required=True, help="a checkout of Flower's repository")
    parser.add_argument("--flower-commit", default=None, help="its commit, if not a git checkout")
    parser.add_argument("--models", default="lenet5,cnn", help="this project's models (FjORD)")
    parser.add_argument("--tiers", default=TIERS, help="tier labels β (widths MAC-matched)")
    parser.add_argument("--input", choices=("fashion-mnist", "random"), default="fashion-mnist")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the full report here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    report = run(args)
    print(summary(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
