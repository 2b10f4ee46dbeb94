"""The benchmark suite's pieces: timer, tier models, target checks, report, arguments."""

from __future__ import annotations

import json

import pytest
import torch

from maestro_common.lowrank.layers import budget_rank, low_rank_layers
from simulations import bench
from simulations.bench import (
    Row,
    Timer,
    factored_tier,
    parse_args,
    targets,
    tier_table,
    train_step_fn,
)


def test_timer_takes_the_median_after_warmup(monkeypatch):
    ticks = iter([0.0, 1.0, 1.0, 4.0, 4.0, 6.0])  # three timed calls: 1, 3, 2 s
    monkeypatch.setitem(bench.CLOCKS, "fake", lambda: next(ticks))
    calls = []
    assert Timer(warmup=2, repeats=3, clock="fake")(lambda: calls.append(1)) == 2000.0
    assert len(calls) == 5


@pytest.mark.parametrize("kind", ["svd", "tucker"])
def test_factored_tier_holds_the_quantized_prefix(kind):
    dense = bench.dense_model("lenet5")
    full = factored_tier(dense, kind, 1.0)
    tier = factored_tier(dense, kind, 0.4, quantum=4)
    for name, layer in low_rank_layers(tier).items():
        assert layer.rank == budget_rank(low_rank_layers(full)[name].rank, 0.4, 4)
    x = torch.randn(2, *bench.SHAPE)
    assert tier(x).shape == (2, 10)


def test_tucker_be_tiers_start_from_break_even_ranks():
    dense = bench.dense_model("cnn")
    full = low_rank_layers(factored_tier(dense, "tucker-be", 1.0))
    assert {n: m.rank for n, m in full.items()} == {"conv2": 43, "fc1": 440}
    tier = low_rank_layers(factored_tier(dense, "tucker-be", 0.25))
    assert {n: m.rank for n, m in tier.items()} == {
        n: budget_rank(m.rank, 0.25) for n, m in full.items()
    }


def rows() -> list[Row]:
    return [
        Row("cnn", "dense", 1.0, 100, 10.0, 1.0, 8.0),
        Row("cnn", "svd", 0.25, 30, 4.0, 0.9, 3.0, merged1_ms=0.8, merged64_ms=3.0),
        Row("cnn", "tucker", 0.25, 20, 6.0, 1.5, 5.0, merged1_ms=1.2, merged64_ms=5.0),
        Row("cnn", "width", 0.25, 30, 5.0, 0.5, 2.0),
        Row("cnn", "width@tucker", 0.25, 20, 5.0, 0.5, 2.0),
    ]


def test_targets_report_met_and_missed():
    overhead = [
        Row("cnn", "dense step", 1.0, 100, 10.0),
        Row("cnn", "factored step, no sampler", 1.0, 110, 11.0),
        Row("cnn", "maestro step: od", 1.0, 110, 12.0),
        Row("cnn", "maestro step: nested: sandwich (3 passes)", 1.0, 110, 22.0),
    ]
    freezing = [
        Row("cnn", "svd freeze=none", 0.25, 30, 10.0),
        Row("cnn", "svd freeze=factor", 0.25, 30, 8.0),
        Row("cnn", "svd freeze=layer", 0.25, 30, 9.5),
    ]
    lines = targets(rows(), overhead, freezing)
    text = "\n".join(lines)
    assert "cnn svd β=0.25: train step 2.50× faster, inference b64 2.67× faster" in text
    assert "cnn tucker β=0.25: train step 1.67× faster" in text and "MISSED" in text
    assert (
        "MISSED by 1 beyond timing noise; above 1.00 among the others (factors kept, or a "
        "hybrid's first conv cut): cnn tucker β=0.25 b1 (1.20)" in text
    )
    assert "MISSED by 1: cnn tucker β=0.25 (1.20×)" in text
    assert "maestro step: od: 1.20× a dense step" in text
    assert "against dense" not in text
    assert "sampling itself 1.09× the factored step; target ≤ 1.2×" in text
    # A multi-pass objective's extra passes are its own, not sampling overhead.
    assert "(3 passes): 2.20× a dense step (2.00× the factored step: the objective's own" in text
    assert "svd freeze=factor β=0.25: +25 %" in text
    assert "svd freeze=layer β=0.25: +5 %" in text


