"""Write constraints.txt: the installed version of every package the project's install needs.

Walks pyproject.toml's dependencies and every extra (dev, plots, sim) through the installed
packages' own requirements (markers evaluated for this interpreter and platform) and prints one
``name==version`` line per package reached, sorted. Local version labels are dropped (the CPU
build ``torch 2.13.0+cpu`` is pinned as ``torch==2.13.0``, which admits it and the Makefile's
``TORCH_SPEC``). Run it from the repository root with the interpreter of an environment made by
``make install``::

    .venv/bin/python .ci/freeze_constraints.py > constraints.txt
"""

from __future__ import annotations

import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
# Needed by the statistics (scipy.stats) whether or not pyproject.toml names it yet.
ALSO = ("scipy",)


def _applies(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": extra}) for extra in extras | {""})


def closure(roots: list[Requirement], project: str) -> dict[str, str]:
    """Canonical name -> installed version (local label dropped) of every package reached."""
    pins: dict[str, str] = {}
    extras_seen: dict[str, set[str]] = {}
    todo = list(roots)
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name == project:
            continue  # the project's own extras are expanded by the caller
        wanted = set(req.extras)
        if name in extras_seen and wanted <= extras_seen[name]:
            continue
        extras_seen[name] = extras_seen.get(name, set()) | wanted
        try:
            dist = distribution(req.name)
        except PackageNotFoundError as err:
            msg = f"{req.name} is required but not installed: run make install first"
            raise SystemExit(msg) from err
        pins[name] = Version(dist.version).public
        for sub in map(Requirement, dist.requires or []):
            if _applies(sub, extras_seen[name]):
                todo.append(sub)
    return pins


def main() -> int:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    project = canonicalize_name(meta["name"])
    roots = [Requirement(r) for r in meta["dependencies"]]
    for reqs in meta.get("optional-dependencies", {}).values():
        roots += [Requirement(r) for r in reqs]
    roots += [Requirement(name) for name in ALSO]
    pins = closure(roots, project)
    py = sys.version_info
    print(
        "# Versions for `pip install -c constraints.txt` (Makefile `install`): two fresh installs\n"
        "# resolve the same packages. The closure of pyproject.toml's dependencies and extras as\n"
        f"# installed on Linux x86_64, CPython {py.major}.{py.minor}; regenerate with\n"
        "#   .venv/bin/python .ci/freeze_constraints.py > constraints.txt"
    )
    for name in sorted(pins):
        print(f"{name}=={pins[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
