"""The comparison report: fake runs in tmp_path, the table's numbers, the PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulations.report import (
    PLOTS,
    bytes_per_client_round,
    comparison_table,
    load_runs,
    write_report,
)

# Final accuracy per (method, seed, tier); earlier rounds are 0.1 lower.
FINAL = {
    ("maestro", 0): {"0.2": 0.70, "1": 0.86},
    ("maestro", 1): {"0.2": 0.74, "1": 0.88},
    ("fedavg-fit", 0): {"0.2": 0.60, "1": 0.90},
    ("fedavg-fit", 1): {"0.2": 0.62, "1": 0.90},
}
COST = {  # (macs, params) per method and tier: a method's own model at a tier label
    "maestro": {"0.2": (1_000, 100), "1": (5_000, 500)},
    "fedavg-fit": {"0.2": (5_000, 500), "1": (5_000, 500)},
}


def fake_run(root: Path, method: str, seed: int) -> Path:
    folder = root / f"{method}-seed{seed}"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"method": method, "seed": seed}))
    # FedAvg on the devices that fit: only the full tier ever trains.
    client_tiers = [0.2, 1.0] if method == "maestro" else [1.0]
    rows = []
    for rnd in (1, 2, 3):
        row = {
            "round": rnd,
            "virtual-clock": 100.0 * rnd + seed,
            "virtual-seconds": 100.0,
            "wall-seconds": 0.1,
            "clients": [
                {"rank-fraction": b, "bytes-down": int(1000 * b), "bytes-up": int(1000 * b)}
                for b in client_tiers
            ],
        }
        if rnd != 2:  # round 2 is not evaluated
            row["tiers"] = {
                tier: {
                    "accuracy": acc - (0.1 if rnd < 3 else 0.0),
                    "loss": 1.0,
                    "macs": COST[method][tier][0],
                    "params": COST[method][tier][1],
                    "bytes-down": 4 * COST[method][tier][1],
                    "bytes-up": 4 * COST[method][tier][1],
                }
                for tier, acc in FINAL[(method, seed)].items()
            }
        rows.append(row)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


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
    command = "python -m simulations.compare --methods maestro,fedavg-fit --seeds 0,1"
    path = write_report(folders, tmp_path / "out", "Maestro vs FedAvg", command)
    text = path.read_text()
    assert path == tmp_path / "out" / "report.md"
    assert text.startswith("# Maestro vs FedAvg\n")
    assert command in text
    assert "| maestro | 0.2 | 72.00 ± 2.83 |" in text
    for name in PLOTS:
        png = tmp_path / "out" / name
        assert f"]({name})" in text
        assert png.read_bytes()[:4] == b"\x89PNG"


def test_timing_table_splits_wall_time(tmp_path):
    from simulations.report import Run, timing_table

    rows = [
        {
            "round": r,
            "wall-seconds": 10.0,
            "eval-seconds": 2.0,
            "aggregate-seconds": 0.5,
            "virtual-seconds": 100.0,
            "virtual-clock": 100.0 * r,
            "clients": [{"train-seconds": 3.0}, {"train-seconds": 3.0}],
            "tiers": {"0.5": {"accuracy": 0.5 + 0.2 * r}, "1": {"accuracy": 0.7 + 0.1 * r}},
        }
        for r in (1, 2)
    ]
    run = Run(tmp_path, {"method": "maestro", "seed": 0}, rows)
    table = timing_table([run], concurrency=2, target=0.85)
    line = next(x for x in table.splitlines() if x.startswith("| maestro"))
    # per round: wall 10, compute 6/2 = 3, eval 2, aggregation 0.5 (5 %), overhead 4.5 (45 %)
    # 85 %: the full tier at round 2 (200 s), the smallest at round 2 (0.9 ≥ 0.85, 200 s)
    assert line == "| maestro | 10.00 | 3.00 | 2.00 | 5.00 | 45.0 | 100.0 | 0.06 / 0.06 |"
