"""Run-config keys of variants that were measured, lost and then removed from the code.

A config that still names one is refused with the reason and where the verdict is recorded
(:func:`removed_key_message`). Configs that runs stored before the removal (``config.json``, a
checkpoint's config, the harness's record) hold every key at its default, so readers of old runs
drop a removed key that holds its old default (:func:`without_removed_defaults`); a run that set
it used the removed variant and cannot be rebuilt by this code. This module is a leaf.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Where each removed variant's measurements and verdict are kept.
VERDICTS = 'docs/results.md, "Variants measured"'


@dataclass(frozen=True)
class RemovedKey:
    """One removed run-config key.

    Attributes
    ----------
    default : Any
        The value every run had that did not set the key (what older runs stored).
    reason : str
        What the variant did and why it went, completing "its variant ...".
    commit : str
        The last commit whose code had the variant.
    """

    default: Any
    reason: str
    commit: str = "59c7f3e"


# Removed key -> what it was. Add a key here when its variant's code is removed.
REMOVED_KEYS: dict[str, RemovedKey] = {
    "hybrid-width": RemovedKey(
        default=False,
        reason="nested the first conv by width and the factored layers by rank; it tied plain "
        "Maestro on Fashion-MNIST and does not apply to the Shakespeare character model",
    ),
    "warmup-method": RemovedKey(
        default="fedavg-all",
        reason="chose what trained the federated dense warm-up (the top tier, or FjORD's width "
        "prefixes); both forms ended below Maestro without a warm-up on Fashion-MNIST, so the "
        "federation has no warm-up and the centralized trainer's trains the dense model",
    ),
    "distill": RemovedKey(
        default=False,
        reason="trained the smaller sub-models on the prefix's softened output; training "
        "collapsed on LeNet-5 and the Shakespeare screen ended 9-13 pp below plain Maestro",
    ),
    "distill-temperature": RemovedKey(
        default=1.0, reason="was the temperature of distill, removed with it"
    ),
    "pass-average": RemovedKey(
        default=False,
        reason="averaged a nested step's gradients over its passes; it tied on Fashion-MNIST and "
        "on the Shakespeare screen and lost 1 pp centrally",
    ),
    "frobenius-decay": RemovedKey(
        default=0.0,
        reason="penalised the factored layers' products; its gain on LeNet-5 was below the noise "
        "and the Shakespeare screen lost 4-6 pp",
    ),
    "initial-ranks": RemovedKey(
        default="full",
        reason="capped the factored layers at the dense size (break-even ranks); behind every "
        "method on Fashion-MNIST and 1.2-1.7 pp behind on the Shakespeare screen",
    ),
    "rank-quantum": RemovedKey(
        default=1,
        reason="rounded a tier's ranks down to multiples of q; it cost 2.2 pp at the smallest "
        "tier of the CNN and 8.9 pp on the Shakespeare screen",
    ),
    "alternate-period": RemovedKey(
        default=2,
        reason="ran the one-pass nested step's prefix on k-1 steps of every k (sub-models = "
        "alternate); at k = 3 it trailed k = 2 on every tier of the Shakespeare screen, by "
        "0.6-1.2 pp",
        commit="097aab9",
    ),
}


def removed_key_message(key: str) -> str:
    """Why ``key`` (one of :data:`REMOVED_KEYS`) is refused, and where its verdict is recorded."""
    removed = REMOVED_KEYS[key]
    return (
        f"run-config key {key!r} was removed (its variant {removed.reason}; its code last at "
        f"commit {removed.commit}); the verdict is recorded in {VERDICTS}: drop the key"
    )


def without_removed_defaults(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """``run_config`` without the removed keys that hold their old default (also as the string
    ``"false"``/``"true"`` a command line gives); any other value of a removed key is kept, so
    the parser refuses it with :func:`removed_key_message`."""
    return {
        key: value
        for key, value in run_config.items()
        if key not in REMOVED_KEYS or not _is_default(value, REMOVED_KEYS[key].default)
    }


def _is_default(value: Any, default: Any) -> bool:
    if isinstance(value, str) and not isinstance(default, str):
        return value.strip().lower() == str(default).lower()
    return isinstance(value, bool) == isinstance(default, bool) and value == default