def test_slower_than_dense_is_judged_against_the_paired_dense_and_the_noise_floor():
    models = rows()
    models[0].extra.update({"self-ratio-1": 1.03, "self-ratio-64": 0.99})
    # tucker b1: 1.2 ms merged against 1.18 ms dense timed with it: 1.02, inside the 0.03 floor.
    models[2].extra["dense1-paired-ms"] = 1.18
    text = "\n".join(targets(models, [], []))
    assert (
        "with dense): met within timing noise; above 1.00 among the others (factors kept, or a "
        "hybrid's first conv cut): cnn tucker β=0.25 b1 (1.02)" in text
    )
    assert "of the tiers in the dense form): cnn b1 0.03, cnn b64 0.01" in text
    models[2].extra["dense1-paired-ms"] = 1.0
    assert "MISSED by 1 beyond timing noise" in "\n".join(targets(models, [], []))
    models[2].merged1_ms = 0.9
    assert "(merged by measurement, timed interleaved with dense): met" in "\n".join(
        targets(models, [], [])
    )


def test_tiers_in_the_dense_form_are_timing_noise_and_widen_the_floor():
    """A tier with every factored layer merged runs the dense model's layers: its ratio to dense
    is noise, never a miss, and it measures the noise for the tiers that keep factors."""
    models = rows()
    models[0].extra.update({"self-ratio-1": 1.0, "self-ratio-64": 1.0})
    # svd b1 merged in full: 1.05 against dense; tucker b1 keeps a factor: 1.04 against dense.
    models[1].merged1_ms = 1.05
    models[1].extra.update({"layers": 2, "merged-layers-1": 2, "merged-layers-64": 1})
    models[2].merged1_ms = 1.04
    models[2].extra.update({"layers": 2, "merged-layers-1": 1, "merged-layers-64": 0})
    text = "\n".join(targets(models, [], []))
    assert "with dense): met within timing noise; 1 tier figures run the dense model's" in text
    assert "their ratios to dense 1.05–1.05 being timing noise" in text
    assert "first conv cut): cnn tucker β=0.25 b1 (1.04)" in text and "svd β=0.25 b1" not in text
    assert "cnn b1 0.05" in text
    # Without the dense-form tier, the noise floor is the dense model's own (0): a miss.
    models[1].extra["merged-layers-1"] = 1
    text = "\n".join(targets(models, [], []))
    assert "MISSED by 2 beyond timing noise" in text and "svd β=0.25 b1 (1.05)" in text
    # A hybrid tier merged in full still cuts its first conv: it runs less than dense, not noise.
    models[1].variant = "svd-hybrid"
    models[1].extra["merged-layers-1"] = 2
    models[1].merged1_ms = 0.7
    text = "\n".join(targets(models, [], []))
    assert "tier figures run the dense model's" not in text and "cnn b1 0.00" in text


def test_timer_interleaves_its_functions(monkeypatch):
    monkeypatch.setitem(bench.CLOCKS, "fake", iter(range(100)).__next__)
    order = []
    got = Timer(warmup=1, repeats=2, clock="fake").interleaved(
        [lambda: order.append("a"), lambda: order.append("b")]
    )
    assert order == ["a", "b"] * 3
    assert got == [1000.0, 1000.0]  # each timed call spans one tick


def test_tier_table_ratios():
    table = tier_table(rows())
    assert "| svd | 0.25 | 0.30 | 4.00 | 0.40 |" in table
    assert table.count("\n") == 6  # header, rule and one line a row


def test_arguments_are_checked():
    with pytest.raises(SystemExit):
        parse_args(["--models", "vgg"])
    with pytest.raises(SystemExit):
        parse_args(["--objectives", "nope"])
    with pytest.raises(SystemExit):
        parse_args(["--repeats", "0"])
    args = parse_args(["--quick"])
    assert args.repeats == 3 and args.clock == "cpu"


def test_targets_say_nothing_about_sections_not_measured():
    assert targets([], [], []) == []


