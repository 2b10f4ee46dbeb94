"""Flower's baseline code imported from a local checkout; placeholders for what it never calls."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulations.provenance import git_commit

# --------------------------------------------------------------------------- loading their code


@dataclass
class FlowerCode:
    """Flower's baseline modules, imported from a checkout, and what had to be stubbed."""

    root: Path
    commit: str
    od_layers: types.ModuleType
    od_samplers: types.ModuleType
    fjord_strategy: types.ModuleType
    heterofl_models: types.ModuleType
    heterofl_strategy: types.ModuleType
    stubs: list[str] = field(default_factory=list)


def _placeholder(name: str, attrs: Mapping[str, Any], stubs: list[str]) -> None:
    """Register an empty module ``name`` (and its parents) unless it can be imported."""
    try:
        importlib.import_module(name)
        return
    except ImportError:
        pass
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sub = ".".join(parts[:i])
        if sub not in sys.modules or i == len(parts):
            sys.modules[sub] = types.ModuleType(sub)
    for key, value in attrs.items():
        setattr(sys.modules[name], key, value)
    stubs.append(name)


class _Sink:
    """Swallows every logging call."""

    def __getattr__(self, _name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


class _NoLogger:
    """Stands in for FjORD's ``Logger`` (its module needs coloredlogs)."""

    @classmethod
    def get(cls) -> _Sink:
        return _Sink()


def load_flower(root: Path, commit: str | None = None) -> FlowerCode:
    """Import Flower's FjORD and HeteroFL baseline modules from a checkout at ``root``.

    Raises
    ------
    FileNotFoundError
        If ``root`` does not hold ``baselines/fjord/fjord`` and ``baselines/heterofl/heterofl``.
    """
    root = Path(root)
    fjord_dir, hetero_dir = root / "baselines" / "fjord", root / "baselines" / "heterofl"
    for pkg in (fjord_dir / "fjord" / "od" / "layers", hetero_dir / "heterofl"):
        if not pkg.is_dir():
            raise FileNotFoundError(
                f"{pkg} not found: --flower must be a checkout of Flower's repository "
                "(with baselines/fjord and baselines/heterofl)"
            )
    for name in ("fjord", "heterofl"):
        loaded = sys.modules.get(name)
        if loaded is not None and not str(getattr(loaded, "__file__", "")).startswith(str(root)):
            raise RuntimeError(f"a module {name!r} from elsewhere is already imported")
    sys.path[:0] = [str(fjord_dir), str(hetero_dir)]
    stubs: list[str] = []
    # FjORD: strategy.py imports its client (torchvision datasets) for a type alias only, and a
    # logger needing coloredlogs; aggregate() uses neither.
    _placeholder("fjord.client", {"FJORD_CONFIG_TYPE": dict}, stubs)
    _placeholder("fjord.utils.logger", {"Logger": _NoLogger}, stubs)
    # HeteroFL: utils.py imports hydra for output paths, which the compared code never calls.
    _placeholder("hydra.core.hydra_config", {"HydraConfig": None}, stubs)
    return FlowerCode(
        root=root,
        commit=commit or git_commit(root),
        od_layers=importlib.import_module("fjord.od.layers"),
        od_samplers=importlib.import_module("fjord.od.samplers"),
        fjord_strategy=importlib.import_module("fjord.strategy"),
        heterofl_models=importlib.import_module("heterofl.models"),
        heterofl_strategy=importlib.import_module("heterofl.strategy"),
        stubs=stubs,
    )
