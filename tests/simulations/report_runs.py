"""Fake run folders that the report's tests share: two methods, two seeds, three rounds."""

from __future__ import annotations

import json
from pathlib import Path

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