def test_every_objective_of_the_maestro_method_is_measured():
    from simulations.bench import OBJECTIVES, Timer, measure_overhead

    got = measure_overhead("lenet5", Timer(0, 1, "cpu"), 4, list(OBJECTIVES))
    names = [r.variant for r in got]
    assert [f"maestro step: {o}" for o in OBJECTIVES] == [n for n in names if "maestro" in n]
    assert "maestro step: nested: sandwich (3 passes; the default)" in names
    assert all("," not in o for o in OBJECTIVES)  # --objectives is a comma list
    assert all(r.train_ms > 0 for r in got)
    # The MACs column counts every forward pass of a step: the sandwich's sub-models too.
    macs = {r.variant.removeprefix("maestro step: "): r.macs for r in got}
    one = macs["nested: prefix only (1 pass)"]
    assert macs["nested: sandwich (3 passes; the default)"] > 1.5 * one
    assert macs["nested: alternate (1 pass; prefix every other step)"] < one
    assert one < macs["nested: random on half the batch (1 + 1 half pass)"] < 1.5 * one
    # The one-pass candidates are held to the target against a dense step.
    lines = [t for t in targets([], got, []) if "about one pass" in t]
    assert len(lines) == 3 and all(t.endswith(("met", "MISSED")) for t in lines)


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
        bench, "LAYERS", {"conv": (lambda: nn.Conv2d(8, 16, 3, padding=1), (8, 6, 6))}
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


def test_each_kind_is_judged_against_the_width_tier_of_its_own_macs():
    models = [
        *rows()[:3],
        Row("cnn", "width", 0.25, 30, 3.0, 0.5, 2.0),  # matched to svd: tucker is not judged by it
        Row("cnn", "width@tucker", 0.25, 20, 7.0, 0.5, 2.0),
        Row("cnn", "tucker", 1.0, 190, 18.0, 1.5, 5.0),  # above dense MACs: no width tier
    ]
    (line,) = [x for x in targets(models, [], []) if "width tier" in x]
    assert "MISSED by 1: cnn svd β=0.25 (1.33×)" in line
    assert "tucker β=0.25" not in line
    assert "against dense: cnn tucker β=1 (1.80×)" in line


def test_width_variants_name_the_kind_they_match():
    assert bench.width_variant("svd") == "width"
    assert bench.width_variant("tucker-b2") == "width@tucker-b2"


def test_the_report_names_the_cpu_of_each_run(tmp_path):
    """Figures from two CPU models are not comparable: the header says which one measured."""
    meta = {
        "started": "2026-11-25 01:50 UTC",
        "load-before": "0.9",
        "load-after": "1.0",
        "seconds": 1.0,
        "commands": [""],
        "settings": "s",
        "cpu": "Some CPU 9000",
    }
    for i, cpu in enumerate(("Some CPU 9000", "Other CPU 1")):
        (tmp_path / f"{i}.json").write_text(json.dumps({"meta": {**meta, "cpu": cpu}}))
    out = tmp_path / "perf.md"
    files = f"{tmp_path / '0.json'},{tmp_path / '1.json'}"
    bench.main(["--from-json", files, "--out", str(out), "--json", str(tmp_path / "all.json")])
    assert "- Taken: 2026-11-25 01:50 UTC, 2026-11-25 01:50 UTC; Some CPU 9000; Other CPU 1," in (
        out.read_text()
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
    # one interleaved call per tier: none (1 period), factor (2), layer (2), stage (2), the bound
    assert calls == [8, 8]
    variants = [f"svd freeze={m}" for m in FREEZE_MODES] + [f"svd {bench.BOUND}"]
    assert [r.variant for r in got[:5]] == variants
    assert [r.train_ms for r in got[:5]] == [1.0, 2.5, 4.5, 6.5, 8.0]  # means over periods
    # the bound is a reference, not a schedule: targets judge the three modes only
    lines = [t for t in targets([], [], got) if "training throughput" in t]
    assert len(lines) == 6 and not any(bench.BOUND in t for t in lines)


def test_the_freezing_bound_freezes_every_factor_and_nothing_else():
    from maestro_common.lowrank.freezing import without_grad

    model = factored_tier(bench.dense_model("lenet5"), "svd", 1.0)
    layers = low_rank_layers(model)
    every = [p for layer in layers.values() for p in bench._factor_params(layer)]
    names = {n for n, p in model.named_parameters() if any(p is q for q in every)}
    assert names == {f"{n}.{f}" for n, layer in layers.items() for f in ("u", "v")}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_step_fn(model, 4, lambda: without_grad(every))()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert not moved & names and moved  # factors bit-identical, dense layers and biases train
    assert all(p.requires_grad for p in model.parameters())


# ----- the character Transformer (token inputs) ---------------------------------------------------
def test_char_transformer_is_sized_as_the_shakespeare_run():
    import tomllib
    from pathlib import Path

    from maestro_common.app.config import parse_options

    conf = tomllib.loads(
        (Path(__file__).parents[2] / "simulations/conf/shakespeare.toml").read_text()
    )
    options = {k: v for k, v in bench.MODELS["char-transformer"].items() if k != "dataset"}
    assert options == parse_options(conf["model-options"], "model-options")
    assert (conf["model"], conf["dataset"]) == ("char-transformer", "shakespeare")
    assert bench.MODELS["char-transformer"]["dataset"] == conf["dataset"]
    model = bench.dense_model("char-transformer")
    assert model.input_shape == bench.geometry("char-transformer").shape == (80,)
    assert model.input_dtype == torch.long
    assert model(torch.zeros(2, 80, dtype=torch.long)).shape == (2, 81, 80)


def test_image_models_keep_their_input_and_random_batch():
    assert bench.geometry("cnn") == bench.geometry("resnet18-full") == bench.IMAGE
    assert bench.Geometry((1, 28, 28), 10, tokens=False) == bench.IMAGE
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, *bench.SHAPE, generator=g), torch.randint(0, 10, (4,), generator=g)
    got = bench.IMAGE.batch(4, torch.Generator().manual_seed(0))
    assert torch.equal(got[0], x) and torch.equal(got[1], y)  # the draws the bench always made
    assert bench.model_kinds("cnn") == list(bench.MODEL_KINDS)
    assert bench.model_kinds("transformer") == ["svd", "tucker", "tucker-b2", "tucker-be"]


