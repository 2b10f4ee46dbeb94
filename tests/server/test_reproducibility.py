"""Rounds 1..k of a run do not depend on num-rounds (nor on anything else a longer run changes).

The real ServerApp main loop runs in-process over the fake grid, once with num-rounds=2 and once
with num-rounds=3; every number of rounds 1 and 2 must be bit-identical.
"""

from __future__ import annotations

import json

import pytest
from flwr.app import Context, RecordDict

from server import server_app
from tests.fakegrid import FakeGrid
from tests.idx_data import write_random_idx

pytestmark = pytest.mark.usefixtures("task_identity")

# Wall-clock times and process memory differ between any two runs; nothing else may.
TIMES = {
    "wall-seconds",
    "eval-seconds",
    "fed-eval-seconds",
    "aggregate-seconds",
    "train-seconds",
    "handle-seconds",
    "handle-start",
    "train-start",
    "worker-pid",
    "peak-rss-mb",
}


def _strip_times(value):
    if isinstance(value, dict):
        return {k: _strip_times(v) for k, v in value.items() if k not in TIMES}
    if isinstance(value, list):
        return [_strip_times(v) for v in value]
    return value


def _run(tmp_path, data_dir, num_rounds: int) -> list[dict]:
    run_config = {
        "model": "lenet5",
        "data-dir": str(data_dir),
        "tier-fractions": "0.5,1.0",
        "partitioning": "iid",
        "clients-per-round": 2,
        "clients-per-eval": 2,
        "eval-every": 2,  # round 2 is evaluated in both runs, round 3 as the last one
        "max-test-examples": 50,
        "device": "cpu",
        "num-rounds": num_rounds,
        "output-dir": str(tmp_path / f"rounds{num_rounds}"),
        "run-name": "r",
        "min-nodes": 3,
    }
    nodes = {1_000_003 + 7919 * i: {"partition-id": i, "num-partitions": 3} for i in range(3)}
    grid = FakeGrid(nodes, run_config)
    context = Context(
        run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config
    )
    server_app.main(grid, context)
    lines = (tmp_path / f"rounds{num_rounds}" / "r" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines]


def test_first_rounds_do_not_depend_on_num_rounds(tmp_path):
    write_random_idx(tmp_path, 240, 50)
    short = _run(tmp_path, tmp_path, 2)
    long = _run(tmp_path, tmp_path, 3)
    assert [r["round"] for r in short] == [1, 2] and [r["round"] for r in long] == [1, 2, 3]
    # Round 2 is an evaluation round in both (eval-every=2), round 3 only in the long run.
    assert "tiers" in short[1] and "tiers" in long[1] and "tiers" in long[2]
    for a, b in zip(short, long[:2], strict=True):
        assert _strip_times(a) == _strip_times(b)
    assert short[1]["tiers"]["1"]["loss"] == long[1]["tiers"]["1"]["loss"]
