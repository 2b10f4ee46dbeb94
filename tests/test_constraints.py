"""constraints.txt pins every package pyproject.toml names, and the setup installs through it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][^\s;#]*)")


def pins() -> dict[str, Version]:
    """Canonical name -> pinned version; every line is a comment or ``name==version``."""
    found: dict[str, Version] = {}
    for number, line in enumerate((ROOT / "constraints.txt").read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.fullmatch(line)
        assert match, f"constraints.txt:{number}: {line!r} is not name==version"
        name = canonicalize_name(match.group(1))
        assert name not in found, f"constraints.txt:{number}: {name} is pinned twice"
        found[name] = Version(match.group(2))
    return found


def named_requirements() -> list[Requirement]:
    """pyproject's dependencies and every extra's, without the project's own extras."""
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in PROJECT["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra]
    own = canonicalize_name(PROJECT["name"])
    return [r for r in reqs if canonicalize_name(r.name) != own]


def test_every_named_dependency_is_pinned_within_its_requirement():
    pinned = pins()
    reqs = named_requirements()
    assert len(reqs) >= 10
    missing = sorted({r.name for r in reqs if canonicalize_name(r.name) not in pinned})
    assert not missing, f"constraints.txt pins no version of {missing}"
    for req in reqs:
        version = pinned[canonicalize_name(req.name)]
        assert req.specifier.contains(version, prereleases=True), f"{req} excludes {version}"
    # The statistics need scipy (scipy.stats), pinned whether or not pyproject names it yet.
    assert "scipy" in pinned


def test_the_pins_agree_with_the_makefiles_torch_and_the_pinned_flwr():
    pinned = pins()
    makefile = (ROOT / "Makefile").read_text()
    torch_spec = re.search(r"^TORCH_SPEC \?= torch==(\S+)$", makefile, re.M)
    assert torch_spec and pinned["torch"] == Version(torch_spec.group(1))
    assert not pinned["torch"].local  # torch==2.13.0 admits the CPU build 2.13.0+cpu
    assert pinned["flwr"] == Version("1.42.0")


def test_the_setup_installs_through_the_constraints():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^CONSTRAINTS \?= constraints\.txt$", makefile, re.M)
    installs = [line for line in makefile.splitlines() if "pip install" in line]
    project = [line for line in installs if '-e ".[dev,sim]"' in line or "TORCH_SPEC" in line]
    assert len(project) == 2 and all("-c $(CONSTRAINTS)" in line for line in project)
    assert "make test" in (ROOT / ".ci" / "run").read_text()  # CI installs through the Makefile
