"""docker/fleet-proxy.conf as written: SuperNodes pass, the Control and Runtime APIs do not.

A SuperLink on 127.0.0.1, nginx with the committed server block in front of it (ports
substituted), a SuperNode that reaches the SuperLink only through nginx. Skipped where nginx or
flower-superlink is missing.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.flower_processes import (
    ROOT,
    Processes,
    executable,
    flower_env,
    free_ports,
    start_superlink,
    tail,
    wait_for_port,
)

NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
CONNECT_TIMEOUT = 120.0  # seconds for the SuperNode to be activated through the proxy

pytestmark = [
    pytest.mark.skipif(NGINX is None, reason="nginx is not installed (nginx-light)"),
    pytest.mark.skipif(executable("flower-superlink") is None, reason="flwr is not installed"),
]


def _nginx_config(folder: Path, link_port: int, proxy_port: int) -> Path:
    """A whole nginx.conf around the committed server block, every path inside ``folder``."""
    block = (ROOT / "docker" / "fleet-proxy.conf").read_text()
    assert "server 127.0.0.1:9091;" in block and "listen 9092;" in block
    block = block.replace("server 127.0.0.1:9091;", f"server 127.0.0.1:{link_port};")
    block = block.replace("listen 9092;", f"listen 127.0.0.1:{proxy_port};")
    conf = folder / "nginx.conf"
    conf.write_text(
        "daemon off;\n"
        "worker_processes 1;\n"
        f"pid {folder}/nginx.pid;\n"
        f"error_log {folder}/error.log;\n"
        "events { worker_connections 64; }\n"
        "http {\n"
        f"  access_log {folder}/access.log;\n"
        f"  client_body_temp_path {folder}/body;\n"
        f"  proxy_temp_path {folder}/proxy;\n"
        f"{block}\n"
        "}\n"
    )
    return conf


def _status(url: str, method: str = "GET") -> int:
    request = urllib.request.Request(url, data=b"" if method == "POST" else None, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_fleet_proxy_passes_supernodes_and_refuses_control(
    tmp_path: Path, processes: Processes
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    link_port, proxy_port, node_port = free_ports(3)
    link_log = logs / "superlink.log"
    start_superlink(
        processes, link_port, tmp_path / "state.db", link_log, flower_env(tmp_path / "home-link")
    )

    conf = _nginx_config(tmp_path, link_port, proxy_port)
    nginx_log = logs / "nginx.log"
    nginx = processes.start(
        [NGINX or "nginx", "-p", str(tmp_path), "-c", str(conf)],
        nginx_log,
        flower_env(tmp_path / "h"),
    )
    wait_for_port(proxy_port, nginx, nginx_log, 20.0)

    # The SuperNode knows only the proxy's address.
    processes.start(
        [
            executable("flower-supernode") or "flower-supernode",
            "--insecure",
            "--superlink",
            f"127.0.0.1:{proxy_port}",
            "--port",
            str(node_port),
            "--node-config",
            "partition-id=0 num-partitions=1 rank-fraction=1.0",
        ],
        logs / "supernode.log",
        flower_env(tmp_path / "home-node"),
    )
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while "Activated node_id" not in link_log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            pytest.fail(f"no SuperNode activated through the proxy\n{processes.tails()}")
        time.sleep(0.5)

    proxy, direct = f"http://127.0.0.1:{proxy_port}", f"http://127.0.0.1:{link_port}"
    assert _status(f"{proxy}/health") == 200
    # The Control API (what `flwr run` and `flwr supernode register` call) and the Runtime API.
    for path in ("/v1/control/start-run", "/v1/control/list-runs", "/v1/runtime/pull-messages"):
        assert _status(f"{proxy}{path}", "POST") == 403, path
        # ... which the SuperLink itself does serve: the proxy is what refuses them.
        assert _status(f"{direct}{path}", "POST") != 403, path
    assert _status(f"{proxy}/docs") == 403
    # The proxy did forward Fleet traffic (the SuperNode's activation above went through it).
    access = (tmp_path / "access.log").read_text()
    assert "/v1/fleet/" in access, tail(tmp_path / "access.log")


def test_fleet_proxy_config_is_valid(tmp_path: Path) -> None:
    """`nginx -t` accepts the committed block inside a minimal nginx.conf."""
    conf = _nginx_config(tmp_path, 9091, 9092)
    result = subprocess.run(
        [NGINX or "nginx", "-t", "-p", str(tmp_path), "-c", str(conf)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
