"""Every ``python -m <module>`` the docs, the README, the Makefile and the entry points' own
docstrings give names a module that runs: a moved or renamed script fails here, not in a reader's
shell."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A module name, whole (a placeholder such as ``simulations.experiments.<name>`` is no command).
COMMAND = re.compile(r"python3? -m ([A-Za-z_][\w.]*\w)(?!\.?[\w<])")


def documents() -> list[Path]:
    """The README, the Makefile, every docs page and every module under simulations/."""
    return [
        ROOT / "README.md",
        ROOT / "Makefile",
        *sorted((ROOT / "docs").rglob("*.md")),
        *sorted((ROOT / "simulations").rglob("*.py")),
    ]


def documented_modules() -> dict[str, list[str]]:
    """Each module a ``python -m`` command names -> the files that name it."""
    found: dict[str, list[str]] = {}
    for path in documents():
        for name in COMMAND.findall(path.read_text()):
            found.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return found


def runnable(name: str) -> bool:
    """``python -m name`` finds something to run: a module, or a package with ``__main__``."""
    spec = importlib.util.find_spec(name)
    if spec is None:
        return False
    if spec.submodule_search_locations is not None:  # a package: runs its __main__
        return importlib.util.find_spec(f"{name}.__main__") is not None
    return True


def test_the_documents_name_the_moved_entry_points():
    modules = documented_modules()
    # The harness, the benchmark package and the experiments moved under simulations/experiments/.
    for name in ("simulations.run", "simulations.bench", "simulations.experiments.plain_flower"):
        assert name in modules
    assert not any(m.startswith("simulations.plain_flower") for m in modules)


@pytest.mark.parametrize("name", sorted(documented_modules()))
def test_every_documented_module_runs(name):
    where = ", ".join(sorted(set(documented_modules()[name])))
    assert runnable(name), f"`python -m {name}` (in {where}) names no runnable module"


def test_a_missing_module_is_caught():
    text = "python -m simulations.run. Then python -m simulations.experiments.<name> --help"
    assert COMMAND.findall(text) == ["simulations.run"]
    assert not runnable("simulations.no_such_module")
    assert not runnable("simulations.harness")  # a package without __main__
    assert runnable("simulations.bench") and runnable("simulations.run")
