"""The metadata of a run-config field: its help text, allowed values and method group.

:func:`setting` declares a field of :class:`~maestro_common.app.config.RunConfig`. Its allowed
values are a :class:`Range` of numbers, :class:`OneOf` a list of names, or a :class:`Rule`; each
says what it allows (for the key listing) and, for a value it refuses, the message.
:func:`describe_settings` lists such fields by method group as TOML lines (the text of
``pyproject.toml``'s ``[tool.flwr.app.config]``). A leaf: it imports no other module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


def _num(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class Range:
    """Numbers between ``low`` and ``high`` (either may be open, or absent: no bound)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself excluded
    high_open: bool = False  # high itself excluded
    note: str = ""  # what the number is, after the interval: "(a share of the rounds)"

    def allows(self, value: float) -> bool:
        lo, hi = self.low, self.high
        return (lo is None or (value > lo if self.low_open else value >= lo)) and (
            hi is None or (value < hi if self.high_open else value <= hi)
        )

    def describe(self) -> str:
        """``≥ 1``, ``> 0``, ``in (0, 1]``, ``in [0, 0.5) (a share cut at each end)``."""
        if self.high is None:
            text = (
                f"{'>' if self.low_open else '≥'} {_num(self.low)}" if self.low is not None else ""
            )
        elif self.low is None:
            text = f"{'<' if self.high_open else '≤'} {_num(self.high)}"
        else:
            text = (
                f"in {'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}"
                f"{')' if self.high_open else ']'}"
            )
        return f"{text} {self.note}" if self.note else text

    def error(self, key: str, value: Any) -> str | None:
        return None if self.allows(value) else f"{key} must be {self.describe()}, got {value}"


@dataclass(frozen=True)
class OneOf:
    """One of a fixed list of names."""

    choices: tuple[str, ...]

    def describe(self) -> str:
        shown = (c or '""' for c in self.choices)  # the empty name visible
        return f"one of {', '.join(shown)}"

    def error(self, key: str, value: Any) -> str | None:
        return None if value in self.choices else f"{key} must be {self.describe()}, got {value!r}"


@dataclass(frozen=True)
class Rule:
    """Values passing ``test``; ``allowed`` says which, for the message and the key list."""

    test: Callable[[Any], bool]
    allowed: str

    def describe(self) -> str:
        return self.allowed

    def error(self, key: str, value: Any) -> str | None:
        return None if self.test(value) else f"{key} must be {self.allowed}, got {value!r}"


Allowed = Range | OneOf | Rule

AT_LEAST_1 = Range(low=1)
NON_NEGATIVE = Range(low=0)
POSITIVE = Range(low=0, low_open=True)
BUDGET = Range(low=0, high=1, low_open=True)
SHARE = Range(low=0, high=1)

# Keys that only some methods act on are grouped by method (``method`` in a field's metadata):
# the one group today.
MAESTRO = "maestro"


def setting(
    default: Any,
    doc: str,
    allowed: Allowed | None = None,
    *,
    method: str | None = None,
    needs: str | None = None,
    unused: str = "",
) -> Any:
    """A run-config field: its default, help text, allowed values and method group.

    Parameters
    ----------
    default:
        The default (also ``pyproject.toml``'s ``[tool.flwr.app.config]``).
    doc:
        One line of help for users.
    allowed:
        What values are allowed; checked by ``RunConfig.__post_init__`` (every float must also
        be finite). Names that live in a registry are checked by
        :func:`maestro_common.app.task.check_names` instead.
    method:
        The method the key belongs to (:data:`MAESTRO`), or None for keys every method reads.
    needs:
        The :class:`~maestro_common.app.methods.Method` flag (``factored``, ``uses_lasso``,
        ``shrinks``) a method must have for the key to leave its default: ``check_names``
        refuses it otherwise, since that method would ignore it. ``unused`` says why.
    """
    metadata = {"doc": doc, "allowed": allowed, "method": method, "needs": needs, "unused": unused}
    return field(default=default, metadata=metadata)


def group_keys(key_fields: Sequence[dataclasses.Field]) -> dict[str | None, list[str]]:
    """The keys of ``key_fields`` by method group (``None``: keys every method reads), in order."""
    groups: dict[str | None, list[str]] = {None: []}
    for f in key_fields:
        groups.setdefault(f.metadata["method"], []).append(f.name.replace("_", "-"))
    return groups


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def describe_settings(
    key_fields: Sequence[dataclasses.Field], names: Mapping[str, Sequence[str]] | None = None
) -> str:
    """Each of ``key_fields`` as a TOML line ``key = default  # help; must be ...``, by group.

    ``names`` gives, per key, the names a registry allows; they replace the field's own
    ``allowed`` in the line.
    """
    names = names or {}
    by_name = {f.name.replace("_", "-"): f for f in key_fields}
    refused = [k for k, f in by_name.items() if f.metadata["needs"]]
    lines = []
    for method, keys in group_keys(key_fields).items():
        if method is None:
            lines.append("# Every method")
        else:
            kept = [k for k in keys if k in refused]
            lines.append(
                f"# {method} only: other methods ignore these keys; with another method, "
                f"{', '.join(kept[:-1])} and {kept[-1]} must keep their defaults"
                if len(kept) > 1
                else f"# {method} only: other methods ignore these keys"
            )
        for key in keys:
            f = by_name[key]
            doc = f.metadata["doc"]
            allowed = OneOf(tuple(names[key])) if key in names else f.metadata["allowed"]
            if allowed is not None:
                doc += f"; must be {allowed.describe()}"
            lines.append(f"{key} = {_toml(f.default):<{max(30 - len(key), 1)}} # {doc}")
    return "\n".join(lines) + "\n"
