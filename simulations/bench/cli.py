"""Benchmark suite: measured step time and inference latency per tier, dense vs factored vs width.

Writes ``docs/performance.md`` (tables) and ``runs/bench/bench.json`` (every figure)::

    OMP_NUM_THREADS=1 python -m simulations.bench            # full run
    OMP_NUM_THREADS=1 python -m simulations.bench --quick    # a short sanity run

Every figure is the median of ``--repeats`` timed calls after ``--warmup`` untimed ones, on one
torch thread, with glibc malloc tuned as the harness does. A tier runs as the project runs it: a
factored (svd or tucker) client holds its rank prefix only (the layers truncated to the tier's
ranks, as :func:`maestro_common.app.codec.load_arrays` leaves them); a width client (FjORD/HeteroFL)
holds the whole model and slices it at its width on every call, the width being the one whose MACs
match the svd tier's (the harness's matched-MACs rule,
:func:`maestro_common.lowrank.width_match.width_for_macs`).

Models take their dataset's input (``MODELS``, :func:`geometry`): Fashion-MNIST images, or for
``char-transformer`` (sized as ``simulations/conf/shakespeare.toml``) random token windows of 80
ids with their next tokens as targets; the sections that iterate over ``--models`` (models,
overhead) run both; freezing, layers and branched stay on the image models.

Sections: per layer type; whole models (train step at ``--batch``, inference at batch 1 and 64,
with factored tiers also merged by measurement); one Maestro training step against one dense step
(factorization, sampling and each training objective separated); sequential freezing; the
branched Tucker core (a grouped conv) against the plain one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from maestro_common.app.malloc import tune_malloc
from maestro_common.lowrank.merging import clear_cache
from simulations.bench.render import render, settings_line
from simulations.bench.sections import (
    OBJECTIVES,
    SECTIONS,
    measure_branched,
    measure_freezing,
    measure_layers,
    measure_model,
    measure_overhead,
)
from simulations.bench.timing import CLOCKS, Row, Timer
from simulations.bench.variants import _FACTORED, MODELS, MODELS_SECTION_ONLY, TIERS
from simulations.bench.verdict import targets
from simulations.provenance import cpu_model


def load_line() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average unavailable"
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m simulations.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="tiers 0.25 and 1, 3 repeats: a smoke run")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma list of {list(MODELS)}")
    p.add_argument("--batch", type=int, default=32, help="training batch (RunConfig batch-size)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per figure (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before timing")
    p.add_argument(
        "--clock",
        default="cpu",
        choices=sorted(CLOCKS),
        help="cpu: the thread's CPU time (robust under load); wall: elapsed time",
    )
    p.add_argument("--objectives", default=",".join(OBJECTIVES), help="training objectives")
    p.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma list of {list(SECTIONS)} (each saved as soon as measured)",
    )
    p.add_argument(
        "--from-json",
        default="",
        help="comma list of bench.json files: render one report from them, measure nothing",
    )
    p.add_argument("--out", type=Path, default=Path("docs/performance.md"))
    p.add_argument("--json", type=Path, default=Path("runs/bench/bench.json"))
    args = p.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    bad = [m for m in args.models if m not in MODELS]
    if bad:
        p.error(f"unknown model(s) {bad}; allowed: {', '.join(MODELS)}")
    args.objectives = [o for o in args.objectives.split(",") if o]
    bad = [o for o in args.objectives if o not in OBJECTIVES]
    if bad:
        p.error(f"unknown objective(s) {bad}; allowed: {', '.join(OBJECTIVES)}")
    args.sections = [x for x in args.sections.split(",") if x]
    bad = [x for x in args.sections if x not in SECTIONS]
    if bad:
        p.error(f"unknown section(s) {bad}; allowed: {', '.join(SECTIONS)}")
    args.from_json = [Path(x) for x in args.from_json.split(",") if x]
    if args.batch < 1 or args.repeats < 1 or args.warmup < 0:
        p.error("--batch and --repeats must be ≥ 1, --warmup ≥ 0")
    if args.quick:
        args.repeats, args.warmup = 3, 1
    return args


def main(argv: list[str] | None = None) -> dict[str, list[Row]]:
    args = parse_args(argv)
    if args.from_json:
        rerender(args, args.from_json)
        print(f"[bench] wrote {args.out} and {args.json} from {len(args.from_json)} file(s)")
        return {}
    tune_malloc()
    torch.set_num_threads(1)
    clear_cache()
    _FACTORED.clear()
    timer = Timer(args.warmup, args.repeats, args.clock)
    tiers = (0.25, 1.0) if args.quick else tuple(sorted({*TIERS, 0.25}))
    target_models = [m for m in ("cnn", "resnet18") if m in args.models]
    started, load_before = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), load_line()
    start = time.perf_counter()
    results: dict[str, list[Row]] = {}
    sections: dict[str, Callable[[], list[Row]]] = {
        "layers": lambda: measure_layers(tiers, timer, args.batch),
        "models": lambda: [
            r for m in args.models for r in measure_model(m, tiers, timer, args.batch)
        ],
        "overhead": lambda: [
            r
            for m in args.models
            if m not in MODELS_SECTION_ONLY
            for r in measure_overhead(m, timer, args.batch, args.objectives)
        ],
        "freezing": lambda: [
            r
            for m in target_models
            for kind in ("svd", "tucker")
            for r in measure_freezing(m, (0.25, 1.0), timer, args.batch, kind)
        ],
        "branched": lambda: measure_branched(tiers, timer, args.batch),
    }
    for name in args.sections:
        section_start = time.perf_counter()
        print(f"[bench] {name} ...", flush=True)
        results[name] = sections[name]()
        print(f"[bench] {name}: {time.perf_counter() - section_start:.0f} s", flush=True)
        # The section's figures against their targets (e.g. each objective's step against a
        # dense step), on the terminal as well as in the report.
        measured = (
            results[name] if name == key else [] for key in ("models", "overhead", "freezing")
        )
        for line in targets(*measured):
            print(f"[bench] {line}", flush=True)
        # Written after every section, so a long run interrupted keeps what it measured.
        seconds = time.perf_counter() - start
        meta = {
            "started": started,
            "load-before": load_before,
            "load-after": load_line(),
            "seconds": seconds,
            "commands": [" ".join(argv if argv is not None else sys.argv[1:])],
            "settings": settings_line(args),
            "cpu": cpu_model(),
        }
        write(args, results, meta)
    print(f"[bench] wrote {args.out} and {args.json} ({time.perf_counter() - start:.0f} s)")
    return results


def write(args: argparse.Namespace, results: dict[str, list[Row]], meta: dict[str, Any]) -> None:
    """Write the JSON figures and the markdown report."""
    args.json.parent.mkdir(parents=True, exist_ok=True)
    rows = {k: [asdict(r) for r in v] for k, v in results.items()}
    args.json.write_text(json.dumps({"meta": meta, **rows}, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(args, results, meta))


def rerender(args: argparse.Namespace, paths: Sequence[Path]) -> None:
    """One report from the JSON of several (partial) runs, e.g. sections run separately."""
    results: dict[str, list[Row]] = {}
    metas = []
    for path in paths:
        data = json.loads(path.read_text())
        metas.append(data.pop("meta"))
        for key, rows in data.items():
            results.setdefault(key, []).extend(Row(**r) for r in rows)
    meta = {
        "started": ", ".join(m["started"] for m in metas),
        "load-before": "; ".join(m["load-before"] for m in metas),
        "load-after": "; ".join(m["load-after"] for m in metas),
        "seconds": sum(m["seconds"] for m in metas),
        "commands": [c for m in metas for c in m["commands"]],
        "settings": "; ".join(dict.fromkeys(m["settings"] for m in metas)),
        "cpu": "; ".join(dict.fromkeys(m["cpu"] for m in metas if m.get("cpu"))),
    }
    write(args, results, meta)
