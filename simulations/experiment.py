"""An experiment file (``simulations/conf/*.toml``): run-config keys plus the harness's own.

The file is the run config every run of an experiment starts from, and may also carry the
federation's size, ``num-supernodes`` (the simulated SuperNodes), so the file says what it runs:
``demo.toml`` its 20 clients, ``shakespeare.toml`` its 1,001. The harness reads and strips that key
before the rest goes to Flower as run config; ``--supernodes`` on the command line overrides it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUPERNODES_KEY = "num-supernodes"
# Keys of an experiment file that are the harness's, not run-config keys.
HARNESS_KEYS = (SUPERNODES_KEY,)


@dataclass(frozen=True)
class Experiment:
    """An experiment file split in two: the run config and the harness's node count (or None)."""

    run_config: dict[str, Any]
    supernodes: int | None = None

    def nodes(self, override: int | None, default: int) -> tuple[int, str]:
        """The node count and where it came from, for messages: ``override`` (the command
        line's ``--supernodes``), else the file's ``num-supernodes``, else ``default``."""
        if override is not None:
            return override, f"--supernodes {override}"
        if self.supernodes is not None:
            return self.supernodes, f"{SUPERNODES_KEY} = {self.supernodes} (the experiment file)"
        return default, f"the default --supernodes {default}"


def split_experiment(values: dict[str, Any], source: str = "the experiment file") -> Experiment:
    """The run config and node count of an experiment file's parsed ``values``.

    Raises
    ------
    ValueError
        When ``num-supernodes`` is not an integer ≥ 1.
    """
    config = {k: v for k, v in values.items() if k not in HARNESS_KEYS}
    nodes = values.get(SUPERNODES_KEY)
    if nodes is not None and (isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1):
        raise ValueError(
            f"{source}: {SUPERNODES_KEY} must be an integer ≥ 1 (the simulated SuperNodes), "
            f"got {nodes!r}"
        )
    return Experiment(config, nodes)


def read_experiment(path: Path) -> Experiment:
    """Read and split an experiment file.

    Raises
    ------
    ValueError
        When it is not valid TOML (``tomllib.TOMLDecodeError`` is a ValueError) or its
        ``num-supernodes`` is bad; the message names the file.
    """
    try:
        values = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path} is not valid TOML: {err}") from err
    return split_experiment(values, str(path))
