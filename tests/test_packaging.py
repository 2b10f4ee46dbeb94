"""What the package ships besides code: its license, how to cite it, and the Flower version the
suite was run on (stated in docs/deployment.md, admitted by pyproject.toml's requirements)."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_license_file_is_the_declared_license():
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_citation_file_parses_and_names_the_papers_it_builds_on():
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert cff["version"] == PYPROJECT["project"]["version"]
    assert cff["license"] == PYPROJECT["project"]["license"]
    assert cff["title"] and cff["authors"] and cff["message"]
    refs = {r["title"]: r for r in cff["references"]}
    maestro = refs["Maestro: Uncovering Low-Rank Structures via Trainable Decomposition"]
    assert maestro["authors"][0]["family-names"] == "Horváth" and maestro["year"] == 2024
    flower = refs["Flower: A Friendly Federated Learning Research Framework"]
    assert flower["authors"][0]["family-names"] == "Beutel"
    assert "2007.14390" in flower["url"]


def stated_flwr_version() -> str:
    text = (ROOT / "docs" / "deployment.md").read_text()
    found = re.search(r"test suite was run on flwr (\d+\.\d+\.\d+)", text)
    assert found, "docs/deployment.md must state the flwr version the test suite was run on"
    return found.group(1)


def test_the_installed_flwr_is_the_one_the_docs_state():
    stated, installed = stated_flwr_version(), version("flwr")
    assert installed == stated, (
        f"flwr {installed} is installed, docs/deployment.md states {stated}: run the suite on "
        f"{installed} and update the docs, or install flwr=={stated}"
    )


def test_pyprojects_flwr_requirements_admit_the_stated_version():
    stated = stated_flwr_version()
    project = PYPROJECT["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        requirements += [Requirement(r) for r in extra]
    flwr = [r for r in requirements if r.name == "flwr"]
    assert len(flwr) >= 2  # the apps' requirement and the harness's flwr[simulation]
    for requirement in flwr:
        assert requirement.specifier.contains(stated), f"{requirement} does not admit {stated}"
