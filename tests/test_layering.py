"""The import rule, read off the source (AST): layers import only downward.

maestro_common (the core) imports none of server, client or simulations; server and client never
import each other; only simulations and tests import simulations; and the core's modules import
each other without a cycle. Inside the core, modules sit on floors, from the bottom up ml, width,
lowrank, app (FLOORS), and import only from their own floor or those below; models and data
import no other part of the core. Imports inside functions count too.
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
# Inside the core, floors from the bottom up (docs/architecture.md): a module imports only from its
# own floor or the ones below it.
#   ml       the substrate: models, data, lr schedules, the prefix rule, dry passes
#   width    width-sliceable layers (the FjORD / HeteroFL baselines' models)
#   lowrank  the method library: factored layers and what acts on any nested model (budget,
#            accounting, samplers, the training loop, width matching)
#   app      app glue: run config, method registry, protocol, codec, ...
FLOORS = (
    "maestro_common.ml",
    "maestro_common.width",
    "maestro_common.lowrank",
    "maestro_common.app",
)
# Inside the bottom floor, models and data import no other part of the core.
SELF_CONTAINED = ("maestro_common.ml.models", "maestro_common.ml.data")


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


def floor(name: str) -> int | None:
    """Index in FLOORS of the floor holding module ``name`` (None: not on a floor)."""
    return next((i for i, f in enumerate(FLOORS) if _within(name, f)), None)


def upward_imports(module: str, names: set[str]) -> list[str]:
    """The names among ``names`` that ``module`` imports from a floor above its own."""
    own = floor(module)
    assert own is not None, f"{module} is on no floor: add its folder to FLOORS"
    return sorted(n for n in names if (f := floor(n)) is not None and f > own)


def test_every_core_module_is_on_a_floor():
    loose = [m for m, _ in modules("maestro_common") if m != "maestro_common" and floor(m) is None]
    assert not loose, f"modules on no floor (add them to FLOORS and docs/architecture.md): {loose}"


def test_the_core_imports_only_down_its_floors():
    bad = [
        f"{module} imports {name}"
        for module, path in modules("maestro_common")
        if module != "maestro_common"
        for name in upward_imports(module, imported(path, module))
    ]
    assert not bad, "imports up the core's floors (docs/architecture.md):\n" + "\n".join(bad)


@pytest.mark.parametrize("part", SELF_CONTAINED)
def test_models_and_data_import_no_other_part_of_the_core(part):
    modules_of_part = [(m, p) for m, p in modules("maestro_common") if _within(m, part)]
    assert modules_of_part, f"no module under {part}: update SELF_CONTAINED"
    bad = [
        f"{module} imports {name}"
        for module, path in modules_of_part
        for name in sorted(imported(path, module))
        if _within(name, "maestro_common") and name != "maestro_common" and not _within(name, part)
    ]
    assert not bad, "imports against the core's layering (docs/architecture.md):\n" + "\n".join(bad)


def test_the_floor_rule_catches_an_upward_import(tmp_path):
    """Each floor may import the ones below it and none above, relative imports included."""
    path = tmp_path / "sliceable.py"
    path.write_text(
        "from maestro_common.ml.prefix import budget_dim\n"
        "def f():\n    from ..lowrank.layers import LowRankLayer\n"
        "import maestro_common.app.config\n"
    )
    names = imported(path, "maestro_common.width.sliceable")
    assert upward_imports("maestro_common.width.sliceable", names) == [
        "maestro_common.app.config",
        "maestro_common.lowrank.layers",
        "maestro_common.lowrank.layers.LowRankLayer",
    ]
    assert upward_imports("maestro_common.app.task", names) == []
    assert [floor(f"{f}.x") for f in FLOORS] == list(range(len(FLOORS)))


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
