"""Measure glibc malloc tuning on client training steps: default vs the harness's fast setting.

Each measurement is a fresh process (glibc reads the variables at start-up) that trains the model
for a fixed number of steps on random data, as a client does; settings alternate A/B/A/B so a
load change on the machine hits both. Run it on an otherwise idle machine::

    python -m simulations.malloc_bench --model cnn --steps 150 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from simulations.run import FAST_MALLOC

CHILD = r"""
import json, sys, time, torch
from maestro_common.decompose import decompose
from maestro_common.layers import low_rank_layers
from maestro_common.models import build_model
from maestro_common.samplers import make_sampler
from maestro_common.training import TrainSettings, train
model_name, steps, factored = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
torch.set_num_threads(1)
torch.manual_seed(0)
model = build_model(model_name)
sampler = None
if factored:
    decompose(model)
    sampler = make_sampler("maestro", {n: m.rank for n, m in low_rank_layers(model).items()})
x, y = torch.randn(32 * steps, 1, 28, 28), torch.randint(0, 10, (32 * steps,))
train(model, x[:320], y[:320], TrainSettings(batch_size=32), sampler)  # warm-up
t = time.perf_counter()
train(model, x, y, TrainSettings(batch_size=32), sampler)
print(json.dumps({"seconds": time.perf_counter() - t}))
"""


def measure(model: str, steps: int, factored: bool, fast: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k not in FAST_MALLOC}
    if fast:
        env.update(FAST_MALLOC)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, model, str(steps), "1" if factored else "0"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(
        prog="python -m simulations.malloc_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default="cnn")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dense", action="store_true", help="train the dense model (default: Maestro)")
    args = p.parse_args(argv)
    times: dict[str, list[float]] = {"default": [], "fast": []}
    for _ in range(args.repeats):
        for name in ("default", "fast"):
            times[name].append(measure(args.model, args.steps, not args.dense, name == "fast"))
    med = {k: statistics.median(v) for k, v in times.items()}
    kind = "dense" if args.dense else "maestro"
    print(
        f"{args.model} ({kind}), {args.steps} steps of batch 32, 1 thread, median of "
        f"{args.repeats} runs each:"
    )
    for name, v in times.items():
        print(f"  {name:8s} {med[name]:.2f} s   (runs: {', '.join(f'{t:.2f}' for t in v)})")
    print(f"  default / fast = {med['default'] / med['fast']:.2f}x")
    return med


if __name__ == "__main__":
    main()
