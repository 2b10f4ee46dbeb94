"""The comparison's time axis: each method's measured step time per tier, beside its MACs.

Reads the figures :mod:`simulations.bench` saved (``runs/bench/bench.json``) and maps a method to
the variant its clients run: maestro to the factored variant of its ``conv-factorization`` (svd
or tucker; an old run's tucker-be with break-even initial ranks, :func:`factored_kind`), fjord /
heterofl to the width variant (at the width matched to the svd tier's MACs, the harness's rule),
fedavg-fit to the weakest tier's width at every tier, fedavg-all to the dense model at every
tier. Kept apart from the harness's report so that either can change without the other.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

VARIANT_OF_METHOD = {
    "fjord": "width",
    "heterofl": "width",
    "fedavg-fit": "width",
    "fedavg-all": "dense",
}


def load_bench(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The saved benchmark rows; a clear error when the benchmark has not been run."""
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: run `python -m simulations.bench` first to measure step times"
        )
    return json.loads(path.read_text())


def factored_kind(config: Mapping[str, Any]) -> str:
    """The benchmark kind a maestro run's clients train (:data:`simulations.bench.KIND_OPTIONS`):
    its ``conv-factorization``, with ``-be`` when ``initial-ranks = "breakeven"`` (a removed
    option that old run folders still hold, as ``frobenius-decay`` below; issue 31), and
    `` freeze=<mode>`` with sequential freezing: its step time is the
    benchmark's freezing section's (a rotation cycle's mean, measured at β = 0.25 and 1 only; the
    other tiers show "–", never the unfrozen step's time). A run whose step the benchmark never
    timed gets a kind it has no rows for, so its tiers show "–" rather than another step's time:
    `` +fd`` with Frobenius decay (an extra term every step), `` +gl`` with the group lasso (the
    same) and `` +shrink`` with server-side shrinking (the model's ranks fall during the run)."""
    kind = str(config.get("conv-factorization") or "svd")
    if str(config.get("initial-ranks") or "full") == "breakeven":
        kind += "-be"
    freeze = str(config.get("freeze") or "none")
    if freeze != "none":
        kind += f" freeze={freeze}"
    untimed = {
        "+fd": float(config.get("frobenius-decay") or 0) > 0,
        "+gl": float(config.get("lasso") or 0) > 0,
        "+shrink": int(config.get("shrink-every") or 0) > 0,
    }
    return " ".join([kind, *(name for name, on in untimed.items() if on)])


def variant(method: str, conv_factorization: str = "svd") -> str:
    if method == "maestro":
        return conv_factorization
    if method not in VARIANT_OF_METHOD:
        raise ValueError(
            f"unknown method {method!r}; known: maestro, {', '.join(VARIANT_OF_METHOD)}"
        )
    return VARIANT_OF_METHOD[method]


def step_times(
    bench: Mapping[str, list[dict[str, Any]]],
    model: str,
    method: str,
    conv_factorization: str = "svd",
) -> dict[float, tuple[float, float]]:
    """Tier β -> (measured train step ms, MAC ratio to dense) of ``method`` on ``model``."""
    rows = [r for r in bench["models"] if r["group"] == model]
    dense = next((r for r in rows if r["variant"] == "dense"), None)
    if dense is None:
        raise ValueError(f"no benchmark rows for model {model!r}")
    kind = variant(method, conv_factorization)
    if kind == "dense":
        betas = sorted({r["beta"] for r in rows})
        return {b: (dense["train_ms"], 1.0) for b in betas}
    if " freeze=" in kind:  # timed in the freezing section, on the same dense model
        rows = [r for r in bench.get("freezing", []) if r["group"] == model]
    measured = {
        r["beta"]: (r["train_ms"], r["macs"] / dense["macs"]) for r in rows if r["variant"] == kind
    }
    if method == "fedavg-fit" and measured:
        # Every client trains the weakest tier's width, whatever its own tier.
        weakest = measured[min(measured)]
        return dict.fromkeys(measured, weakest)
    return measured


def time_axis_table(
    bench: Mapping[str, list[dict[str, Any]]],
    model: str,
    methods: Mapping[str, tuple[str, str]],
    passes: Mapping[str, Mapping[float, float]] | None = None,
) -> str:
    """Markdown: one row per tier, per method its measured step ms and MAC ratio.

    ``methods``: column label (a method or a variant of one, e.g. ``maestro+tucker-b2``) ->
    (the method, its conv-factorization). ``passes`` (label -> tier β -> a local step's forward
    MACs over one pass of the tier's model) adds a column per method: what the measured one-pass
    step leaves out (Maestro's nested sub-models).
    """
    per_method = {
        label: step_times(bench, model, method, factorization)
        for label, (method, factorization) in methods.items()
    }
    betas = sorted({b for times in per_method.values() for b in times})
    cols = ["step ms", "MACs ratio", *(["passes/step"] if passes is not None else [])]
    head = "| β | " + " | ".join(f"{m} {c}" for m in methods for c in cols) + " |"
    lines = [head, "|" + "---|" * (1 + len(cols) * len(methods))]
    for beta in betas:
        cells = [f"{beta:g}"]
        for m in methods:
            ms, ratio = per_method[m].get(beta, (None, None))
            cells += ["–", "–"] if ms is None else [f"{ms:.1f}", f"{ratio:.2f}"]
            if passes is not None:
                k = passes.get(m, {}).get(beta)
                cells.append("–" if k is None else f"{k:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
