"""End to end through the harness: report with provenance, skip, refusal, and no process left
behind after SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TAG = "MAESTRO_TEST_TAG"

pytestmark = pytest.mark.skipif(
    shutil.which("flwr", path=str(BIN)) is None, reason="the flwr CLI is not installed"
)


def harness(out: Path, data: Path, *extra: str, env: dict | None = None, **kw):
    conf = out.parent / "tiny.toml"
    conf.write_text(
        f'model = "lenet5"\ndata-dir = "{data}"\nnum-rounds = 2\nclients-per-round = 2\n'
        'clients-per-eval = 0\nmax-test-examples = 200\ntier-fractions = "0.5,1.0"\n'
        'partitioning = "iid"\nmin-nodes = 2\n'
    )
    cmd = [sys.executable, "-m", "simulations.run", "--conf", str(conf), "--supernodes", "2"]
    cmd += ["--out", str(out), "--malloc", "default", *extra]
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def tagged(tag: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(TAG) == tag and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            pass
    return found


def command_line(proc: psutil.Process) -> str:
    """``proc``'s command line, or "" once it has exited (a harness's child may end any time)."""
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def test_sigterm_mid_run_leaves_no_process(tmp_path, fmnist_sample):
    tag = uuid.uuid4().hex
    proc = harness(tmp_path / "out", fmnist_sample, "--set", "num-rounds=50", env={TAG: tag})
    try:
        # Mid-run: once Ray runs under the SuperLink (the processes a cancelled job used to leave).
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            names = " ".join(command_line(p) for p in tagged(tag))
            if "raylet" in names or "ray::" in names:
                break
            time.sleep(1)
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
        assert "got SIGTERM; stopping its processes" in out
        left = tagged(tag)
        assert left == [], [command_line(p) for p in left]
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in tagged(tag):
            p.kill()


def test_lr_sweep_then_the_run_with_provenance_then_skip_then_refusal(tmp_path, fmnist_sample):
    """One sweep and one run (three Flower simulations in all) carry every harness check: the lr
    chosen on validation, the report's provenance, a finished request skipped, another refused."""
    out = tmp_path / "out"
    sweep = ("--set", "val-size=200", "--lrs", "0.01,0.05", "--select-rounds", "1")
    first = harness(out, fmnist_sample, *sweep, "--select-only")
    text, _ = first.communicate(timeout=900)
    assert first.returncode == 0, text[-3000:]
    assert (out / "lr-selection.json").exists() and not (out / "runs").exists(), text[-3000:]

    proc = harness(out, fmnist_sample, *sweep)  # the sweep is reused, then seed 0 runs
    text, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, text[-3000:]
    assert text.count("already finished (same request): skipped") == 2, text[-3000:]
    assert "[maestro-seed0] starting up" in text, text[-3000:]
    assert "[maestro-seed0] round 2/2" in text, text[-3000:]
    selection = json.loads((out / "lr-selection.json").read_text())["methods"]["maestro"]
    grid = {e["lr"]: e for e in selection["grid"]}
    assert set(grid) == {0.01, 0.05} and set(grid[0.05]["val-accuracy"]) == {"0.5", "1"}
    assert selection["lr"] == max(grid, key=lambda lr: grid[lr]["mean"])
    for lr in grid:  # sweep runs: validation only, the test set never evaluated
        rows = (out / "select" / f"maestro-lr{lr:g}" / "metrics.jsonl").read_text().splitlines()
        assert all("val-tiers" in json.loads(r) and "tiers" not in json.loads(r) for r in rows)
    record = json.loads((out / "runs" / "maestro-seed0" / "harness.json").read_text())
    assert record["request"]["run-config"]["lr"] == selection["lr"]
    assert record["request"]["lr-selection"]["lrs"] == "0.01,0.05"
    assert record["request"]["run-config"]["batch-size"] == 32  # defaults filled in
    assert record["request"]["federation"]["num-supernodes"] == 2
    report = (out / "report.md").read_text()
    assert f"| maestro | **{selection['lr']:g}** |" in report
    call = record["invocations"][0]
    assert f"| maestro-seed0 | 1–2 | `{call['command']}` | {call['commit']} |" in report
    assert "\x1b[" not in (out / "logs" / "maestro-seed0.log").read_text()
    assert (out / "results.csv").read_text().count("\n") == 1 + 2 * 2  # 2 rounds × 2 tiers
    # The process tree's memory was followed while it trained (SuperLink, simulation, Ray).
    memory = json.loads((out / "runs" / "maestro-seed0" / "memory.json").read_text())
    assert memory["peak-tree-pss-mib"] > 200 and memory["processes-at-peak"] >= 4, memory
    assert "peak memory of the harness's process tree" in text

    again = harness(out, fmnist_sample, *sweep)
    text, _ = again.communicate(timeout=300)
    assert again.returncode == 0, text[-3000:]
    assert text.count("already finished (same request): skipped") == 3, text[-3000:]

    changed = harness(out, fmnist_sample, *sweep, "--set", "batch-size=16")
    text, _ = changed.communicate(timeout=300)
    assert changed.returncode != 0
    assert "run-config.batch-size: 32 -> 16" in text, text
    record = json.loads((out / "runs" / "maestro-seed0" / "harness.json").read_text())
    assert len(record["invocations"]) == 1


def test_sigkill_mid_run_then_the_same_out_stops_the_orphans_and_keeps_each_round_once(
    tmp_path, fmnist_sample
):
    """Issue 30's scenario: the harness dies by SIGKILL mid-run (no handler runs), its SuperLink
    and ServerApp live on; a re-run with the same --out stops them before it reads the folder."""
    from simulations.procs import marked

    tag = uuid.uuid4().hex
    out = tmp_path / "out"
    metrics = out / "runs" / "maestro-seed0" / "metrics.jsonl"
    rounds = ("--set", "num-rounds=3")
    first = harness(out, fmnist_sample, *rounds, env={TAG: tag}, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and first.poll() is None:
            if metrics.exists() and metrics.read_text().endswith("\n"):
                break  # round 1 recorded: the ServerApp is mid-run
            time.sleep(0.5)
        assert first.poll() is None, first.communicate()[0][-3000:]
        first.kill()
        first.wait(timeout=30)
        first.stdout.close()
        marker = json.loads((out / "processes.json").read_text())["marker"]
        orphans = [command_line(p) for p in marked(marker)]
        assert any("flower-superlink" in c for c in orphans), orphans  # the bug's premise

        second = harness(out, fmnist_sample, *rounds, env={TAG: tag})
        text, _ = second.communicate(timeout=600)
        assert second.returncode == 0, text[-3000:]
        assert "left running:" in text and "flower-superlink" in text, text[-3000:]
        assert marked(marker) == []
        assert [json.loads(x)["round"] for x in metrics.read_text().splitlines()] == [1, 2, 3]
    finally:
        if first.poll() is None:
            first.kill()
        for p in tagged(tag):
            p.kill()
