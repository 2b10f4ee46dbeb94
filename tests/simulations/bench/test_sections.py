"""The sections measure what a client runs: objectives, branched cores, freezing, char models."""

from __future__ import annotations

import pytest
import torch

from maestro_common.lowrank.layers import low_rank_layers
from simulations import bench
from simulations.bench import Timer, parse_args, targets
from simulations.bench.sections import RULE_OF_ROW, SANDWICH, SPLIT


def test_every_objective_of_the_maestro_method_is_measured():
    from simulations.bench import OBJECTIVES, Timer, measure_overhead

    got = measure_overhead("lenet5", Timer(0, 1, "cpu"), 4, list(OBJECTIVES))
    names = [r.variant for r in got]
    assert [f"maestro step: {o}" for o in OBJECTIVES] == [n for n in names if "maestro" in n]
    assert f"maestro step: {SPLIT}" in names
    assert all("," not in o for o in OBJECTIVES)  # --objectives is a comma list
    assert all(r.train_ms > 0 for r in got)
    # The MACs column counts every forward pass of a step: the sandwich's sub-models too.
    macs = {r.variant.removeprefix("maestro step: "): r.macs for r in got}
    one = macs["nested: prefix only (1 pass)"]
    assert macs[SANDWICH] > 1.5 * one
    assert macs["nested: alternate (1 pass; prefix every other step)"] < one
    assert macs[SPLIT] < one
    assert one < macs["nested: random on half the batch (1 + 1 half pass)"] < 1.5 * one
    # The one-pass candidates are held to the target against a dense step.
    lines = [t for t in targets([], got, []) if "about one pass" in t]
    assert len(lines) == 4 and all(t.endswith(("met", "MISSED")) for t in lines)


def test_the_row_marked_the_default_is_the_run_configs_default_step():
    from maestro_common.app.config import RunConfig

    marked = [name for name in RULE_OF_ROW if "the default" in name]
    assert [RULE_OF_ROW[name] for name in marked] == [RunConfig().sub_model_rule]


def test_the_overhead_section_times_the_dense_step_and_every_objective_interleaved():
    from dataclasses import dataclass

    from simulations.bench import measure_overhead

    @dataclass
    class Recording(Timer):
        batches: tuple[int, ...] = ()

        def interleaved(self, fns):
            self.batches += (len(fns),)
            return [float(i + 1) for i in range(len(fns))]

    timer = Recording(0, 1, "cpu")
    objectives = ["nested: prefix only (1 pass)", *bench.CYCLE]
    got = measure_overhead("lenet5", timer, 4, objectives)
    # One interleaved batch for the dense step, the factored step and the objectives (their ratios
    # share one machine state), then the sampler alone.
    assert timer.batches == (2 + len(objectives), 1)
    ms = {r.variant: r.train_ms for r in got}
    assert ms["dense step"] == 1.0 and ms["factored step, no sampler"] == 2.0
    # A scheduled objective's call runs its whole cycle: its figure is per step.
    for i, obj in enumerate(objectives):
        assert ms[f"maestro step: {obj}"] == (3 + i) / bench.CYCLE.get(obj, 1)


def test_the_branched_section_times_the_layers_a_client_runs():
    from torch import nn

    from maestro_common.lowrank.branched import BranchedTuckerConv2d
    from maestro_common.lowrank.tucker import TuckerConv2d

    dense = nn.Conv2d(8, 12, 3, padding=1)
    plain, branched = bench.tucker_layer(dense, 8, 1), bench.tucker_layer(dense, 8, 4)
    assert isinstance(plain, TuckerConv2d) and plain.rank == 8
    assert isinstance(branched, BranchedTuckerConv2d) and branched.core.shape == (4, 2, 2, 3, 3)
    x = torch.randn(2, 8, 6, 6)
    assert plain(x).shape == branched(x).shape == dense(x).shape
    # A core entry is used once per output position: 4 branches, a quarter of the core's MACs.
    assert branched.core.numel() * 4 == plain.core.numel()
    with pytest.raises(ValueError, match="not a multiple of 4 branches"):
        bench.tucker_layer(dense, 6, 4)


def test_branched_section_times_every_conv_against_plain_tucker_at_one_rank(monkeypatch):
    from torch import nn

    monkeypatch.setattr(
        bench.sections, "LAYERS", {"conv": (lambda: nn.Conv2d(8, 16, 3, padding=1), (8, 6, 6))}
    )
    got = bench.measure_branched((0.25, 1.0), Timer(0, 1, "cpu"), 2)
    assert [(r.variant, r.beta) for r in got] == [
        (v, b) for b in (0.25, 1.0) for v in ("tucker", "branched ×2", "branched ×4")
    ]
    assert {r.note for r in got if r.beta == 0.25} == {"rank 4"}
    assert all(r.train_ms > 0 and r.infer64_ms > 0 for r in got)
    lines = bench.branched_summary(got)
    assert len(lines) == 4 and all("of plain Tucker" in line for line in lines)
    assert "## Branched Tucker" in bench.render(
        parse_args(["--quick"]),
        {"branched": got},
        {k: "" for k in ("started", "load-before", "load-after", "settings")}
        | {"seconds": 0.0, "commands": [""]},
    )


