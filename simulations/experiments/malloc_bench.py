"""Measure glibc malloc tuning on client training steps: default vs the harness's fast setting.

Each measurement is a fresh process (glibc reads the variables at start-up) that trains the model
for a fixed number of steps on random data, as a client does; settings alternate A/B/A/B so a
load change on the machine hits both. Run it on an otherwise idle machine::

    python -m simulations.experiments.malloc_bench --model cnn --steps 150 --repeats 3
    python -m simulations.experiments.malloc_bench --model cnn --steps 5 --repeats 3 --mode eval
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from simulations.harness.superlink import FAST_MALLOC

CHILD = r"""
import json, sys, time, torch
from maestro_common.lowrank.decompose import decompose
from maestro_common.lowrank.layers import low_rank_layers
from maestro_common.ml.models import build_model
from maestro_common.lowrank.samplers import make_sampler
from maestro_common.lowrank.training import TrainSettings, evaluate, train
model_name, steps, factored, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
torch.set_num_threads(1)
torch.manual_seed(0)
if mode.endswith("-mallopt"):
    from maestro_common.app.malloc import tune_malloc
    assert tune_malloc()
    mode = mode.removesuffix("-mallopt")
model = build_model(model_name)
# The settings docs/results.md was measured with (before defaults followed the run config).
SETTINGS = TrainSettings(batch_size=32, lr=0.05, max_grad_norm=0.0)
sampler = None
if factored:
    decompose(model)
    sampler = make_sampler("maestro", {n: m.rank for n, m in low_rank_layers(model).items()})
if mode == "train":
    x, y = torch.randn(32 * steps, 1, 28, 28), torch.randint(0, 10, (32 * steps,))
    train(model, x[:320], y[:320], SETTINGS, sampler)  # warm-up
    t = time.perf_counter()
    train(model, x, y, SETTINGS, sampler)
else:  # the server's evaluation: batches of 1000, far above glibc's mmap threshold
    x, y = torch.randn(1000 * steps, 1, 28, 28), torch.randint(0, 10, (1000 * steps,))
    evaluate(model, x[:1000], y[:1000])
    t = time.perf_counter()
    evaluate(model, x, y, batch_size=1000)
print(json.dumps({"seconds": time.perf_counter() - t}))
"""


def measure(model: str, steps: int, factored: bool, fast: bool, mode: str = "train") -> float:
    env = {k: v for k, v in os.environ.items() if k not in FAST_MALLOC}
    if fast and not mode.endswith("-mallopt"):
        env.update(FAST_MALLOC)
    elif not fast:
        mode = mode.removesuffix("-mallopt")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, model, str(steps), "1" if factored else "0", mode],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(
        prog="python -m simulations.experiments.malloc_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default="cnn")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dense", action="store_true", help="train the dense model (default: Maestro)")
    p.add_argument(
        "--mode",
        choices=("train", "eval", "train-mallopt", "eval-mallopt"),
        default="train",
        help="train: client steps of batch 32; eval: evaluation batches of 1000; with "
        "-mallopt, 'fast' applies the settings by mallopt() instead of the environment",
    )
    args = p.parse_args(argv)
    times: dict[str, list[float]] = {"default": [], "fast": []}
    for _ in range(args.repeats):
        for name in ("default", "fast"):
            times[name].append(
                measure(args.model, args.steps, not args.dense, name == "fast", args.mode)
            )
    med = {k: statistics.median(v) for k, v in times.items()}
    kind = "dense" if args.dense else "maestro"
    what = (
        "training steps of batch 32"
        if args.mode.startswith("train")
        else "evaluation batches of 1000"
    )
    print(f"{args.model} ({kind}), {args.steps} {what}, 1 thread, median of {args.repeats} runs:")
    for name, v in times.items():
        print(f"  {name:8s} {med[name]:.2f} s   (runs: {', '.join(f'{t:.2f}' for t in v)})")
    print(f"  default / fast = {med['default'] / med['fast']:.2f}x")
    return med


if __name__ == "__main__":
    main()