def test_token_batches_are_windows_and_their_next_tokens():
    geo = bench.geometry("char-transformer")
    x, y = geo.batch(3, torch.Generator().manual_seed(0))
    assert x.dtype == y.dtype == torch.long and x.shape == y.shape == (3, 80)
    assert torch.equal(x[:, 1:], y[:, :-1])  # position t's target is token t + 1
    assert int(x.min()) >= 0 and int(torch.cat([x, y]).max()) < 81
    assert geo.inputs(2).dtype == torch.long
    # No convolution to factor: the conv-only kinds would time svd again.
    assert bench.model_kinds("char-transformer") == ["svd", "tucker-be"]


CHAR_OBJECTIVES = [
    "nested: prefix only (1 pass)",
    "nested: sandwich (3 passes; the default)",
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


def test_the_overhead_command_covers_image_and_char_models(tmp_path, capsys):
    out, js = tmp_path / "perf.md", tmp_path / "bench.json"
    argv = ["--sections", "overhead", "--models", "lenet5,char-transformer", "--batch", "2"]
    argv += ["--repeats", "1", "--warmup", "0", "--objectives", CHAR_OBJECTIVES[2]]
    bench.main([*argv, "--out", str(out), "--json", str(js)])
    printed = capsys.readouterr().out
    for name in ("lenet5", "char-transformer"):
        assert f"[bench] - {name} β=1 maestro step: {CHAR_OBJECTIVES[2]}: " in printed
        assert f"| {name} | maestro step: {CHAR_OBJECTIVES[2]} |" in out.read_text()
    groups = {r["group"] for r in json.loads(js.read_text())["overhead"]}
    assert groups == {"lenet5", "char-transformer"}


def test_models_section_times_the_char_transformer_with_width_tiers(monkeypatch):
    monkeypatch.setattr(bench, "merge_faster", lambda model, x: {})  # its own timing: skipped
    got = bench.measure_model("char-transformer", (0.25,), Timer(0, 1, "cpu"), 2)
    assert [(r.variant, r.beta) for r in got] == [
        ("dense", 1.0),
        ("svd", 0.25),
        ("tucker-be", 0.25),
        ("width", 0.25),
        ("width@tucker-be", 0.25),
    ]
    assert all(r.train_ms > 0 and r.infer64_ms > 0 for r in got)
    # each width tier at the width whose MACs match its kind's tier (at most, the harness's rule)
    assert got[3].macs <= got[1].macs and got[4].macs <= got[2].macs
    report = bench.render(
        parse_args(["--quick"]),
        {"models": got},
        {k: "" for k in ("started", "load-before", "load-after", "settings")}
        | {"seconds": 0.0, "commands": [""]},
    )
    assert "## Whole models (images 1×28×28, char-transformer 80 token ids;" in report
