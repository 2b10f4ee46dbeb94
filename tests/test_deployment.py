"""A real deployment: one SuperLink, three SuperNodes (one per tier), `flwr run` against them.

As docs/deployment.md recommends: the SuperLink keeps its state in a `--database` file, and each
SuperNode runs with `--isolation process` beside a warm `client.warm_superexec`. After 2 rounds the
SuperLink is restarted and the same SuperNode processes train one more round.

Everything runs on 127.0.0.1 with free ports and a temporary FLWR_HOME per process. A ClientApp
that raises does not fail `flwr run`, so the test asserts on the run's results files. Run it with
`-s` to see the seconds per round; `MAESTRO_TEST_CLIENT_EXEC=flower` runs the same deployment with
Flower's default per-message ClientApp processes instead (the comparison in docs/deployment.md),
`MAESTRO_TEST_TIMEOUT_SCALE=3` triples every time limit on a busy machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from maestro_common.ml.data.idx import read_idx, write_idx
from tests.flower_processes import (
    ROOT,
    Processes,
    executable,
    flower_env,
    free_ports,
    start_superlink,
    tail,
)

BETAS = (0.25, 0.5, 1.0)
FMNIST = Path("/usr/share/datasets/fashion-mnist")
NUM_TRAIN, NUM_TEST = 480, 300
RUN_TIMEOUT = 300.0  # seconds for the first `flwr run` (2 rounds; ~1 minute on an idle machine)
RESTART_RUN_TIMEOUT = 240.0  # seconds for the SuperLink restart and the 1-round run after it
# "warm": --isolation process + client.warm_superexec (the documented default); "flower": Flower's
# default subprocess isolation, one fresh flwr-clientapp process per message.
CLIENT_EXEC = os.environ.get("MAESTRO_TEST_CLIENT_EXEC", "warm")
# Stretches every time limit below (and the run's round-timeout) on a machine busy with other work.
TIMEOUT_SCALE = float(os.environ.get("MAESTRO_TEST_TIMEOUT_SCALE", "1"))


pytestmark = pytest.mark.skipif(
    executable("flower-superlink") is None,
    reason="flower-superlink is not on PATH (install flwr>=1.41 or activate the virtualenv)",
)


def _write_sample(folder: Path) -> Path:
    """A small Fashion-MNIST sample in IDX format (random images where the set is missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", NUM_TRAIN), ("t10k", NUM_TEST)):
        for kind in ("images-idx3", "labels-idx1"):
            name = f"{split}-{kind}-ubyte.gz"
            src = FMNIST / name
            if src.exists():
                array = read_idx(src)[:n]
            elif kind.startswith("images"):
                array = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
            else:
                array = (np.arange(n) % 10).astype(np.uint8)
            write_idx(folder / name, array)
    return folder


def _start_supernode(
    processes: Processes, index: int, link_port: int, port: int, logs: Path, env: dict[str, str]
) -> list[subprocess.Popen]:
    """One SuperNode (tier BETAS[index]) and, in warm mode, the SuperExec beside it."""
    node_config = f"partition-id={index} num-partitions={len(BETAS)} rank-fraction={BETAS[index]}"
    isolation = ["--isolation", "process"] if CLIENT_EXEC == "warm" else []
    node = processes.start(
        [
            executable("flower-supernode") or "flower-supernode",
            "--insecure",
            "--superlink",
            f"127.0.0.1:{link_port}",
            *isolation,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--node-config",
            node_config,
        ],
        logs / f"supernode-{index}.log",
        env,
    )
    if CLIENT_EXEC != "warm":
        return [node]
    superexec = processes.start(
        [
            sys.executable,
            "-m",
            "client.warm_superexec",
            "--insecure",
            "--runtime-api-address",
            f"127.0.0.1:{port}",
        ],
        logs / f"superexec-{index}.log",
        env,
    )
    return [node, superexec]


def _flwr_run(run_config: str, env: dict[str, str], log: Path, timeout: float, tails) -> None:
    """`flwr run . maestro-test --stream` with ``run_config``; fails the test unless it exits 0."""
    with log.open("wb") as out:
        try:
            result = subprocess.run(
                [
                    executable("flwr") or "flwr",
                    "run",
                    ".",
                    "maestro-test",
                    "--stream",
                    "--run-config",
                    run_config,
                ],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"flwr run did not finish within {timeout:.0f}s\n{tails()}")
    assert result.returncode == 0, (
        f"flwr run exited with {result.returncode}\n{tail(log, 80)}\n{tails()}"
    )


def _rows(folder: Path, logs_text: str) -> list[dict]:
    metrics = folder / "metrics.jsonl"
    assert metrics.exists(), f"no {metrics}\n{logs_text}"
    return [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]


def _check_round(row: dict, logs_text: str) -> None:
    """All three tiers trained, sent nested payloads and were evaluated."""
    where = f"round {row['round']}"
    assert row["rejected"] == [], f"{where}: rejected replies {row['rejected']}\n{logs_text}"
    clients = row["clients"]
    assert len(clients) == 3, f"{where}: {len(clients)} clients\n{logs_text}"
    by_beta = {float(c["rank-fraction"]): c for c in clients}
    assert set(by_beta) == set(BETAS), f"{where}: rank fractions {sorted(by_beta)}"
    assert sorted(c["partition-id"] for c in clients) == [0, 1, 2], where
    up = [by_beta[b]["bytes-up"] for b in BETAS]
    assert up[0] < up[1] < up[2], f"{where}: bytes-up {up} for β {BETAS}"
    for c in clients:
        assert c["num-examples"] > 0, f"{where}: {c}"
        assert np.isfinite(c["train-loss"]), f"{where}: {c}"
    tiers = row["tiers"]
    assert {float(k) for k in tiers} == set(BETAS), f"{where}: tiers {sorted(tiers)}"
    for key, m in tiers.items():
        # A share of the NUM_TEST test images: a whole number of them were right.
        correct = m["accuracy"] * NUM_TEST
        assert correct == pytest.approx(round(correct)), f"{where}: β={key} {m['accuracy']}"


def test_deployment_three_tiers(tmp_path: Path, processes: Processes) -> None:
    start = time.monotonic()
    data_dir = _write_sample(tmp_path / "data")
    out_dir = tmp_path / "out"
    logs = tmp_path / "logs"
    logs.mkdir()
    link_port, *node_ports = free_ports(1 + len(BETAS))
    database = tmp_path / "superlink-state.db"
    link_env = flower_env(tmp_path / "home-superlink")
    link = start_superlink(processes, link_port, database, logs / "superlink.log", link_env)

    # One SuperNode per tier; each needs its own Runtime API --port on a shared host.
    nodes = [
        _start_supernode(
            processes, i, link_port, port, logs, flower_env(tmp_path / f"home-supernode-{i}")
        )
        for i, port in enumerate(node_ports)
    ]

    # `flwr run . <connection>` reads the connection from $FLWR_HOME/config.toml.
    cli_home = tmp_path / "home-cli"
    cli_env = flower_env(cli_home)
    (cli_home / "config.toml").write_text(
        '[superlink]\ndefault = "maestro-test"\n\n'
        f'[superlink.maestro-test]\naddress = "127.0.0.1:{link_port}"\ninsecure = true\n'
    )
    run_config = (
        f"clients-per-round=3 min-nodes=3 data-dir='{data_dir}' "
        f"output-dir='{out_dir}' max-test-examples={NUM_TEST} "
        f"tier-fractions='0.25,0.5,1.0' batch-size=32 round-timeout={120.0 * TIMEOUT_SCALE} "
        f"query-timeout={60.0 * TIMEOUT_SCALE}"  # a busy machine starts ClientApps slowly
    )
    budget = RUN_TIMEOUT * TIMEOUT_SCALE - (time.monotonic() - start)
    _flwr_run(f"num-rounds=2 {run_config}", cli_env, logs / "flwr-run.log", budget, processes.tails)
    logs_text = f"{tail(logs / 'flwr-run.log', 80)}\n{processes.tails()}"

    # The results files, not the exit status: a failing ClientApp does not fail `flwr run`.
    folder = out_dir / "maestro-cnn-fashion-mnist-seed0"
    rows = _rows(folder, logs_text)
    assert [r["round"] for r in rows] == [1, 2], logs_text
    for row in rows:
        _check_round(row, logs_text)
    config = json.loads((folder / "config.json").read_text())
    assert config["num-rounds"] == 2 and config["min-nodes"] == 3, config
    assert (folder / "summary.md").exists()
    seconds = [r["wall-seconds"] for r in rows]
    print(f"\n[{CLIENT_EXEC}] seconds per round: {', '.join(f'{x:.1f}' for x in seconds)}")

    # SuperLink restart: with --database the SuperNodes keep their identity and carry on.
    restart = time.monotonic()
    processes.stop(only=link)
    link = start_superlink(processes, link_port, database, logs / "superlink-2.log", link_env)
    budget = RESTART_RUN_TIMEOUT * TIMEOUT_SCALE - (time.monotonic() - restart)
    _flwr_run(
        f"num-rounds=1 run-name='after-restart' {run_config}",
        cli_env,
        logs / "flwr-run-2.log",
        budget,
        processes.tails,
    )
    logs_text = f"{tail(logs / 'flwr-run-2.log', 80)}\n{processes.tails()}"
    for group in nodes:
        for proc in group:
            assert proc.poll() is None, f"{proc.args[:3]} exited across the restart\n{logs_text}"
    rows = _rows(out_dir / "after-restart", logs_text)
    assert [r["round"] for r in rows] == [1], logs_text
    _check_round(rows[0], logs_text)
