"""What a run is called in sweeps and reports: its method, or the variant of it that it ran."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def method_label(config: Mapping[str, Any]) -> str:
    """A run config's (kebab-case keys) method label.

    The method's name, plus ``+warmup`` when a dense warm-up ran first (``+fjord-warmup`` when
    FjORD's width prefixes trained it): a variant, tuned and reported apart from the method as the
    paper defines it.
    """
    name = str(config["method"])
    if not float(config.get("dense-warmup") or 0):
        return name
    how = config.get("warmup-method", "fedavg-all")
    return f"{name}+warmup" if how == "fedavg-all" else f"{name}+{how}-warmup"
