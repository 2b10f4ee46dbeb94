"""End to end: `flwr run .` on Flower's simulation engine, then a resume of the same run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from simulations.run import LocalSuperLink

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture
def flwr_env(tmp_path):
    if shutil.which("flwr", path=str(BIN)) is None:
        pytest.skip("the flwr CLI is not installed beside this Python")
    # Our own managed SuperLink on free ports (never one left running elsewhere), no `uv sync`.
    with LocalSuperLink(tmp_path / "flwr-home", fast_malloc=False) as link:
        yield link.env


def flwr_run(env: dict, run_config: str, supernodes: int) -> str:
    cmd = [
        str(BIN / "flwr"),
        "run",
        str(ROOT),
        "--stream",
        "--federation-config",
        f"num-supernodes={supernodes} client-resources-num-cpus=1",
        "--run-config",
        run_config,
    ]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=400)
    return out.stdout + out.stderr


def rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_simulation_three_tiers_then_resume(flwr_env, fmnist_sample, tmp_path):
    out_dir = tmp_path / "runs"
    common = (
        f"data-dir='{fmnist_sample}' output-dir='{out_dir}' run-name='sim' model='lenet5' "
        "tier-fractions='0.25,0.5,1.0' clients-per-round=6 clients-per-eval=3 "
        "max-test-examples=400 batch-size=32 lr=0.05 partitioning='iid'"
    )
    log = flwr_run(flwr_env, f"{common} num-rounds=1", supernodes=6)
    folder = out_dir / "sim"
    assert (folder / "checkpoint.npz").exists(), log[-3000:]
    first = rows(folder)
    assert [r["round"] for r in first] == [1], log[-3000:]

    # Same run, more rounds: continues after round 1 and keeps it untouched.
    log = flwr_run(flwr_env, f"{common} num-rounds=2 resume=true", supernodes=6)
    result = rows(folder)
    assert [r["round"] for r in result] == [1, 2], log[-3000:]
    assert result[0] == first[0]
    for row in result:
        assert set(row["tiers"]) == {"0.25", "0.5", "1"}
        # max-test-examples=400: each accuracy is a whole number of right images out of 400.
        assert all(
            abs(m["accuracy"] * 400 - round(m["accuracy"] * 400)) < 1e-6
            for m in row["tiers"].values()
        )
        assert row["rejected"] == []
        fractions = {c["rank-fraction"] for c in row["clients"]}
        assert fractions == {0.25, 0.5, 1.0}, row["clients"]
        assert row["federated"], "federated evaluation on local splits reported nothing"
    # Payloads shrink with the budget: bytes for β=0.25 < β=0.5 < β=1.
    tiers = result[-1]["tiers"]
    assert tiers["0.25"]["bytes-down"] < tiers["0.5"]["bytes-down"] < tiers["1"]["bytes-down"]
    # Two short rounds on 2,400 images: the full model is above chance (10 %), not yet good.
    assert tiers["1"]["accuracy"] > 0.15
    assert (folder / "summary.md").read_text().count("| 0.") >= 2
    assert (folder / "accuracy.png").stat().st_size > 1000
    config = json.loads((folder / "config.json").read_text())
    assert config["num-rounds"] == 2 and config["resume"] is True
