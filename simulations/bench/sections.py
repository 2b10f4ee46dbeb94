"""The benchmark's sections, each a list of measured :class:`~simulations.bench.timing.Row`:
whole models per tier, single layers, one Maestro step against a dense one (per training
objective), sequential freezing and the branched Tucker core."""

from __future__ import annotations

import copy
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from maestro_common.lowrank.accounting import count_macs, step_macs
from maestro_common.lowrank.branched import BranchedTuckerConv2d
from maestro_common.lowrank.decompose import decompose
from maestro_common.lowrank.freezing import FREEZE_MODES, FreezeSchedule, freeze
from maestro_common.lowrank.layers import budget_rank, low_rank_layers
from maestro_common.lowrank.merging import merge_faster
from maestro_common.lowrank.samplers import NestedSampler, make_sampler
from maestro_common.lowrank.training import nested_loss
from maestro_common.lowrank.tucker import TuckerConv2d
from maestro_common.lowrank.width_match import width_for_macs
from maestro_common.ml.prefix import budget_dim, quantize_rank
from maestro_common.width.sliceable import make_width_sliceable, use_width
from simulations.bench.timing import Row, Timer, infer_fn, train_step_fn
from simulations.bench.variants import (
    WIDTH_MODELS,
    dense_model,
    factored_tier,
    geometry,
    model_kinds,
    width_variant,
)

SECTIONS = (
    "layers",
    "models",
    "overhead",
    "freezing",
    "branched",
)  # width slicing refuses norm layers and attention


def measure_model(name: str, tiers: Sequence[float], timer: Timer, batch: int) -> list[Row]:
    """Dense, factored (every kind of MODEL_KINDS) and (where supported) width rows of one model
    at every tier."""
    dense, geo = dense_model(name), geometry(name)
    shape = geo.shape
    dense_macs = count_macs(dense, shape)
    rows = [
        Row(
            name,
            "dense",
            1.0,
            dense_macs,
            timer(train_step_fn(copy.deepcopy(dense), batch, geo=geo)),
            timer(infer_fn(dense, 1, geo=geo)),
            timer(infer_fn(dense, 64, geo=geo)),
        )
    ]
    twin = copy.deepcopy(dense)
    for b in (1, 64):  # the noise floor: the dense model against a copy of itself, interleaved
        first, second = timer.paired(b).interleaved(
            [infer_fn(dense, b, geo=geo), infer_fn(twin, b, geo=geo)]
        )
        rows[0].extra[f"self-ratio-{b}"] = second / first
    kind_macs: dict[tuple[str, float], int] = {}
    kinds = model_kinds(name)
    for kind in kinds:
        for beta in tiers:
            model = factored_tier(dense, kind, beta)
            macs = count_macs(model, shape)
            kind_macs[kind, beta] = macs
            row = Row(name, kind, beta, macs, timer(train_step_fn(model, batch, geo=geo)))
            row.infer1_ms = timer(infer_fn(model, 1, geo=geo))
            row.infer64_ms = timer(infer_fn(model, 64, geo=geo))
            for b in (1, 64):
                merged = copy.deepcopy(model).eval()
                decisions = merge_faster(merged, geo.inputs(b))
                # Timed against the dense model in one interleaved run: the target compares them.
                merged_ms, dense_ms = timer.paired(b).interleaved(
                    [infer_fn(merged, b, geo=geo), infer_fn(dense, b, geo=geo)]
                )
                setattr(row, f"merged{b}_ms", merged_ms)
                row.extra[f"dense{b}-paired-ms"] = dense_ms
                row.extra[f"merged-layers-{b}"] = sum(decisions.values())
            row.extra["layers"] = len(low_rank_layers(model))
            rows.append(row)
    if name in WIDTH_MODELS:
        wide = make_width_sliceable(copy.deepcopy(dense), shape)
        for kind in kinds:
            for beta in tiers:
                if kind != "svd" and kind_macs[kind, beta] >= dense_macs:
                    continue  # no width tier has as many MACs: the comparison is with dense
                w = width_for_macs(wide, shape, kind_macs[kind, beta])
                ctx = lambda w=w: use_width(wide, w)  # noqa: E731 (a fresh context per call)
                macs = count_macs(wide, shape, w)
                row = Row(name, width_variant(kind), beta, macs, note=f"width {w:g}")
                row.train_ms = timer(train_step_fn(wide, batch, ctx, geo=geo))
                row.infer1_ms, row.infer64_ms = (
                    timer(infer_fn(wide, 1, ctx, geo)),
                    timer(infer_fn(wide, 64, ctx, geo)),
                )
                rows.append(row)
    return rows