def test_freezing_section_times_every_mode_interleaved_per_tier(monkeypatch):
    from maestro_common.lowrank.freezing import FREEZE_MODES

    calls = []

    def fake(self, fns):
        calls.append(len(fns))
        for fn in fns:
            fn()  # each step runs with its period's parameters frozen
        return [float(i + 1) for i in range(len(fns))]

    monkeypatch.setattr(Timer, "interleaved", fake)
    got = bench.measure_freezing("lenet5", (0.25, 1.0), Timer(0, 1, "cpu"), 2, "svd")
    # one interleaved call per tier: none (1 period), stage (2)
    assert calls == [3, 3]
    assert [r.variant for r in got[:2]] == [f"svd freeze={m}" for m in FREEZE_MODES]
    assert [r.train_ms for r in got[:2]] == [1.0, 2.5]  # means over periods
    lines = [t for t in targets([], [], got) if "training throughput" in t]
    assert len(lines) == 2 and all("freeze=stage" in t for t in lines)


CHAR_OBJECTIVES = [
    "nested: prefix only (1 pass)",
    SANDWICH,
    "nested: alternate (1 pass; prefix every other step)",
    "nested: sandwich on a quarter batch (1 + 2 quarter passes)",
]


def test_overhead_section_runs_on_the_char_transformer():
    from maestro_common.lowrank.accounting import count_macs, step_macs

    got = bench.measure_overhead("char-transformer", Timer(0, 1, "cpu"), 4, CHAR_OBJECTIVES)
    assert [r.variant for r in got] == [
        "dense step",
        "factored step, no sampler",
        *(f"maestro step: {o}" for o in CHAR_OBJECTIVES),
        "sampler + use_ranks alone",
    ]
    assert all(r.group == "char-transformer" and r.train_ms > 0 for r in got)
    # Dense MACs per window, by hand: per token 3 blocks of q, k, v, out (64·64 each) and fc1,
    # fc2 (64·256 each), plus the head (64·81); per block q·kᵀ and attn·v, T²·(64 + 64).
    per_token = 3 * (4 * 64 * 64 + 2 * 64 * 256) + 64 * 81
    assert got[0].macs == 80 * per_token + 3 * 80 * 80 * 128
    full = bench.factored_tier(bench.dense_model("char-transformer"), "svd", 1.0)
    assert got[1].macs == count_macs(full, (80,)) > got[0].macs  # full rank costs more
    ranks = {n: m.rank for n, m in low_rank_layers(full).items()}
    macs = {r.variant.removeprefix("maestro step: "): r.macs for r in got}
    for obj in CHAR_OBJECTIVES:  # each objective's MACs: the accounting's for its sampler
        sampler = bench.OBJECTIVES[obj](ranks)[1].sampler
        assert macs[obj] == round(step_macs(full, (80,), sampler))
    assert macs[CHAR_OBJECTIVES[0]] == got[1].macs  # the prefix alone: one full pass
    assert macs[CHAR_OBJECTIVES[1]] > 1.5 * got[1].macs > macs[CHAR_OBJECTIVES[2]]
    lines = [t for t in targets([], got, []) if t.startswith("- char-transformer β=1 maestro")]
    assert len(lines) == len(CHAR_OBJECTIVES) and all("× a dense step" in t for t in lines)


def test_models_section_times_the_char_transformer_with_width_tiers(monkeypatch):
    monkeypatch.setattr(
        bench.sections, "merge_faster", lambda model, x: {}
    )  # its own timing: skipped
    got = bench.measure_model("char-transformer", (0.25,), Timer(0, 1, "cpu"), 2)
    assert [(r.variant, r.beta) for r in got] == [
        ("dense", 1.0),
        ("svd", 0.25),
        ("width", 0.25),
    ]
    assert all(r.train_ms > 0 and r.infer64_ms > 0 for r in got)
    # the width tier at the width whose MACs match the svd tier's (at most, the harness's rule)
    assert got[2].macs <= got[1].macs
    report = bench.render(
        parse_args(["--quick"]),
        {"models": got},
        {k: "" for k in ("started", "load-before", "load-after", "settings")}
        | {"seconds": 0.0, "commands": [""]},
    )
    assert "## Whole models (images 1×28×28, char-transformer 80 token ids;" in report
