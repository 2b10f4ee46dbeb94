"""The run-config keys as users read them: ``python -m maestro_common.app.keys``.

Prints every key with its default, help and allowed values, the keys that only some methods act
on grouped under their method: the text of ``pyproject.toml``'s ``[tool.flwr.app.config]``
table (a test checks that the two agree; paste this output there after changing a key or a
registry).
"""

from __future__ import annotations

from maestro_common.app.config import describe_keys
from maestro_common.app.task import registries


def key_listing() -> str:
    """:func:`~maestro_common.app.config.describe_keys` with the registries' names."""
    return describe_keys(registries())


if __name__ == "__main__":
    print(key_listing(), end="")
