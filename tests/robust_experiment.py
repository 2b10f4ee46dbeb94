"""The sign-flip experiment: 12 in-process nodes, 3 send their honest update flipped and × 1.9.

Runs the ServerApp's ``main`` over the test suite's fake grid (the real ClientApp handlers, no
Ray) on a slice of the real Fashion-MNIST, once per aggregation rule, with and without the
attackers; prints each run's test accuracy per tier after every evaluated round and the server's
aggregation seconds per round. ``tests/server/test_robust_experiment.py`` runs the fast case;
the measurements in docs/trust.md come from the command line::

    PYTHONPATH=$PWD .venv/bin/python -m tests.robust_experiment --rounds 10 --seeds 0 1

``--task shakespeare`` runs it on the character task instead: the real corpus (``make data``)
split over the 12 nodes by roles (about 83 roles each), the character Transformer of
``simulations/conf/shakespeare.toml`` with its local training settings, and the server's
evaluation on a fixed sample of test windows.
"""

from __future__ import annotations

import argparse
import json
import time
import tomllib
from pathlib import Path
from tempfile import TemporaryDirectory

import torch
from flwr.app import Context, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from maestro_common.app.config import AGGREGATIONS, RunConfig
from server import server_app
from tests.adversary import flip_train
from tests.conftest import write_fmnist_sample
from tests.fakegrid import FakeGrid

NODES = 12
# One per tier of "0.25,0.5,1.0" under seed 0 (β = 0.25, 0.5, 1): a quarter of the holders of
# every coordinate. {1, 5, 9} puts two of the four β = 1 nodes among them (--attackers 1 5 9).
ATTACKERS = frozenset({1, 2, 5})
TRAIN, TEST = 3600, 1000
SHAKESPEARE_CONF = Path(__file__).parents[1] / "simulations" / "conf" / "shakespeare.toml"
# The character task's settings taken from its experiment file; the rest is this runner's.
SHAKESPEARE_KEYS = (
    "model",
    "model-options",
    "dataset",
    "local-steps",
    "batch-size",
    "optimizer",
    "lr",
)


def shakespeare_changes(test_windows: int = 500) -> dict:
    """RunConfig changes that make a run the character task of the experiment file."""
    with SHAKESPEARE_CONF.open("rb") as f:
        conf = tomllib.load(f)
    changes = {k.replace("-", "_"): conf[k] for k in SHAKESPEARE_KEYS}
    return {**changes, "data_dir": "", "max_test_examples": test_windows}


def run(
    out: Path,
    data: Path,
    name: str,
    attacked: bool,
    rounds: int = 3,
    seed: int = 0,
    attackers: frozenset[int] = ATTACKERS,
    **changes,
) -> list[dict]:
    """One run; its metrics.jsonl rows."""
    changes = {"model": "cnn", "data_dir": str(data), **changes}
    cfg = RunConfig(
        tier_fractions="0.25,0.5,1.0",
        num_rounds=rounds,
        clients_per_round=NODES,
        min_nodes=NODES,
        device="cpu",
        seed=seed,
        output_dir=str(out),
        run_name=name,
        node_wait=5.0,
        **changes,
    )
    nodes = {1000 + 17 * i: {"partition-id": i, "num-partitions": NODES} for i in range(NODES)}
    grid = FakeGrid(nodes, cfg.to_run_config(), train=flip_train(attackers) if attacked else None)
    server_app.main(grid, Context(1, 0, {}, RecordDict(), cfg.to_run_config()))
    return [json.loads(x) for x in (out / name / "metrics.jsonl").read_text().splitlines()]


def best_tier(rows: list[dict]) -> float:
    """The best tier's test accuracy in the last row."""
    return max(m["accuracy"] for m in rows[-1]["tiers"].values())


def bench_rules(repeats: int = 3) -> dict[str, float]:
    """Seconds per call of ``aggregate_nested`` for each rule on the CNN with 12 nested replies
    (4 per tier of "0.25,0.5,1.0"), the best of ``repeats``."""
    import numpy as np

    from maestro_common.ml.prefix import take_prefix
    from server.aggregation import Rule, aggregate_nested
    from server.model_ops import ModelOps

    cfg = RunConfig(model="cnn", tier_fractions="0.25,0.5,1.0", device="cpu")
    ops = ModelOps(cfg)
    glob = ops.initial_arrays()
    shapes = {k: v.shape for k, v in glob.items()}
    rng = np.random.default_rng(0)
    replies = []
    for i in range(NODES):
        prefix = take_prefix(glob, ops.shapes(shapes, cfg.tiers[i % 3]))
        noisy = {
            k: (v + 0.01 * rng.standard_normal(v.shape)).astype(v.dtype)
            if v.dtype.kind == "f"
            else v
            for k, v in prefix.items()
        }
        replies.append((noisy, 100.0 + i))
    out = {}
    for name in AGGREGATIONS:
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            aggregate_nested(glob, replies, Rule(name, 0.25))
            best = min(best, time.perf_counter() - start)
        out[name] = round(best, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--rules", nargs="+", default=list(AGGREGATIONS), choices=AGGREGATIONS)
    parser.add_argument("--runs", nargs="+", default=["honest", "flip"], choices=["honest", "flip"])
    parser.add_argument("--attackers", type=int, nargs="+", default=sorted(ATTACKERS))
    parser.add_argument("--trim-fraction", type=float, default=0.25)
    parser.add_argument("--clip-radius", type=float, default=1.0)
    parser.add_argument("--bench", action="store_true", help="time aggregate_nested per rule only")
    parser.add_argument(
        "--task",
        choices=["fmnist", "shakespeare"],
        default="fmnist",
        help="the CNN on a Fashion-MNIST slice, or the character task (real corpus)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.bench:
        print(json.dumps({"aggregate-seconds": bench_rules()}))
        return
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    with TemporaryDirectory() as tmp:
        data = write_fmnist_sample(Path(tmp) / "data", TRAIN, TEST)
        for seed in args.seeds:
            for rule in args.rules:
                for kind in args.runs:
                    name = f"{rule}-{kind}-s{seed}"
                    start = time.perf_counter()
                    rows = run(
                        Path(tmp),
                        data,
                        name,
                        kind == "flip",
                        args.rounds,
                        seed,
                        frozenset(args.attackers),
                        aggregation=rule,
                        trim_fraction=args.trim_fraction,
                        clip_radius=args.clip_radius,
                        **(shakespeare_changes() if args.task == "shakespeare" else {}),
                    )
                    agg = [r["aggregate-seconds"] for r in rows]
                    print(
                        json.dumps(
                            {
                                "run": name,
                                "best-tier": round(100 * best_tier(rows), 2),
                                "tiers": {
                                    b: round(100 * m["accuracy"], 2)
                                    for b, m in rows[-1]["tiers"].items()
                                },
                                "aggregate-seconds-per-round": round(sum(agg) / len(agg), 4),
                                "wall-seconds": round(time.perf_counter() - start, 1),
                            }
                        ),
                        flush=True,
                    )


if __name__ == "__main__":
    main()
