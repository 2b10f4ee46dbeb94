"""``maestro-fl``: one command for the project's entry points, each a subcommand.

- ``run``: an experiment, methods × seeds through Flower, then its report
  (``python -m simulations.run``);
- ``report``: tidy CSV, summary and report of finished runs (``python -m simulations.report``);
- ``paired``: two methods compared seed by seed, per tier (``python -m simulations.paired``);
- ``centralized``: the methods trained without federation (``python -m simulations.centralized``);
- ``export``: one tier of a checkpoint for inference (``python -m server.export export``);
- ``evaluate``: every tier of a checkpoint evaluated (``python -m server.export evaluate``).

Everything after the subcommand goes to that entry point unchanged, and its help names itself
(``maestro-fl run --help``). The entry points are imported only when chosen, so ``export`` and
``evaluate`` work without the ``sim`` extra the harness needs. The ``python -m`` forms keep working.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

PROG = "maestro-fl"
DISTRIBUTION = "maestro-fl"


@dataclass(frozen=True)
class Command:
    """A subcommand: the module whose ``main(argv, prog)`` runs it, and a one-line summary.

    ``subcommand`` is set where the module has subcommands of its own (``server.export``): it is
    passed first, so ``maestro-fl export ...`` is ``python -m server.export export ...``.
    """

    module: str
    summary: str
    subcommand: str | None = None


COMMANDS: dict[str, Command] = {
    "run": Command("simulations.run", "run an experiment (methods x seeds) and its report"),
    "report": Command("simulations.report", "tidy CSV, summary and report of finished runs"),
    "paired": Command("simulations.paired", "compare two methods seed by seed, per tier"),
    "centralized": Command("simulations.centralized", "train the methods without federation"),
    "export": Command("server.export", "write one tier of a checkpoint for inference", "export"),
    "evaluate": Command("server.export", "evaluate every tier of a checkpoint", "evaluate"),
}


def package_version() -> str:
    """The installed distribution's version, or a note that it is not installed."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def parser() -> argparse.ArgumentParser:
    listing = "\n".join(f"  {name:<12} {c.summary}" for name, c in COMMANDS.items())
    p = argparse.ArgumentParser(
        prog=PROG,
        usage=f"%(prog)s [-h] [--version] {{{','.join(COMMANDS)}}} ...",
        description="Federated training of nested low-rank models across device tiers "
        "(Maestro) on Flower.",
        epilog=f"subcommands:\n{listing}\n\n'{PROG} <subcommand> --help' shows its options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    p.add_argument("command", choices=list(COMMANDS), metavar="subcommand", help=argparse.SUPPRESS)
    p.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the chosen subcommand's entry point; its exit status (0 when it returns)."""
    p = parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        p.print_help(sys.stderr)
        return 2
    args = p.parse_args(argv)  # an unknown subcommand exits 2 naming the allowed ones
    command = COMMANDS[args.command]
    entry = importlib.import_module(command.module).main
    if command.subcommand is None:
        result = entry(args.args, prog=f"{PROG} {args.command}")
    else:
        result = entry([command.subcommand, *args.args], prog=PROG)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
