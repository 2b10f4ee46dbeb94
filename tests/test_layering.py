"""The import rule, read off the source (AST): layers import only downward.

maestro_common (the core) imports none of server, client or simulations; server and client never
import each other; only simulations and tests import simulations; and the core's modules import
each other without a cycle. Inside the core, the method library (lowrank, width) never imports the
app glue (app), the data or the training loop, and models and data import no other part of the
core. Imports inside functions count too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("maestro_common", "server", "client", "simulations")
# package -> packages it must never import
FORBIDDEN = {
    "maestro_common": {"server", "client", "simulations"},
    "server": {"client", "simulations"},
    "client": {"server", "simulations"},
    "simulations": set(),
}
# Inside the core: part -> parts it must never import (docs/architecture.md).
_LIBRARY_MUST_NOT = {"maestro_common.app", "maestro_common.ml.data", "maestro_common.ml.training"}
_SUBSTRATE_MUST_NOT = {
    "maestro_common.app",
    "maestro_common.lowrank",
    "maestro_common.width",
    "maestro_common.ml.training",
    "maestro_common.ml.schedules",
}
CORE_FORBIDDEN = {
    "maestro_common.lowrank": _LIBRARY_MUST_NOT,
    "maestro_common.width": _LIBRARY_MUST_NOT,
    "maestro_common.ml.models": _SUBSTRATE_MUST_NOT | {"maestro_common.ml.data"},
    "maestro_common.ml.data": _SUBSTRATE_MUST_NOT | {"maestro_common.ml.models"},
}


def modules(package: str) -> Iterator[tuple[str, Path]]:
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def imported(path: Path, module: str) -> set[str]:
    """Every absolute module name ``path`` imports (relative imports resolved)."""
    names = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_downward(package):
    bad = [
        f"{module} imports {name}"
        for module, path in modules(package)
        for name in sorted(imported(path, module))
        if name.split(".")[0] in FORBIDDEN[package]
    ]
    assert not bad, "imports against the layering rule (docs/architecture.md):\n" + "\n".join(bad)


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@pytest.mark.parametrize("part", sorted(CORE_FORBIDDEN))
def test_the_core_parts_import_only_downward(part):
    modules_of_part = [(m, p) for m, p in modules("maestro_common") if _within(m, part)]
    assert modules_of_part, f"no module under {part}: update CORE_FORBIDDEN"
    bad = [
        f"{module} imports {name}"
        for module, path in modules_of_part
        for name in sorted(imported(path, module))
        if any(_within(name, banned) for banned in CORE_FORBIDDEN[part])
    ]
    assert not bad, "imports against the core's layering (docs/architecture.md):\n" + "\n".join(bad)


def test_the_core_has_no_import_cycle():
    core = dict(modules("maestro_common"))
    graph = {
        m: {n for n in imported(p, m) if n in core and n != m and not m.startswith(n + ".")}
        for m, p in core.items()
    }
    # Depth-first search for a back edge; the cycle found is reported.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return [*stack[stack.index(n) :], n]
            if n not in state and (cycle := visit(n)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            pytest.fail("import cycle in maestro_common: " + " -> ".join(cycle))


def test_the_rule_catches_a_forbidden_import(tmp_path):
    """The checker itself sees function-local and relative imports."""
    path = tmp_path / "x.py"
    path.write_text(
        "def f():\n    from simulations.policy import VirtualClockPolicy\nfrom . import y\n"
    )
    names = imported(path, "server.x")
    assert "simulations.policy" in names and "server.y" in names


def test_the_apps_load_without_the_harness_dependencies():
    """A SuperNode install has no `sim` extra: the apps must not import what it brings."""
    code = (
        "import sys, client.client_app, server.server_app; "
        "print([m for m in ('matplotlib', 'ray', 'tomli_w', 'scipy', 'simulations') "
        "if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout
