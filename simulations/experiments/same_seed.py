"""Is a refactor behaviour-neutral? A short same-seed run through the harness, digested.

Runs a small experiment (the demo's CNN on Fashion-MNIST, 10 SuperNodes, 2 rounds, every method
of ``--methods``, seed 0) through the harness, then prints per run the sha256 of its final
global arrays (every array of ``checkpoint.npz``'s ``arrays/``, sorted by name, as raw bytes)
and its per-tier test accuracies to the last digit. Run it at two commits and compare the
lines: a change that keeps the behaviour prints the same digests.

``--digest-only DIR`` prints the digests of an existing harness folder instead (e.g. one made
at an older commit with the same harness command, which this script shows with ``--show``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

METHODS = "maestro,fjord,heterofl,fedavg-all,fedavg-fit"


def harness_command(out: Path, methods: str) -> list[str]:
    """The harness run whose result is digested (the same at every commit that has the flags)."""
    return [
        sys.executable,
        *("-m", "simulations.run", "--conf", "simulations/conf/demo.toml"),
        *("--supernodes", "10", "--methods", methods, "--seeds", "0"),
        *("--set", "num-rounds=2", "--set", "eval-every=1", "--set", "clients-per-eval=0"),
        *("--set", "max-test-examples=1000", "--out", str(out)),
    ]


def digest(run: Path) -> str:
    """One line: the run's name, the sha256 of its final arrays, its last round's accuracies."""
    with np.load(run / "checkpoint.npz", allow_pickle=False) as ckpt:
        sha = hashlib.sha256()
        for key in sorted(k for k in ckpt.files if k.startswith("arrays/")):
            array = np.ascontiguousarray(ckpt[key])
            sha.update(key.encode())
            sha.update(str(array.dtype).encode() + str(array.shape).encode())
            sha.update(array.tobytes())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if r.get("tiers")][-1]
    accs = " ".join(f"{t}:{m['accuracy']!r}" for t, m in sorted(last["tiers"].items()))
    return f"{run.name} round {last['round']} sha256 {sha.hexdigest()[:16]} {accs}"


def digests(out: Path) -> list[str]:
    runs = sorted(p.parent for p in (out / "runs").glob("*/checkpoint.npz"))
    if not runs:
        raise SystemExit(f"{out}: no run folder with a checkpoint.npz under runs/")
    return [digest(run) for run in runs]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/same-seed", help="harness output folder")
    parser.add_argument("--methods", default=METHODS, help="comma list of methods")
    parser.add_argument("--digest-only", help="digest this harness folder; run nothing")
    parser.add_argument("--show", action="store_true", help="print the harness command only")
    args = parser.parse_args(argv)
    if args.digest_only:
        print("\n".join(digests(Path(args.digest_only))))
        return
    command = harness_command(Path(args.out), args.methods)
    if args.show:
        print(" ".join(command))
        return
    subprocess.run(command, check=True)
    print("\n".join(digests(Path(args.out))))


if __name__ == "__main__":
    main()
