"""The plain Flower FedAvg baseline: same data and settings, Flower's own strategy, timed."""

import json
import os
import subprocess
import sys
from pathlib import Path

from simulations.experiments.plain_flower import app_keys, plain_config

ROOT = Path(__file__).resolve().parents[3]


def test_the_plain_app_takes_the_shared_keys_and_names_the_rest(tmp_path):
    conf = {"model": "cnn", "method": "maestro", "tier-fractions": "0.2,1.0", "lr": 0.05}
    cfg, dropped = plain_config(conf, {"num-rounds": 4}, tmp_path / "m.jsonl")
    assert cfg == {
        "model": "cnn",
        "lr": 0.05,
        "num-rounds": 4,
        "output-file": str(tmp_path / "m.jsonl"),
    }
    assert dropped == ["method", "tier-fractions"]
    assert {"partitioning", "alpha", "seed", "batch-size", "local-epochs"} <= app_keys()


def test_a_plain_flower_run_records_its_rounds_in_the_harness_schema(tmp_path, fmnist_sample):
    conf = tmp_path / "tiny.toml"
    conf.write_text(
        f'model = "lenet5"\ndata-dir = "{fmnist_sample}"\nnum-rounds = 2\nclients-per-round = 2\n'
        'max-test-examples = 100\npartitioning = "iid"\neval-every = 2\nmethod = "maestro"\n'
    )
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "simulations.experiments.plain_flower", "--conf", str(conf)]
    cmd += ["--supernodes", "2", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": "local"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "not used by the plain app (maestro-fl only): method" in done.stdout
    assert "| plain-fedavg |" in done.stdout
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2]
    assert "tiers" not in rows[0] and 0 <= rows[1]["tiers"]["1"]["accuracy"] <= 1
    for row in rows:
        assert len(row["clients"]) == 2 and row["wall-seconds"] > 0
        for c in row["clients"]:
            assert c["handle-seconds"] >= c["train-seconds"] > 0 and c["worker-pid"] > 0
            assert row["train-start"] <= c["handle-start"]
