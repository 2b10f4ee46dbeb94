"""Benchmark suite: measured step time and inference latency per tier, dense vs factored vs width.

Writes ``docs/performance.md`` (tables) and ``runs/bench/bench.json`` (every figure)::

    OMP_NUM_THREADS=1 python -m simulations.bench            # full run
    OMP_NUM_THREADS=1 python -m simulations.bench --quick    # a short sanity run

Every figure is the median of ``--repeats`` timed calls after ``--warmup`` untimed ones, on one
torch thread, with glibc malloc tuned as the harness does. A tier runs as the project runs it: a
factored (svd or tucker) client holds its rank prefix only (the layers truncated to the tier's
ranks, as :func:`maestro_common.app.codec.load_arrays` leaves them); a width client (FjORD/HeteroFL)
holds the whole model and slices it at its width on every call, the width being the one whose MACs
match the svd tier's (the harness's matched-MACs rule,
:func:`maestro_common.lowrank.width_match.width_for_macs`). A hybrid client (``svd-hybrid``: the
first conv nested by width, LeNet-5 and the CNN only) holds its tier cut out at the largest
fraction within the svd tier's MACs, conv1 at its channels, as the federation runs it.

Models take their dataset's input (``MODELS``, :func:`geometry`): Fashion-MNIST images, or for
``char-transformer`` (sized as ``simulations/conf/shakespeare.toml``) random token windows of 80
ids with their next tokens as targets; the sections that iterate over ``--models`` (models,
overhead) run both; quantization, freezing, layers and branched stay on the image models.

Sections: per layer type; whole models (train step at ``--batch``, inference at batch 1 and 64,
with factored tiers also merged by measurement); one Maestro training step against one dense step
(factorization, sampling and each training objective separated); rank quantization; sequential
freezing; the branched Tucker core (a grouped conv) against the plain one.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from maestro_common.app.malloc import tune_malloc
from maestro_common.lowrank.accounting import count_macs, step_macs
from maestro_common.lowrank.branched import BranchedTuckerConv2d
from maestro_common.lowrank.decompose import decompose
from maestro_common.lowrank.freezing import FREEZE_MODES, FreezeSchedule, freeze, without_grad
from maestro_common.lowrank.hybrid import make_hybrid
from maestro_common.lowrank.inference import tier_model
from maestro_common.lowrank.layers import budget_rank, low_rank_layers, set_rank_quantum
from maestro_common.lowrank.merging import clear_cache, merge_faster, time_calls
from maestro_common.lowrank.samplers import NestedSampler, make_sampler
from maestro_common.lowrank.training import TrainSettings, nested_loss
from maestro_common.lowrank.tucker import TuckerConv2d
from maestro_common.lowrank.width_match import width_for_macs
from maestro_common.ml.data.arrays import DATASET_INFO
from maestro_common.ml.models import build_model
from maestro_common.width.sliceable import make_width_sliceable, use_width
from simulations.provenance import cpu_model

TIERS = (0.2, 0.4, 0.6, 0.8, 1.0)
SHAPE = (1, 28, 28)  # Fashion-MNIST: the image models' input
# name -> model builder options ("arch": the builder's model name, default the key; "dataset":
# the DATASET_INFO entry whose input and classes it takes, default Fashion-MNIST). ResNet-18 at
# a quarter of its channels (16..128) keeps every section within minutes on a 2-core CPU; at its
# full width (about 1.4 s a train step on one thread) it is measured in the models section only.
# char-transformer is sized as simulations/conf/shakespeare.toml's model-options (a test checks).
MODELS: dict[str, dict[str, Any]] = {
    "lenet5": {},
    "cnn": {},
    "resnet18": {"width": 0.25},
    "transformer": {},
    "resnet18-full": {"arch": "resnet18", "width": 1.0},
    "char-transformer": {
        "dataset": "shakespeare",
        "dim": 64,
        "depth": 3,
        "heads": 4,
        "mlp_ratio": 4,
    },
}
MODELS_SECTION_ONLY = ("resnet18-full",)
# The factorizations whole models are timed in (the branched Tucker's 4-branch form is timed per
# layer, in the branched section), each as `decompose` options. tucker-be is the Tucker form with
# break-even initial ranks (`initial-ranks = "breakeven"`): no layer's factors bigger than it.
KIND_OPTIONS: dict[str, dict[str, str]] = {
    "svd": {"conv_factorization": "svd"},
    "tucker": {"conv_factorization": "tucker"},
    "tucker-b2": {"conv_factorization": "tucker-b2"},
    "tucker-be": {"conv_factorization": "tucker", "initial_ranks": "breakeven"},
}
# Hybrid kinds (`hybrid-width = true`, maestro_common.lowrank.hybrid): the base kind with its first
# conv nested by width, a tier labelled β at the largest fraction within the base kind's MACs at
# β (as the federation's tiers run). Only models whose first conv feeds a factored conv.
HYBRID_KINDS: dict[str, str] = {"svd-hybrid": "svd"}
HYBRID_MODELS = ("lenet5", "cnn")
MODEL_KINDS = (*KIND_OPTIONS, *HYBRID_KINDS)
# Kinds that differ from svd only in how convolutions are factored.
CONV_ONLY_KINDS = ("tucker", "tucker-b2")
WIDTH_MODELS = ("lenet5", "cnn", "char-transformer")
SECTIONS = (
    "layers",
    "models",
    "overhead",
    "quantization",
    "freezing",
    "branched",
)  # width slicing refuses norm layers and attention


@dataclass(frozen=True)
class Geometry:
    """What a bench model reads and predicts: images (B, *shape) of ``classes`` labels, or int64
    token ids (B, T) over a vocabulary of ``classes`` with next-token targets (B, T)."""

    shape: tuple[int, ...]
    classes: int
    tokens: bool = False

    def inputs(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random input batch: normal images, or uniform token ids."""
        if self.tokens:
            return torch.randint(0, self.classes, (batch, *self.shape), generator=generator)
        return torch.randn(batch, *self.shape, generator=generator)

    def batch(
        self, batch: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A random training batch: images and uniform labels, or a random token sequence one
        longer than the window, split into the window and its next tokens."""
        if self.tokens:
            (t,) = self.shape
            seq = torch.randint(0, self.classes, (batch, t + 1), generator=generator)
            return seq[:, :-1].contiguous(), seq[:, 1:].contiguous()
        x = self.inputs(batch, generator)
        return x, torch.randint(0, self.classes, (batch,), generator=generator)


IMAGE = Geometry(SHAPE, 10)


def geometry(name: str) -> Geometry:
    """The input and classes of bench model ``name`` (its dataset's, see MODELS)."""
    info = DATASET_INFO[MODELS[name].get("dataset", "fashion-mnist")]
    return Geometry(info.input_shape, info.num_classes, info.is_text)


# ----- timing -------------------------------------------------------------------------------------
CLOCKS: dict[str, Callable[[], float]] = {
    # CPU time of the calling thread: with one torch thread all compute runs on it, so this is
    # the step's own cost, barely moved by other processes sharing the cores (on an idle machine
    # it equals wall time).
    "cpu": time.thread_time,
    "wall": time.perf_counter,
}


@dataclass
class Timer:
    """Median of ``repeats`` timed calls after ``warmup`` untimed ones, in ms."""

    warmup: int = 2
    repeats: int = 5
    clock: str = "cpu"  # a key of CLOCKS

    def __call__(self, fn: Callable[[], Any]) -> float:
        return self.interleaved([fn])[0]

    def interleaved(self, fns: Sequence[Callable[[], Any]]) -> list[float]:
        """The median ms of each of ``fns``, their calls interleaved round-robin, so that a load
        change on the machine hits all of them alike (their ratios are the fairest we take)."""
        seconds = time_calls(
            fns, torch.device("cpu"), self.repeats, self.warmup, clock=CLOCKS[self.clock]
        )
        return [s * 1e3 for s in seconds]

    def paired(self, batch: int) -> Timer:
        """The timer for a comparison at inference ``batch``: 5× the repeats at batch 1, whose
        sub-millisecond calls are the noisiest."""
        return replace(self, repeats=self.repeats * (5 if batch == 1 else 1))


def train_step_fn(
    model: nn.Module,
    batch: int,
    context: Callable[[], AbstractContextManager[Any]] = nullcontext,
    objective: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    geo: Geometry = IMAGE,
) -> Callable[[], None]:
    """One SGD step (forward, backward, update) on a fixed random batch of ``geo``'s inputs,
    inside ``context()``."""
    x, y = geo.batch(batch, torch.Generator().manual_seed(0))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = objective or (lambda m, xb, yb: F.cross_entropy(m(xb), yb))
    model.train()

    def step() -> None:
        with context():
            loss = loss_fn(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def infer_fn(
    model: nn.Module,
    batch: int,
    context: Callable[[], AbstractContextManager[Any]] = nullcontext,
    geo: Geometry = IMAGE,
) -> Callable[[], None]:
    x = geo.inputs(batch, torch.Generator().manual_seed(1))
    model.eval()

    def run() -> None:
        with torch.no_grad(), context():
            model(x)

    return run


# ----- model variants -----------------------------------------------------------------------------
def dense_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    options = dict(MODELS[name])
    arch, geo = options.pop("arch", name), geometry(name)
    options.pop("dataset", None)
    if geo.tokens:
        return build_model(arch, geo.classes, context=geo.shape[0], **options)
    return build_model(arch, geo.classes, geo.shape[0], geo.shape[1], **options)


# (id of the dense model, kind) -> (the dense model, kept alive so its id is not reused; its
# factored form): the SVDs/HOSVDs of a model are computed once, not once per tier.
_FACTORED: dict[tuple[int, str], tuple[nn.Module, nn.Module]] = {}


def factored_tier(dense: nn.Module, kind: str, beta: float, quantum: int = 1) -> nn.Module:
    """The model a factored client of budget β holds: every factor cut to the tier's ranks."""
    if kind in HYBRID_KINDS:
        return hybrid_tier(dense, kind, beta)
    key = (id(dense), kind)
    if key not in _FACTORED:
        _FACTORED[key] = (dense, decompose(copy.deepcopy(dense), **KIND_OPTIONS[kind]))
    model = copy.deepcopy(_FACTORED[key][1])
    set_rank_quantum(model, quantum)
    for layer in low_rank_layers(model).values():
        k = budget_rank(layer.rank, beta, quantum)
        if k < layer.rank:
            layer.truncate(k)
    return model


def hybrid_tier(dense: nn.Module, kind: str, beta: float) -> nn.Module:
    """The model a hybrid client of tier label β holds: the hybrid cut at the largest fraction
    whose MACs fit the base kind's tier at β (conv1 at its channels, conv2 reading them)."""
    key = (id(dense), kind)
    if key not in _FACTORED:
        base = decompose(copy.deepcopy(dense), **KIND_OPTIONS[HYBRID_KINDS[kind]])
        _FACTORED[key] = (dense, make_hybrid(base, SHAPE))
    hybrid = _FACTORED[key][1]
    target = count_macs(factored_tier(dense, HYBRID_KINDS[kind], beta), SHAPE)
    return tier_model(hybrid, width_for_macs(hybrid, SHAPE, target)).train()


@dataclass
class Row:
    """One measured configuration; times in ms, ratios against the dense row of its group."""

    group: str  # model or layer name
    variant: str  # dense, svd, tucker, width, ...
    beta: float
    macs: int
    train_ms: float | None = None
    infer1_ms: float | None = None
    infer64_ms: float | None = None
    merged1_ms: float | None = None
    merged64_ms: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


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


def model_kinds(name: str) -> list[str]:
    """The factored kinds of MODEL_KINDS timed for model ``name``: hybrids for HYBRID_MODELS
    only; a token model has no convolution, so of the kinds that differ only in how convs are
    factored it keeps svd (tucker, tucker-b2 would time the same model again)."""
    kinds = [k for k in MODEL_KINDS if k not in HYBRID_KINDS or name in HYBRID_MODELS]
    if geometry(name).tokens:
        kinds = [k for k in kinds if k not in CONV_ONLY_KINDS]
    return kinds


def width_variant(kind: str) -> str:
    """The bench variant of the width tier MAC-matched to a factored ``kind``'s tier: ``width``
    for svd (the harness's matched-MACs rule, which the FjORD/HeteroFL baselines train), else
    ``width@<kind>``."""
    return "width" if kind == "svd" else f"width@{kind}"


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
    rule: str, distill: bool, sub_batch_share: float = 1.0
) -> Callable[[dict[str, int]], tuple[Context, Loss]]:
    """The nested objective (the maestro method's default): the prefix on the labels, then the
    sub-models ``rule`` picks from the tier grid, all layers cut together, as a client trains;
    the smaller ones on ``sub_batch_share`` of the batch."""

    def make(ranks: dict[str, int]) -> tuple[Context, Loss]:
        sampler = NestedSampler(ranks, beta=1.0, rule=rule, seed=0, sub_batch_share=sub_batch_share)
        settings = TrainSettings(distill=distill)
        passes: Counter[float] = Counter()

        def loss(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return nested_loss(m, x, y, sampler, settings, passes)[1]

        loss.sampler = sampler  # type: ignore[attr-defined]  # what the step's MACs count
        return lambda m: nullcontext(), loss

    return make


# Training objectives of the maestro method, by name: each gives the step's context (the
# sampler's) and its loss, running as many forward passes as it needs. New objectives are added
# here to be benchmarked.
OBJECTIVES: dict[str, Callable[[dict[str, int]], tuple[Context, Loss]]] = {
    "od (one sampled pass)": _per_layer,
    "nested: prefix only (1 pass)": _nested("none", False),
    "nested: sandwich (3 passes; the default)": _nested("sandwich", False),
    "nested: sandwich distilled (3 passes)": _nested("sandwich", True),
    "nested: alternate (1 pass; prefix every other step)": _nested("alternate", False),
    "nested: sandwich on a quarter batch (1 + 2 quarter passes)": _nested("sandwich", False, 0.25),
    "nested: random on half the batch (1 + 1 half pass)": _nested("random", False, 0.5),
}
# Objectives whose steps follow a schedule: each timed call runs this many steps (one cycle), so
# the median is of the cycle's mean step, not of whichever step the call happened to hit.
CYCLE: dict[str, int] = {"nested: alternate (1 pass; prefix every other step)": 2}
# Nested objectives meant to cost about one pass: their target is ≤ 1.3× a dense step at β = 1.
ONE_PASS_NESTED = (
    "nested: alternate (1 pass; prefix every other step)",
    "nested: sandwich on a quarter batch (1 + 2 quarter passes)",
    "nested: random on half the batch (1 + 1 half pass)",
)


def measure_overhead(name: str, timer: Timer, batch: int, objectives: Sequence[str]) -> list[Row]:
    """Dense step; factored step (β=1, no sampler); with the sampler; sampler alone; objectives."""
    dense, geo = dense_model(name), geometry(name)
    rows = [Row(name, "dense step", 1.0, count_macs(dense, geo.shape))]
    rows[0].train_ms = timer(train_step_fn(copy.deepcopy(dense), batch, geo=geo))
    model = factored_tier(dense, "svd", 1.0)
    ranks = {n: m.rank for n, m in low_rank_layers(model).items()}
    macs = count_macs(model, geo.shape)
    fixed = Row(name, "factored step, no sampler", 1.0, macs)
    fixed.train_ms = timer(train_step_fn(copy.deepcopy(model), batch, geo=geo))
    rows.append(fixed)
    for obj in objectives:
        context, loss = OBJECTIVES[obj](ranks)
        m = copy.deepcopy(model)
        # The MACs column counts every forward pass of the step (Method.step_macs's convention).
        sampler = getattr(loss, "sampler", None)
        row = Row(name, f"maestro step: {obj}", 1.0, round(step_macs(m, geo.shape, sampler)))
        step = train_step_fn(m, batch, lambda c=context, m=m: c(m), loss, geo)
        cycle = CYCLE.get(obj, 1)
        row.train_ms = timer(lambda step=step, cycle=cycle: [step() for _ in range(cycle)]) / cycle
        rows.append(row)
    sampler = make_sampler("maestro", ranks, seed=0)

    def sample_only() -> None:
        for _ in range(100):
            with sampler.step(model):
                pass

    alone = Row(name, "sampler + use_ranks alone", 1.0, 0)
    alone.train_ms = timer(sample_only) / 100
    rows.append(alone)
    return rows


# ----- rank quantization and sequential freezing ------------------------------------------------
def measure_quantization(
    name: str, tiers: Sequence[float], quanta: Sequence[int], timer: Timer, batch: int
) -> list[Row]:
    dense, geo = dense_model(name), geometry(name)
    rows = []
    for kind in ("svd", "tucker"):
        for beta in tiers:
            for q in quanta:
                model = factored_tier(dense, kind, beta, q)
                row = Row(name, f"{kind} q={q}", beta, count_macs(model, geo.shape))
                row.train_ms = timer(train_step_fn(model, batch, geo=geo))
                row.infer64_ms = timer(infer_fn(model, 64, geo=geo))
                rows.append(row)
    return rows


BOUND = "every-factor-frozen"  # the freezing section's reference row


def _factor_params(layer: nn.Module) -> list[nn.Parameter]:
    return [getattr(layer, name) for name in layer.factor_axes()]


def measure_freezing(
    name: str, tiers: Sequence[float], timer: Timer, batch: int, kind: str = "svd"
) -> list[Row]:
    """Train step time with sequential freezing, averaged over one rotation cycle. Every period of
    every mode is timed interleaved with the others, so the ratios to no freezing share one load.

    Beside the modes, a reference row: every factor of every factored layer frozen at once (the
    dense layers training), the most that the ``factor`` and ``layer`` modes can ever skip."""
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
        model = copy.deepcopy(base)
        every = [p for layer in low_rank_layers(model).values() for p in _factor_params(layer)]
        bound = lambda ps=every: without_grad(ps)  # noqa: E731
        steps.append((BOUND, train_step_fn(model, batch, bound, geo=geo)))
        times = timer.interleaved([fn for _, fn in steps])
        for mode in (*FREEZE_MODES, BOUND):
            variant = f"{kind} {BOUND}" if mode == BOUND else f"{kind} freeze={mode}"
            row = Row(name, variant, beta, count_macs(base, geo.shape))
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
            k = budget_rank(full, beta, max(BRANCHES))
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


def branched_summary(rows: list[Row]) -> list[str]:
    """Per branched row: its time against plain Tucker at the same rank, beside its MACs."""
    out = []
    for r in rows:
        base = _find(rows, r.group, "tucker", r.beta)
        if r.variant == "tucker" or base is None:
            continue
        train, infer = r.train_ms / base.train_ms, r.infer64_ms / base.infer64_ms
        verdict = "faster" if train < 1 and infer < 1 else "not faster"
        out.append(
            f"- {r.group} β={r.beta:g} ({r.note}) {r.variant}: MACs {r.macs / base.macs:.2f}, "
            f"train {train:.2f}, inference b64 {infer:.2f} of plain Tucker: {verdict}"
        )
    return out


# ----- report -------------------------------------------------------------------------------------
def _fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "–" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def tier_table(rows: list[Row], merged: bool = True) -> str:
    """Rows of one group with time ratios against its dense row (ratio < 1: faster)."""
    dense = next(r for r in rows if r.variant == "dense")
    head = "| variant | β | MACs ratio | train ms | train ratio | infer b1 ms | b1 ratio "
    head += "| infer b64 ms | b64 ratio |"
    sep = "|---|---|---|---|---|---|---|---|---|"
    if merged:
        head += " merged b1 ratio | merged b64 ratio |"
        sep += "---|---|"
    lines = [head, sep]
    for r in rows:
        cells = [
            f"{r.variant}{' (' + r.note + ')' if r.note else ''}",
            f"{r.beta:g}",
            _ratio(r.macs, dense.macs),
            _fmt(r.train_ms),
            _ratio(r.train_ms, dense.train_ms),
            _fmt(r.infer1_ms, 3),
            _ratio(r.infer1_ms, dense.infer1_ms),
            _fmt(r.infer64_ms),
            _ratio(r.infer64_ms, dense.infer64_ms),
        ]
        if merged:
            cells += [  # against the dense timing interleaved with it, where there is one
                _ratio(r.merged1_ms, r.extra.get("dense1-paired-ms", dense.infer1_ms)),
                _ratio(r.merged64_ms, r.extra.get("dense64-paired-ms", dense.infer64_ms)),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def simple_table(rows: list[Row], base: Row, columns: Sequence[str]) -> str:
    head = "| model | variant | β | MACs ratio | " + " | ".join(
        f"{c} ms | {c} ratio" for c in columns
    )
    lines = [head + " |", "|" + "---|" * (4 + 2 * len(columns))]
    for r in rows:
        cells = [r.group, r.variant, f"{r.beta:g}", _ratio(r.macs, base.macs)]
        for c in columns:
            cells += [
                _fmt(getattr(r, f"{c}_ms"), 3),
                _ratio(getattr(r, f"{c}_ms"), getattr(base, f"{c}_ms")),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _find(rows: list[Row], group: str, variant: str, beta: float) -> Row | None:
    return next(
        (r for r in rows if r.group == group and r.variant == variant and r.beta == beta), None
    )


def targets(models: list[Row], overhead: list[Row], freezing: list[Row]) -> list[str]:
    """The issue's figures to reach, read off the measured rows (speed-up = dense / tier)."""
    out = []
    for name in ("cnn", "resnet18", "resnet18-full"):
        dense = _find(models, name, "dense", 1.0)
        for kind in MODEL_KINDS:
            r = _find(models, name, kind, 0.25)
            if dense is None or r is None:
                continue
            train = dense.train_ms / r.train_ms
            infer = dense.infer64_ms / min(r.infer64_ms, r.merged64_ms or r.infer64_ms)
            ok = "met" if train >= 2 and infer >= 2 else "MISSED"
            out.append(
                f"- {name} {kind} β=0.25: train step {train:.2f}× faster, inference b64 "
                f"{infer:.2f}× faster (target ≥ 2× both): {ok}"
            )

    def dense_form(r: Row, b: int) -> bool:
        # Every factored layer merged: the tier runs the dense model's layers, so any ratio to
        # dense other than 1 is timing noise (merge_faster keeps this form only if fastest).
        # Not a hybrid's: its first conv keeps fewer channels, so it does run less.
        layers = r.extra.get("layers")
        return (
            r.variant not in HYBRID_KINDS
            and bool(layers)
            and r.extra.get(f"merged-layers-{b}") == layers
        )

    def ratio(r: Row, b: int) -> float | None:
        d = _find(models, r.group, "dense", 1.0)
        merged = getattr(r, f"merged{b}_ms")
        if merged is None or d is None:
            return None
        return merged / r.extra.get(f"dense{b}-paired-ms", getattr(d, f"infer{b}_ms"))

    factored = [r for r in models if r.variant in MODEL_KINDS]
    # (model, batch) -> the timing noise: |ratio − 1| of the dense model against a copy of
    # itself, and of every tier in the dense form against the dense model.
    noise = {
        (d.group, b): abs(d.extra.get(f"self-ratio-{b}", 1.0) - 1)
        for d in models
        if d.variant == "dense"
        for b in (1, 64)
    }
    same = []  # (ratio) of the tiers in the dense form
    slow = []  # (name, ratio, noise key) of the other tiers that time above dense
    for r in factored:
        for b in (1, 64):
            x, key = ratio(r, b), (r.group, b)
            if x is None:
                continue
            if dense_form(r, b):
                same.append(x)
                noise[key] = max(noise.get(key, 0.0), abs(x - 1))
            elif x > 1:
                slow.append((f"{r.group} {r.variant} β={r.beta:g} b{b}", x, key))
    if factored:
        beyond = [s for s in slow if s[1] > 1 + noise[s[2]]]
        verdict = (
            "met"
            if not slow
            else "met within timing noise"
            if not beyond
            else f"MISSED by {len(beyond)} beyond timing noise"
        )
        floors = ", ".join(f"{g} b{b} {f:.2f}" for (g, b), f in sorted(noise.items()))
        out.append(
            "- no tier slower than dense at inference (merged by measurement, timed interleaved "
            f"with dense): {verdict}"
            + (
                f"; {len(same)} tier figures run the dense model's layers (every factored layer "
                f"merged), their ratios to dense {min(same):.2f}–{max(same):.2f} being timing "
                "noise"
                if same
                else ""
            )
            + (
                f"; above 1.00 among the others (factors kept, or a hybrid's first conv cut): "
                f"{', '.join(f'{n} ({x:.2f})' for n, x, _ in slow)}"
                if slow
                else ""
            )
            + f"; noise floor (|ratio − 1| of the dense model against a copy of itself and of the "
            f"tiers in the dense form): {floors}"
        )
    losers, above = [], []
    for r in models:
        if r.variant not in MODEL_KINDS:
            continue
        w = _find(models, r.group, width_variant(r.variant), r.beta)
        d = _find(models, r.group, "dense", 1.0)
        if w is None and d is not None and r.macs >= d.macs and r.variant != "svd":
            above.append(f"{r.group} {r.variant} β={r.beta:g} ({r.train_ms / d.train_ms:.2f}×)")
        elif w is not None and r.train_ms > w.train_ms:
            losers.append(f"{r.group} {r.variant} β={r.beta:g} ({r.train_ms / w.train_ms:.2f}×)")
    if any(r.variant == "width" for r in models):
        out.append(
            "- no low-rank tier trains slower than the width tier of equal MACs (each kind's "
            "tier against the width tier matched to its own MACs): "
            + ("met" if not losers else f"MISSED by {len(losers)}: " + ", ".join(losers))
            + (
                "; tiers with at least the dense model's MACs, against dense: " + ", ".join(above)
                if above
                else ""
            )
        )
    for name in sorted({r.group for r in overhead}):
        dense = _find(overhead, name, "dense step", 1.0)
        fixed = _find(overhead, name, "factored step, no sampler", 1.0)
        for r in overhead:
            if r.group != name or not r.variant.startswith("maestro step"):
                continue
            head = f"- {name} β=1 {r.variant}: {r.train_ms / dense.train_ms:.2f}× a dense step "
            if r.variant.removeprefix("maestro step: ") in ONE_PASS_NESTED:
                ok = "met" if r.train_ms <= 1.3 * dense.train_ms else "MISSED"
                out.append(head + f"(a nested objective at about one pass; target ≤ 1.3×): {ok}")
            elif "passes" not in r.variant:
                out.append(
                    head + f"(factored without sampler {fixed.train_ms / dense.train_ms:.2f}×; "
                    f"sampling itself {r.train_ms / fixed.train_ms:.2f}× the factored step; "
                    "target ≤ 1.2×)"
                )
            else:  # several passes by design: their cost is the objective's, not sampling's
                out.append(
                    head + f"({r.train_ms / fixed.train_ms:.2f}× the factored step: the "
                    "objective's own extra passes)"
                )
    for r in freezing:
        if r.variant.endswith("freeze=none") or r.variant.endswith(BOUND):
            continue
        kind = r.variant.split()[0]
        base = _find(freezing, r.group, f"{kind} freeze=none", r.beta)
        if base is not None:
            gain = base.train_ms / r.train_ms - 1
            ok = "met" if gain >= 0.2 else "MISSED"
            out.append(
                f"- {r.group} {r.variant} β={r.beta:g}: {100 * gain:+.0f} % training throughput "
                f"(target ≥ +20 %): {ok}"
            )
    return out


def load_line() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average unavailable"
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m simulations.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="tiers 0.25 and 1, 3 repeats: a smoke run")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma list of {list(MODELS)}")
    p.add_argument("--batch", type=int, default=32, help="training batch (RunConfig batch-size)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per figure (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before timing")
    p.add_argument(
        "--clock",
        default="cpu",
        choices=sorted(CLOCKS),
        help="cpu: the thread's CPU time (robust under load); wall: elapsed time",
    )
    p.add_argument("--quanta", default="8,16", help="rank quanta compared with q=1")
    p.add_argument("--objectives", default=",".join(OBJECTIVES), help="training objectives")
    p.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma list of {list(SECTIONS)} (each saved as soon as measured)",
    )
    p.add_argument(
        "--from-json",
        default="",
        help="comma list of bench.json files: render one report from them, measure nothing",
    )
    p.add_argument("--out", type=Path, default=Path("docs/performance.md"))
    p.add_argument("--json", type=Path, default=Path("runs/bench/bench.json"))
    args = p.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    bad = [m for m in args.models if m not in MODELS]
    if bad:
        p.error(f"unknown model(s) {bad}; allowed: {', '.join(MODELS)}")
    args.objectives = [o for o in args.objectives.split(",") if o]
    bad = [o for o in args.objectives if o not in OBJECTIVES]
    if bad:
        p.error(f"unknown objective(s) {bad}; allowed: {', '.join(OBJECTIVES)}")
    args.sections = [x for x in args.sections.split(",") if x]
    bad = [x for x in args.sections if x not in SECTIONS]
    if bad:
        p.error(f"unknown section(s) {bad}; allowed: {', '.join(SECTIONS)}")
    args.from_json = [Path(x) for x in args.from_json.split(",") if x]
    args.quanta = [int(q) for q in args.quanta.split(",") if q]
    if args.batch < 1 or args.repeats < 1 or args.warmup < 0 or any(q < 1 for q in args.quanta):
        p.error("--batch, --repeats and --quanta must be ≥ 1, --warmup ≥ 0")
    if args.quick:
        args.repeats, args.warmup = 3, 1
    return args


def main(argv: list[str] | None = None) -> dict[str, list[Row]]:
    args = parse_args(argv)
    if args.from_json:
        rerender(args, args.from_json)
        print(f"[bench] wrote {args.out} and {args.json} from {len(args.from_json)} file(s)")
        return {}
    tune_malloc()
    torch.set_num_threads(1)
    clear_cache()
    _FACTORED.clear()
    timer = Timer(args.warmup, args.repeats, args.clock)
    tiers = (0.25, 1.0) if args.quick else tuple(sorted({*TIERS, 0.25}))
    target_models = [m for m in ("cnn", "resnet18") if m in args.models]
    started, load_before = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), load_line()
    start = time.perf_counter()
    results: dict[str, list[Row]] = {}
    # 0.25 of a power-of-two rank is already a multiple of 8: tiers where rounding acts.
    q_tiers = (0.2,) if args.quick else (0.2, 0.6)
    sections: dict[str, Callable[[], list[Row]]] = {
        "layers": lambda: measure_layers(tiers, timer, args.batch),
        "models": lambda: [
            r for m in args.models for r in measure_model(m, tiers, timer, args.batch)
        ],
        "overhead": lambda: [
            r
            for m in args.models
            if m not in MODELS_SECTION_ONLY
            for r in measure_overhead(m, timer, args.batch, args.objectives)
        ],
        "quantization": lambda: [
            r
            for m in target_models
            for r in measure_quantization(m, q_tiers, [1, *args.quanta], timer, args.batch)
        ],
        "freezing": lambda: [
            r
            for m in target_models
            for kind in ("svd", "tucker")
            for r in measure_freezing(m, (0.25, 1.0), timer, args.batch, kind)
        ],
        "branched": lambda: measure_branched(tiers, timer, args.batch),
    }
    for name in args.sections:
        section_start = time.perf_counter()
        print(f"[bench] {name} ...", flush=True)
        results[name] = sections[name]()
        print(f"[bench] {name}: {time.perf_counter() - section_start:.0f} s", flush=True)
        # The section's figures against their targets (e.g. each objective's step against a
        # dense step), on the terminal as well as in the report.
        measured = (
            results[name] if name == key else [] for key in ("models", "overhead", "freezing")
        )
        for line in targets(*measured):
            print(f"[bench] {line}", flush=True)
        # Written after every section, so a long run interrupted keeps what it measured.
        seconds = time.perf_counter() - start
        meta = {
            "started": started,
            "load-before": load_before,
            "load-after": load_line(),
            "seconds": seconds,
            "commands": [" ".join(argv if argv is not None else sys.argv[1:])],
            "settings": settings_line(args),
            "cpu": cpu_model(),
        }
        write(args, results, meta)
    print(f"[bench] wrote {args.out} and {args.json} ({time.perf_counter() - start:.0f} s)")
    return results


def write(args: argparse.Namespace, results: dict[str, list[Row]], meta: dict[str, Any]) -> None:
    """Write the JSON figures and the markdown report."""
    args.json.parent.mkdir(parents=True, exist_ok=True)
    rows = {k: [asdict(r) for r in v] for k, v in results.items()}
    args.json.write_text(json.dumps({"meta": meta, **rows}, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(args, results, meta))


def rerender(args: argparse.Namespace, paths: Sequence[Path]) -> None:
    """One report from the JSON of several (partial) runs, e.g. sections run separately."""
    results: dict[str, list[Row]] = {}
    metas = []
    for path in paths:
        data = json.loads(path.read_text())
        metas.append(data.pop("meta"))
        for key, rows in data.items():
            results.setdefault(key, []).extend(Row(**r) for r in rows)
    meta = {
        "started": ", ".join(m["started"] for m in metas),
        "load-before": "; ".join(m["load-before"] for m in metas),
        "load-after": "; ".join(m["load-after"] for m in metas),
        "seconds": sum(m["seconds"] for m in metas),
        "commands": [c for m in metas for c in m["commands"]],
        "settings": "; ".join(dict.fromkeys(m["settings"] for m in metas)),
        "cpu": "; ".join(dict.fromkeys(m["cpu"] for m in metas if m.get("cpu"))),
    }
    write(args, results, meta)


def settings_line(args: argparse.Namespace) -> str:
    clock = "the thread's CPU time" if args.clock == "cpu" else "wall time"
    return (
        f"training batch {args.batch}, median of {args.repeats} after {args.warmup} warm-up, "
        f"clock: {clock}"
    )


def render(args: argparse.Namespace, results: dict[str, list[Row]], meta: dict[str, Any]) -> str:
    command = " and ".join(
        f"`OMP_NUM_THREADS=1 python -m simulations.bench{(' ' + c) if c else ''}`"
        for c in meta["commands"]
    )
    started, seconds = meta["started"], meta["seconds"]
    load_before, load_after = meta["load-before"], meta["load-after"]
    out = [
        "# Performance: measured time per tier",
        "",
        "Generated by `simulations/bench.py`; do not edit by hand: rerun the command below.",
        "",
        f"- Command: {command} ({seconds:.0f} s)",
        f"- Taken: {started}; {meta.get('cpu') or platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} logical CPUs, torch {torch.__version__}, 1 torch thread, "
        f"{meta['settings']}",
        f"- Machine load: before {load_before}; after {load_after}. A load above ~1 on this "
        "2-core machine means other processes shared the CPU: absolute times are inflated and "
        "noisy; ratios taken within one run are less distorted but not exact.",
        "- Ratios are tier / dense of the same model or layer (below 1: faster). A factored "
        "tier runs its rank prefix only (truncated factors, as a client holds them); a width "
        "tier slices the whole model at the width whose MACs match the svd tier's ('width@K': "
        "the tier of factorization K's; none where K's tier has the dense model's MACs or more; "
        "tucker-be: Tucker with break-even initial ranks, no layer's factors bigger than it). "
        "'merged' "
        "columns: factored layers whose dense form measured faster at that batch were merged, "
        "then the whole model as decided, fully merged and unmerged were timed and the fastest "
        "kept (`maestro_common.lowrank.merging.merge_faster`); its ratio is against the dense "
        "model timed interleaved with it.",
        "- The federation's own cost per round (the harness against plain Flower FedAvg, 100 to "
        "1,000 clients) is in `docs/scale.md`.",
        "",
        "## Targets",
        "",
        *targets(
            results.get("models", []), results.get("overhead", []), results.get("freezing", [])
        ),
        "",
        "## Per layer type",
        "",
    ]
    for group in dict.fromkeys(r.group for r in results.get("layers", [])):
        out += [
            f"### {group}",
            "",
            tier_table([r for r in results["layers"] if r.group == group], False),
            "",
        ]
    inputs = "input 1×28×28"
    tokens = [
        g
        for g in dict.fromkeys(r.group for r in results.get("models", []))
        if g in MODELS and geometry(g).tokens
    ]
    if tokens:  # named only when measured: a report of image models reads as before
        inputs = f"images 1×28×28, {', '.join(tokens)} {geometry(tokens[0]).shape[0]} token ids"
    out += [
        f"## Whole models ({inputs}; resnet18 at width 0.25, resnet18-full at full width)",
        "",
    ]
    for group in dict.fromkeys(r.group for r in results.get("models", [])):
        out += [
            f"### {group}",
            "",
            tier_table([r for r in results["models"] if r.group == group]),
            "",
        ]
    out += [
        "## One Maestro training step against one dense step (β = 1, svd, full rank)",
        "",
        "'factored step, no sampler': the factorization's own cost; 'maestro step': with the "
        "Maestro sampler (one layer at a random rank per step, layers sliced to their prefixes) "
        "and the named objective (its forward passes); 'sampler + use_ranks alone': the sampler "
        "and the rank context without any compute, per step. A maestro step's MACs ratio counts "
        "every forward pass of the step (its sub-models too, on their share of the batch); an "
        "'alternate' step's time is the mean of a two-step cycle.",
        "",
    ]
    for group in dict.fromkeys(r.group for r in results.get("overhead", [])):
        rows = [r for r in results["overhead"] if r.group == group]
        out += [simple_table(rows, rows[0], ["train"]), ""]
    if results.get("quantization"):
        out += [
            "## Rank quantization",
            "",
            "Tier ranks rounded down to multiples of q (`rank-quantum`); ratios against q = 1 "
            "of the same kind and tier.",
            "",
        ]
        for group in dict.fromkeys(
            (r.group, r.variant.split()[0], r.beta) for r in results["quantization"]
        ):
            rows = [
                r
                for r in results["quantization"]
                if (r.group, r.variant.split()[0], r.beta) == group
            ]
            out += [simple_table(rows, rows[0], ["train", "infer64"]), ""]
    if results.get("freezing"):
        out += [
            "## Sequential freezing",
            "",
            "Train step time averaged over one rotation cycle; ratios against no freezing. "
            f"`{BOUND}`: every factor of every factored layer frozen at once while the dense "
            "layers train, the most the `factor` and `layer` modes can skip (a reference, not a "
            "schedule); `stage` also freezes the dense layers of a stage, so a frozen "
            "input-side stage stops backward above it.",
            "",
        ]
        for group in dict.fromkeys(
            (r.group, r.variant.split()[0], r.beta) for r in results["freezing"]
        ):
            rows = [
                r for r in results["freezing"] if (r.group, r.variant.split()[0], r.beta) == group
            ]
            out += [simple_table(rows, rows[0], ["train"]), ""]
    if results.get("branched"):
        out += [
            "## Branched Tucker (the core as a grouped convolution)",
            "",
            "Each kxk conv of the layer section as Tucker-2 with the tier's inner width (its rank "
            "rounded down to a multiple of 4): `TuckerConv2d`, and `BranchedTuckerConv2d` with "
            "its core split into 2 or 4 parallel branches (a grouped conv, arXiv 2407.20266), "
            "each truncated as a client holds it and timed interleaved; ratios against plain "
            "Tucker at the same width.",
            "",
            *branched_summary(results["branched"]),
            "",
        ]
        for group in dict.fromkeys((r.group, r.beta) for r in results["branched"]):
            rows = [r for r in results["branched"] if (r.group, r.beta) == group]
            out += [simple_table(rows, rows[0], ["train", "infer64"]), ""]
    return "\n".join(out)


if __name__ == "__main__":
    main()