# ----- per layer type -----------------------------------------------------------------------------
LAYERS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "linear 1024→1024": (lambda: nn.Linear(1024, 1024), (1024,)),
    "conv3x3 128→128 @16x16": (lambda: nn.Conv2d(128, 128, 3, padding=1), (128, 16, 16)),
    "conv5x5 32→64 @14x14 (CNN conv2)": (lambda: nn.Conv2d(32, 64, 5, padding=2), (32, 14, 14)),
}


def _narrow(layer: nn.Module, beta: float) -> nn.Module:
    """The width tier of a single layer: input and output channels cut to ⌈β·C⌉."""
    cut = lambda c: max(1, -(-round(beta * c * 1e6) // 1_000_000))  # noqa: E731 (⌈β·c⌉)
    if isinstance(layer, nn.Linear):
        return nn.Linear(cut(layer.in_features), cut(layer.out_features))
    return nn.Conv2d(
        cut(layer.in_channels),
        cut(layer.out_channels),
        layer.kernel_size,
        padding=layer.padding,
    )


def _layer_step(layer: nn.Module, shape: tuple[int, ...], batch: int) -> Callable[[], None]:
    x = torch.randn(batch, *shape)
    opt = torch.optim.SGD(layer.parameters(), lr=1e-3)

    def step() -> None:
        out = layer(x)
        opt.zero_grad(set_to_none=True)
        out.square().mean().backward()
        opt.step()

    return step


def measure_layers(tiers: Sequence[float], timer: Timer, batch: int) -> list[Row]:
    rows = []
    for name, (make, shape) in LAYERS.items():
        torch.manual_seed(0)
        dense = make()
        variants: list[tuple[str, float, nn.Module, tuple[int, ...]]] = [
            ("dense", 1.0, dense, shape)
        ]
        kinds = ("svd", "tucker") if isinstance(dense, nn.Conv2d) else ("svd",)
        for kind in kinds:
            for beta in tiers:
                model = decompose(
                    copy.deepcopy(nn.Sequential(dense)), skip=(), conv_factorization=kind
                )
                for m in low_rank_layers(model).values():
                    m.truncate(budget_rank(m.rank, beta))
                variants.append((kind, beta, model, shape))
        for beta in tiers:
            narrow = _narrow(dense, beta)
            variants.append(("width", beta, narrow, (narrow.weight.shape[1], *shape[1:])))
        for kind, beta, model, in_shape in variants:
            macs = count_macs(model, in_shape)
            x1, x64 = torch.randn(1, *in_shape), torch.randn(64, *in_shape)
            row = Row(name, kind, beta, macs, timer(_layer_step(model, in_shape, batch)))
            with torch.no_grad():
                row.infer1_ms = timer(lambda m=model, x=x1: m(x))
                row.infer64_ms = timer(lambda m=model, x=x64: m(x))
            rows.append(row)
    return rows


# ----- Maestro step against dense step -----------------------------------------------------------
Context = Callable[[nn.Module], AbstractContextManager[Any]]
Loss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def _per_layer(ranks: dict[str, int]) -> tuple[Context, Loss]:
    """The paper's ordered dropout: one layer cut at a sampled rank per step, one pass."""
    sampler = make_sampler("maestro", ranks, seed=0)
    return sampler.step, lambda m, x, y: F.cross_entropy(m(x), y)


def _nested(
    rule: str, sub_batch_share: float = 1.0
) -> Callable[[dict[str, int]], tuple[Context, Loss]]:
    """The nested objective (the maestro method's default): the prefix on the labels, then the
    sub-models ``rule`` picks from the tier grid, all layers cut together, as a client trains;
    the smaller ones on ``sub_batch_share`` of the batch."""

    def make(ranks: dict[str, int]) -> tuple[Context, Loss]:
        sampler = NestedSampler(ranks, beta=1.0, rule=rule, seed=0, sub_batch_share=sub_batch_share)
        passes: Counter[float] = Counter()

        def loss(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return nested_loss(m, x, y, sampler, passes)[1]

        loss.sampler = sampler  # type: ignore[attr-defined]  # what the step's MACs count
        return lambda m: nullcontext(), loss

    return make


# The maestro method's nested steps at its default (split) and as its paper trains (sandwich).
SPLIT = "nested: split (the sandwich's 3 passes on thirds of the batch; the default)"
SANDWICH = "nested: sandwich (3 passes; the paper's)"
# The sub-models rule each of the two runs (a test checks that the row marked the default runs
# the run config's default rule).
RULE_OF_ROW = {SPLIT: "split", SANDWICH: "sandwich"}
# Training objectives of the maestro method, by name: each gives the step's context (the
# sampler's) and its loss, running as many forward passes as it needs. New objectives are added
# here to be benchmarked.
OBJECTIVES: dict[str, Callable[[dict[str, int]], tuple[Context, Loss]]] = {
    "od (one sampled pass)": _per_layer,
    "nested: prefix only (1 pass)": _nested("none"),
    SANDWICH: _nested("sandwich"),
    "nested: alternate (1 pass; prefix every other step)": _nested("alternate"),
    SPLIT: _nested("split"),
    "nested: sandwich on a quarter batch (1 + 2 quarter passes)": _nested("sandwich", 0.25),
    "nested: random on half the batch (1 + 1 half pass)": _nested("random", 0.5),
}
# Objectives whose steps follow a schedule: each timed call runs this many steps (one cycle), so
# the median is of the cycle's mean step, not of whichever step the call happened to hit.
CYCLE: dict[str, int] = {
    "nested: alternate (1 pass; prefix every other step)": 2,
    # its larger parts rotate between the passes over three steps
    SPLIT: 3,
}
# Nested objectives meant to cost about one pass: their target is ≤ 1.3× a dense step at β = 1.
ONE_PASS_NESTED = (
    "nested: alternate (1 pass; prefix every other step)",
    SPLIT,
    "nested: sandwich on a quarter batch (1 + 2 quarter passes)",
    "nested: random on half the batch (1 + 1 half pass)",
)


def measure_overhead(name: str, timer: Timer, batch: int, objectives: Sequence[str]) -> list[Row]:
    """Dense step; factored step (β=1, no sampler); with the sampler; sampler alone; objectives.

    The steps are timed interleaved (one call of each in turn), so a change of load or clock
    speed during the section hits the dense step and every objective alike: their ratios, the
    figures this section is read for, share one machine state."""
    dense, geo = dense_model(name), geometry(name)
    model = factored_tier(dense, "svd", 1.0)
    ranks = {n: m.rank for n, m in low_rank_layers(model).items()}
    # (row, the call to time, the steps one call runs)
    timed: list[tuple[Row, Callable[[], object], int]] = [
        (
            Row(name, "dense step", 1.0, count_macs(dense, geo.shape)),
            train_step_fn(copy.deepcopy(dense), batch, geo=geo),
            1,
        ),
        (
            Row(name, "factored step, no sampler", 1.0, count_macs(model, geo.shape)),
            train_step_fn(copy.deepcopy(model), batch, geo=geo),
            1,
        ),
    ]
    for obj in objectives:
        context, loss = OBJECTIVES[obj](ranks)
        m = copy.deepcopy(model)
        # The MACs column counts every forward pass of the step (Method.step_macs's convention).
        sampler = getattr(loss, "sampler", None)
        row = Row(name, f"maestro step: {obj}", 1.0, round(step_macs(m, geo.shape, sampler)))
        step = train_step_fn(m, batch, lambda c=context, m=m: c(m), loss, geo)
        cycle = CYCLE.get(obj, 1)
        timed.append((row, lambda step=step, cycle=cycle: [step() for _ in range(cycle)], cycle))
    times = timer.interleaved([fn for _, fn, _ in timed])
    for (row, _, cycle), ms in zip(timed, times, strict=True):
        row.train_ms = ms / cycle
    rows = [row for row, _, _ in timed]
    sampler = make_sampler("maestro", ranks, seed=0)

    def sample_only() -> None:
        for _ in range(100):
            with sampler.step(model):
                pass

    alone = Row(name, "sampler + use_ranks alone", 1.0, 0)
    alone.train_ms = timer(sample_only) / 100
    rows.append(alone)
    return rows


# ----- sequential freezing ---------------------------------------------------------------------
def measure_freezing(
    name: str, tiers: Sequence[float], timer: Timer, batch: int, kind: str = "svd"
) -> list[Row]:
    """Train step time with sequential freezing, averaged over one rotation cycle. Every period of
    every mode is timed interleaved with the others, so the ratios to no freezing share one load."""
    dense, geo = dense_model(name), geometry(name)
    rows = []
    for beta in tiers:
        base = factored_tier(dense, kind, beta)
        steps: list[tuple[str, Callable[[], None]]] = []
        for mode in FREEZE_MODES:
            schedule = FreezeSchedule(mode, groups=2, seed=0)
            for period in range(schedule.cycle(base)):
                model = copy.deepcopy(base)
                ctx = lambda m=model, p=period, s=schedule: freeze(m, s, p)  # noqa: E731
                steps.append((mode, train_step_fn(model, batch, ctx, geo=geo)))
        times = timer.interleaved([fn for _, fn in steps])
        for mode in FREEZE_MODES:
            row = Row(name, f"{kind} freeze={mode}", beta, count_macs(base, geo.shape))
            row.train_ms = statistics.mean(
                t for (m, _), t in zip(steps, times, strict=True) if m == mode
            )
            rows.append(row)
    return rows


# ----- branched Tucker: the core as a grouped convolution ---------------------------------------
BRANCHES = (1, 2, 4)


def tucker_layer(dense: nn.Conv2d, width: int, branches: int) -> nn.Module:
    """The factored layer that runs ``dense`` as Tucker-2 with ``width`` inner channels: plain
    (:class:`TuckerConv2d`, ``branches=1``) or branched (:class:`BranchedTuckerConv2d`, ``width /
    branches`` channels a branch), as a client holds it (truncated to that rank)."""
    if width % branches:
        raise ValueError(f"width {width} is not a multiple of {branches} branches")
    if branches == 1:
        return TuckerConv2d.from_dense(dense, rank=width)
    return BranchedTuckerConv2d.from_dense(dense, rank=width // branches, branches=branches)


def _no_grad_call(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            model(x)

    return run


def measure_branched(tiers: Sequence[float], timer: Timer, batch: int) -> list[Row]:
    """Every kxk conv of the layer section as Tucker-2 with each tier's inner width (its rank,
    rounded down to a multiple of the most branches), plain and with its core in 2 and 4
    branches (:func:`tucker_layer`), timed interleaved."""
    rows = []
    for name, (make, shape) in LAYERS.items():
        torch.manual_seed(0)
        dense = make()
        if not isinstance(dense, nn.Conv2d) or dense.kernel_size == (1, 1):
            continue
        full = max(dense.in_channels, dense.out_channels)
        x64 = torch.randn(64, *shape)
        for beta in tiers:
            k = quantize_rank(budget_dim(full, beta), max(BRANCHES))
            if k % max(BRANCHES):
                continue
            models = [tucker_layer(dense, k, b) for b in BRANCHES]
            train = timer.interleaved([_layer_step(m, shape, batch) for m in models])
            infer = timer.interleaved([_no_grad_call(m.eval(), x64) for m in models])
            for b, m, t, i in zip(BRANCHES, models, train, infer, strict=True):
                variant = "tucker" if b == 1 else f"branched ×{b}"
                row = Row(name, variant, beta, count_macs(m, shape), t, None, i)
                row.note = f"rank {k}"
                rows.append(row)
    return rows
