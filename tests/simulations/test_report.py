"""The comparison report: fake runs in tmp_path, the table's numbers, the PNGs."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from simulations.report import (
    PLOTS,
    bytes_per_client_round,
    comparison_table,
    final_accuracy,
    load_frame,
    load_runs,
    write_report,
)
from tests.simulations.report_runs import FINAL, fake_run


@pytest.fixture
def folders(tmp_path) -> list[Path]:
    runs = tmp_path / "runs"
    runs.mkdir()
    return [fake_run(runs, m, s) for m, s in FINAL]


def test_load_runs(folders):
    runs = load_runs(folders)
    assert [(r.method, r.seed) for r in runs] == list(FINAL)
    assert [row["round"] for row in runs[0].rows] == [1, 2, 3]
    assert runs[0].final["round"] == 3


def test_a_warmed_up_run_is_reported_apart_from_its_method(folders):
    config = folders[1] / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "dense-warmup": 0.6}))
    runs = load_runs(folders)
    assert [r.method for r in runs[:2]] == ["maestro", "maestro+warmup"]
    lines = comparison_table(runs).splitlines()
    # One seed each: no spread ("–", not "± 0.00").
    assert "| maestro | 0.2 | 70.00 ± – | 1 | 1,000 | 100 | 400 |" in lines
    assert "| maestro+warmup | 0.2 | 74.00 ± – | 1 | 1,000 | 100 | 400 |" in lines


def test_an_older_runs_removed_key_is_tolerated_at_its_default_only(folders):
    # Runs from before hybrid-width was removed store it (false): they load as before.
    config = folders[0] / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "hybrid-width": False}))
    runs = load_runs(folders)
    assert runs[0].method == "maestro" and "hybrid-width" not in runs[0].config
    # A run of the removed variant cannot be told apart from the method any more: refused.
    config.write_text(json.dumps({**json.loads(config.read_text()), "hybrid-width": True}))
    with pytest.raises(ValueError, match=r"config.json: run-config key 'hybrid-width' was removed"):
        load_runs(folders)


def test_load_runs_needs_method_and_seed(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"seed": 0}))
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="lacks method"):
        load_runs([tmp_path])


def test_table_has_every_method_and_tier_with_mean_over_seeds(folders):
    table = comparison_table(load_runs(folders))
    lines = table.splitlines()
    # 0.70 and 0.74: mean 72.00 %, sample std 2.83 %, n = 2; maestro's own MACs at β=0.2.
    assert "| maestro | 0.2 | 72.00 ± 2.83 | 2 | 1,000 | 100 | 400 |" in lines
    assert "| maestro | 1 | 87.00 ± 1.41 | 2 | 5,000 | 500 | 2,000 |" in lines
    assert "| fedavg-fit | 0.2 | 61.00 ± 1.41 | 2 | 5,000 | 500 | – (no client) |" in lines
    assert "| fedavg-fit | 1 | 90.00 ± 0.00 | 2 | 5,000 | 500 | 2,000 |" in lines
    # Known methods in a fixed order: maestro before the FedAvg baselines.
    assert table.index("| maestro |") < table.index("| fedavg-fit |")


def test_bytes_per_client_round(folders):
    runs = [r for r in load_runs(folders) if r.method == "maestro"]
    assert bytes_per_client_round(runs, "0.2") == 400.0  # 200 down + 200 up
    assert bytes_per_client_round(runs, "0.5") is None


def test_write_report(folders, tmp_path):
    command = "python -m simulations.run --methods maestro,fedavg-fit --seeds 0,1"
    for folder in folders:  # one invocation trained rounds 1..3 of every run
        record = {
            "request": {},
            "invocations": [{"command": command, "commit": "abc", "from-round": 1}],
        }
        (folder / "harness.json").write_text(json.dumps(record))
    path = write_report(folders, tmp_path / "out", "Maestro vs FedAvg", commit="def", last_k=1)
    text = path.read_text()
    assert path == tmp_path / "out" / "report.md"
    assert text.startswith("# Maestro vs FedAvg\n")
    assert f"| maestro-seed0 | 1–3 | `{command}` | abc |" in text
    assert "Report written at commit `def`." in text
    assert "| maestro | 0.2 | 72.00 ± 2.83 |" in text
    frame = pd.read_csv(tmp_path / "out" / "results.csv")
    # 4 runs × 2 evaluated rounds × 2 tiers
    assert len(frame) == 16
    assert set(frame.columns) >= {"run", "method", "seed", "round", "tier", "accuracy-pct"}
    for name in PLOTS:
        png = tmp_path / "out" / name
        assert f"]({name})" in text
        assert png.read_bytes()[:4] == b"\x89PNG"
        assert png.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"


def test_headline_is_the_mean_of_the_last_k_evaluations(folders):
    runs = load_runs(folders)
    # maestro seed 0 at β=0.2: rounds 1 and 3 evaluated, 0.60 then 0.70.
    assert final_accuracy(runs[:1], "0.2", last_k=1) == pytest.approx([0.70])
    assert final_accuracy(runs[:1], "0.2", last_k=2) == pytest.approx([0.65])
    assert final_accuracy(runs[:1], "0.2", last_k=5) == pytest.approx([0.65])
    table = comparison_table(runs, last_k=2)
    # seeds: (0.60+0.70)/2 = 0.65 and (0.64+0.74)/2 = 0.69 -> 67.00 ± 2.83
    assert "| maestro | 0.2 | 67.00 ± 2.83 | 2 |" in table
    assert "mean of last 2 evals" in table


def test_load_frame_is_tidy_and_takes_out_folders(folders):
    frame = load_frame(folders[0].parent.parent)  # the --out folder holding runs/
    assert len(frame) == 4 * 2 * 2
    assert not frame.duplicated(["run", "round", "tier"]).any()
    row = frame[(frame.run == "maestro-seed1") & (frame["round"] == 3) & (frame.tier == "1")]
    assert row["accuracy-pct"].item() == pytest.approx(88.0)  # in %
    assert sorted(frame["round"].unique()) == [1, 3]


def test_provenance_names_the_command_of_each_span_of_rounds(tmp_path):
    from simulations.report import Run, provenance_section

    record = {
        "invocations": [
            {"command": "first", "commit": "c1", "from-round": 1},
            {"command": "failed", "commit": "c2", "from-round": 3},  # recorded nothing
            {"command": "resume", "commit": "c2", "from-round": 3},
        ]
    }
    folder = tmp_path / "m-seed0"
    folder.mkdir()
    (folder / "harness.json").write_text(json.dumps(record))
    run = Run(folder, {"method": "m", "seed": 0}, tuple({"round": r} for r in (1, 2, 3, 4)))
    text = provenance_section([run], "c2")
    assert "| m-seed0 | 1–2 | `first` | c1 |" in text
    assert "| m-seed0 | 3–4 | `resume` | c2 |" in text
    assert "failed" not in text
    bare = Run(tmp_path, {"method": "m", "seed": 0}, ({"round": 1},))
    assert "unknown (no harness.json)" in provenance_section([bare], "c2")


def test_bytes_per_tier_read_the_server_written_beta_not_the_tier_index():
    from simulations.report import bytes_per_client_round

    row = {"clients": [{"tier": 0, "tier-beta": 0.2, "bytes-down": 10, "bytes-up": 30}]}
    runs = [SimpleNamespace(rows=[row])]
    assert bytes_per_client_round(runs, "0.2") == 40
    assert bytes_per_client_round(runs, "0") is None


def test_summary_has_one_row_per_method_tier_and_seed(folders):
    from simulations.report import summary_frame

    runs = load_runs(folders)
    for run in runs:
        run.config["lr"] = 0.05 if run.method == "maestro" else 0.1
    frame = summary_frame(runs, last_k=2)
    assert len(frame) == 2 * 2 * 2 and not frame.duplicated(["method", "beta", "seed"]).any()
    assert list(frame.columns[:4]) == ["method", "beta", "seed", "accuracy-pct"]
    row = frame[(frame.method == "maestro") & (frame.beta == 0.2) & (frame.seed == 1)].iloc[0]
    # Rounds 1 and 3 evaluated: 0.64 then 0.74, in %.
    assert row["accuracy-pct"] == pytest.approx(69.0) and row.evals == 2 and row["last-round"] == 3
    assert (row.lr, row.macs, row.params) == (0.05, 1_000, 100)
    assert row["bytes-per-round"] == 800 and row["client-bytes-per-round"] == 400
    fit = frame[(frame.method == "fedavg-fit") & (frame.beta == 0.2)].iloc[0]
    # No client of tier 0.2 took part: the tier's payload is still defined, the measure is not.
    assert fit["bytes-per-round"] == 4_000 and pd.isna(fit["client-bytes-per-round"])
    assert summary_frame(runs, last_k=1)["accuracy-pct"].max() == pytest.approx(90.0)


def test_a_character_runs_last_position_accuracy_is_summarised_beside_its_accuracy(folders):
    from simulations.report import summary_frame

    runs = load_runs(folders)
    assert summary_frame(runs)["accuracy-last-pct"].isna().all()  # images have none
    run = runs[0]
    for k, row in enumerate(run.evaluated):
        for m in row["tiers"].values():
            m["accuracy-last"] = 0.3 + 0.1 * k
    frame = summary_frame([run], last_k=2)
    assert frame["accuracy-last-pct"].tolist() == pytest.approx([35.0] * len(frame))


def test_report_writes_summary_csv_and_accuracy_against_bytes(folders, tmp_path):
    write_report(folders, tmp_path / "out", "t", last_k=3)
    frame = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert len(frame) == 8 and {"method", "beta", "seed", "accuracy-pct"} <= set(frame.columns)
    assert (tmp_path / "out" / "accuracy-vs-bytes.png").read_bytes()[:4] == b"\x89PNG"
    assert "](accuracy-vs-bytes.png)" in (tmp_path / "out" / "report.md").read_text()


def test_accuracy_against_bytes_places_each_tier_at_its_payload(folders, tmp_path, monkeypatch):
    from simulations import report

    bars = []
    monkeypatch.setattr(
        report.plt.Axes, "errorbar", lambda self, x, y, yerr, **kw: bars.append((x, y, yerr))
    )
    report.plot_accuracy_vs_bytes(load_runs(folders), tmp_path / "b.png", last_k=1)
    # maestro β=0.2: payload 400 + 400 bytes, 72 % ± 2.83 over two seeds.
    x, y, err = bars[0]
    assert (x, y, err) == (800, pytest.approx(72.0), pytest.approx(2.828, abs=1e-3))
    assert sorted(b[0] for b in bars) == [800, 4_000, 4_000, 4_000]


def test_cli_writes_the_summary(folders, tmp_path):
    from simulations.report import main

    main(
        [
            str(folders[0].parent.parent),
            "--csv",
            str(tmp_path / "r.csv"),
            "--summary",
            str(tmp_path / "s.csv"),
            "--last-evals",
            "1",
        ]
    )
    frame = pd.read_csv(tmp_path / "s.csv")
    assert len(frame) == 8 and frame["accuracy-pct"].max() == pytest.approx(90.0)


def _selection(method: str, lr: float, lrs: str = "0.02,0.05") -> dict:
    grid = [{"lr": lr, "mean": 0.8, "val-accuracy": {"1": 0.8}}]
    settings = {"lrs": lrs, "select-rounds": 2, "select-seed": 0, "last-k": 3}
    return {"settings": settings, "methods": {method: {"lr": lr, "grid": grid}}}


def _harness_out(root: Path, method: str, seeds: tuple[int, ...], selection: dict) -> Path:
    (root / "runs").mkdir(parents=True)
    for seed in seeds:
        fake_run(root / "runs", method, seed)
    (root / "lr-selection.json").write_text(json.dumps(selection))
    return root


def test_cli_reports_harness_folders_run_in_parallel_as_one(tmp_path):
    from simulations.report import main

    a = _harness_out(tmp_path / "a", "maestro", (0, 1), _selection("maestro", 0.05))
    b = _harness_out(tmp_path / "b", "fedavg-fit", (0, 1), _selection("fedavg-fit", 0.02))
    out = tmp_path / "both"
    main([str(a), str(b), "--csv", str(tmp_path / "r.csv"), "--report", str(out)])
    text = (out / "report.md").read_text()
    # Both methods in one table, both sweeps in the selection table, every plot written.
    assert "| maestro | **0.05** |" in text and "| fedavg-fit | **0.02** |" in text
    assert len(pd.read_csv(out / "summary.csv")) == 8
    assert all((out / name).read_bytes()[:4] == b"\x89PNG" for name in PLOTS)


def test_cli_refuses_to_report_sweeps_with_other_settings_as_one(tmp_path, capsys):
    from simulations.report import main

    a = _harness_out(tmp_path / "a", "maestro", (0,), _selection("maestro", 0.05))
    b = _harness_out(tmp_path / "b", "fedavg-fit", (0,), _selection("fedavg-fit", 0.1, "0.1,0.2"))
    with pytest.raises(SystemExit):
        main([str(a), str(b), "--csv", str(tmp_path / "r.csv"), "--report", str(tmp_path / "o")])
    assert "report them apart" in capsys.readouterr().err
    assert not (tmp_path / "o" / "report.md").exists()


def _bench() -> dict:
    """simulations.bench rows for the CNN: step ms per variant and tier (dense: 10 ms)."""
    ms = {("dense", 1.0): 10.0, ("svd", 0.2): 3.0, ("svd", 1.0): 11.0, ("width", 0.2): 4.0}
    ms[("width", 1.0)] = 10.0
    rows = [
        {"group": "cnn", "variant": v, "beta": b, "train_ms": t, "macs": int(100 * t)}
        for (v, b), t in ms.items()
    ]
    return {"meta": {"settings": "median of 5"}, "models": rows}


def test_report_gains_a_time_axis_from_the_benchmark(folders, tmp_path, monkeypatch):
    from simulations import report

    bars = []
    monkeypatch.setattr(
        report.plt.Axes, "errorbar", lambda self, x, y, yerr, **kw: bars.append((x, y))
    )
    write_report(folders, tmp_path / "out", "t", last_k=1, bench=_bench())
    text = (tmp_path / "out" / "report.md").read_text()
    # maestro runs the svd variant, fedavg-fit the width one: each tier at its own step time.
    assert "| β | maestro step ms | maestro MACs ratio | maestro passes/step | fedavg-fit" in text
    # passes/step: the default config's nested step (the CNN's sandwich at β = 1: 1.87 passes of
    # the prefix; nothing below the smallest tier), fedavg-fit's one pass at its width.
    assert "| 0.2 | 3.0 | 0.30 | 1.00 | 4.0 | 0.40 | 1.00 |" in text
    assert "| 1 | 11.0 | 1.10 | 1.87 | 4.0 | 0.40 | 1.00 |" in text
    assert f"]({report.STEP_TIME_PLOT})" in text
    step = [b for b in bars if b[0] in (3.0, 11.0, 4.0, 10.0)]
    # fedavg-fit trains the weakest tier's width at every tier: 4 ms at both.
    assert sorted(x for x, _ in step) == [3.0, 4.0, 4.0, 11.0]


def test_a_variant_is_timed_as_its_own_factorization(folders, tmp_path):
    config = folders[1] / "config.json"
    changes = {"conv-factorization": "tucker", "dense-warmup": 0.6}
    config.write_text(json.dumps({**json.loads(config.read_text()), **changes}))
    bench = _bench()
    bench["models"] += [
        {"group": "cnn", "variant": "tucker", "beta": b, "train_ms": t, "macs": int(100 * t)}
        for b, t in ((0.2, 2.0), (1.0, 17.0))
    ]
    write_report(folders, tmp_path / "out", "t", last_k=1, bench=bench)
    text = (tmp_path / "out" / "report.md").read_text()
    assert "maestro+tucker+warmup step ms" in text and "No time axis" not in text
    # maestro, fedavg-fit, the variant: each with its passes per step (one at the smallest tier)
    assert "| 0.2 | 3.0 | 0.30 | 1.00 | 4.0 | 0.40 | 1.00 | 2.0 | 0.20 | 1.00 |" in text


def test_no_time_axis_for_a_model_the_benchmark_did_not_measure(folders, tmp_path):
    bench = _bench()
    for row in bench["models"]:
        row["group"] = "lenet5"
    write_report(folders, tmp_path / "out", "t", last_k=1, bench=bench)
    text = (tmp_path / "out" / "report.md").read_text()
    assert "No time axis: no benchmark rows for model 'cnn'" in text


def test_report_pairs_methods_by_seed_when_asked(folders, tmp_path):
    write_report(folders, tmp_path / "out", "t", last_k=1, paired_against=["fedavg-fit"])
    text = (tmp_path / "out" / "report.md").read_text()
    # maestro − fedavg-fit at β = 1: 86 − 90 and 88 − 90 (seeds 0, 1).
    assert "| maestro | fedavg-fit | 1 | 2 | 0,1 | -4.00 / -2.00 |" in text
    write_report(folders, tmp_path / "plain", "t", last_k=1)
    assert "Paired by seed" not in (tmp_path / "plain" / "report.md").read_text()


def test_matched_compute_section_prices_each_tiers_client_round(tmp_path):
    from maestro_common.app.config import RunConfig
    from maestro_common.app.cost import match_step_macs, tier_step_macs
    from simulations.report import COMPUTE_PLOT, matched_compute_section

    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    settings = {
        "model": "lenet5",
        "tier-fractions": "0.2,1.0",
        "compute-match": "fjord",
        "batch-size": 10,
        "local-steps": 5,
    }
    for method in ("maestro", "fedavg-fit"):
        folder = fake_run(runs_dir, method, 0)
        (folder / "config.json").write_text(json.dumps({"method": method, "seed": 0, **settings}))
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        for row in rows:
            row["clients"] = [
                {"rank-fraction": 0.2, "tier-beta": 0.2, "num-examples": 100},
                {"rank-fraction": 1.0, "tier-beta": 1.0, "num-examples": 100},
            ]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = matched_compute_section(load_runs(sorted(runs_dir.iterdir())), tmp_path)
    # The configs lack sub-models and transmission: older runs, which ran the sandwich on prefixes.
    cfg = RunConfig(method="maestro", **{k.replace("-", "_"): v for k, v in settings.items()})
    cfg = cfg.replace(sub_models="sandwich", transmission="prefix")
    own, match = tier_step_macs(cfg, 1.0), match_step_macs(cfg, 1.0)
    steps = round(5 * match / own)  # fewer steps: the nested step costs more than FjORD's
    lines = text.splitlines()
    row = next(line for line in lines if line.startswith("| maestro+compute-fjord | 1 |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[4:7] == [f"{own:,.0f}", f"{steps:.1f}", f"{3 * own * 10 * steps:,.0f}"]
    assert abs(float(cells[7]) - 1) < own / (2 * 5 * match)  # within half a step of FjORD's
    fit = next(line for line in lines if line.startswith("| fedavg-fit+compute-fjord | 0.2 |"))
    assert abs(float(fit.split("|")[8]) - 1) < 0.1  # the weakest width: FjORD's cost at 0.2
    assert (tmp_path / COMPUTE_PLOT).exists()
    # Runs that do not match compute get no section.
    assert matched_compute_section(load_runs([]), tmp_path) == ""
