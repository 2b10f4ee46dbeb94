"""The one CLI, ``maestro-fl``: subcommands dispatch to the entry points with help that names
itself; ``--version``; an unknown subcommand is refused; the ``python -m`` forms still work."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

from simulations import cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("sub", sorted(cli.COMMANDS))
def test_each_subcommand_help_names_itself(sub, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([sub, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: maestro-fl {sub} ")
    assert "python -m" not in out.splitlines()[0]


def test_export_and_evaluate_reach_their_own_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["export", "--help"])
    assert "--beta" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])
    out = capsys.readouterr().out
    assert "--betas" in out and "--beta " not in out


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"maestro-fl {version('maestro-fl')}"


def test_unknown_subcommand_is_refused_with_the_allowed_ones(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'train'" in err
    for sub in ("run", "report", "paired", "centralized", "export", "evaluate"):
        assert f"'{sub}'" in err


def test_no_subcommand_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: maestro-fl") and "evaluate" in err


def test_errors_of_a_subcommand_name_it(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["paired", "a.csv"])  # --method and --against missing
    assert exit_info.value.code == 2
    assert "maestro-fl paired: error: the following arguments are required" in (
        capsys.readouterr().err
    )


def test_export_exit_status_comes_through(tmp_path, capsys):
    missing = tmp_path / "none" / "checkpoint.npz"
    code = cli.main(["evaluate", str(missing), "--out", str(tmp_path / "eval")])
    assert code == 2
    assert "error:" in capsys.readouterr().err


def test_console_script_points_at_the_cli():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["maestro-fl"] == "simulations.cli:main"


@pytest.mark.parametrize(
    ("module", "usage"),
    [
        ("simulations.paired", "usage: python -m simulations.paired "),
        ("server.export", "usage: python -m server.export "),
    ],
)
def test_python_m_forms_keep_their_own_prog(module, usage):
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(usage)


def test_the_cli_runs_as_a_module():
    done = subprocess.run(
        [sys.executable, "-m", "simulations.cli", "run", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: maestro-fl run ")
