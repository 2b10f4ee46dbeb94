"""What a run is called in sweeps and reports: its method, or the variant of it that it ran."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def method_label(config: Mapping[str, Any]) -> str:
    """A run config's (kebab-case keys) method label.

    The method's name, plus a suffix for each variant option it ran with: ``+tucker`` (or
    ``+tucker-b2`` …) when kxk convolutions were not SVD-factored, ``+breakeven`` when the
    initial ranks were capped at the dense size (``initial-ranks``), ``+fd`` with Frobenius decay
    (``frobenius-decay`` > 0), ``+freeze-<mode>`` with sequential freezing (``-xN`` for N periods
    per local epoch), ``+warmup`` when a dense
    warm-up ran first (``+fjord-warmup`` when FjORD's width prefixes trained it), and
    ``+pass-average`` when a nested step's gradients were averaged over its passes, ``+gl<λ>``
    with the group lasso (``lasso`` = λ > 0; its value too, since it sets how far the ranks
    fall), ``+shrink`` with server-side shrinking (``shrink-every`` > 0), ``+<rule>`` with
    a nested step other than the sandwich (``sub-models``: ``+alternate``, the one-pass step),
    ``+sub-batch<s>`` with sub-models on a share s of the batch (``sub-batch-share`` < 1),
    ``+collective`` with components sent by the Collective rule (``transmission``) and
    ``+compute-<method>`` when every client's steps were scaled to that method's compute
    (``compute-match``): a variant, tuned and reported apart from the method as the paper
    defines it.

    Historical suffixes: ``initial-ranks``, ``frobenius-decay``, ``pass-average`` and the
    ``factor`` and ``layer`` freeze modes were removed (issue 31; the last commit with their code
    is 59c7f3e), but old run folders' ``config.json`` still hold them, and the results CSVs in
    ``docs/results/`` are labelled by them: they are read and labelled as before.
    """
    label = str(config["method"])
    conv = str(config.get("conv-factorization") or "svd")
    if conv != "svd":
        label += f"+{conv}"
    if str(config.get("initial-ranks") or "full") != "full":
        label += f"+{config['initial-ranks']}"
    if float(config.get("frobenius-decay") or 0):
        label += "+fd"
    label += freeze_suffix(config.get("freeze"), config.get("freeze-per-epoch"))
    if float(config.get("dense-warmup") or 0):
        how = config.get("warmup-method", "fedavg-all")
        label += "+warmup" if how == "fedavg-all" else f"+{how}-warmup"
    if config.get("pass-average") in (True, "true"):
        label += "+pass-average"
    if float(config.get("lasso") or 0):
        label += f"+gl{float(config['lasso']):g}"
    if int(config.get("shrink-every") or 0):
        label += "+shrink"
    rule = config.get("sub-models") or VARIANT_SETTINGS["sub-models"]
    if rule != VARIANT_SETTINGS["sub-models"]:
        label += f"+{rule}"
    if float(config.get("sub-batch-share") or 1) < 1:
        label += f"+sub-batch{float(config['sub-batch-share']):g}"
    transmission = config.get("transmission") or VARIANT_SETTINGS["transmission"]
    if transmission != VARIANT_SETTINGS["transmission"]:
        label += f"+{transmission}"
    if config.get("compute-match"):
        label += f"+compute-{config['compute-match']}"
    return label


def freeze_suffix(mode: Any, per_epoch: Any = 1) -> str:
    """``+freeze-<mode>`` (``-xN`` with N > 1 periods per epoch); empty without freezing."""
    if not mode or mode == "none":
        return ""
    per = int(per_epoch or 1)
    return f"+freeze-{mode}" + (f"-x{per}" if per > 1 else "")


def method_list(text: str) -> list[str]:
    """A comma list of method labels as given on a command line (``"fjord, fedavg-fit"``)."""
    return [name.strip() for name in text.split(",") if name.strip()]


# The run-config settings that :func:`method_label` turns into a variant suffix, with the value
# a config without the key means (RunConfig's defaults): a report's CSVs carry them as columns.
# Entries marked historical are keys of removed options (issue 31), kept to read old run folders.
VARIANT_SETTINGS: dict[str, Any] = {
    "conv-factorization": "svd",
    "initial-ranks": "full",  # historical: break-even initial ranks removed
    "frobenius-decay": 0.0,  # historical: Frobenius decay removed
    "freeze": "none",  # its factor and layer modes are historical; stage remains
    "freeze-per-epoch": 1,
    "dense-warmup": 0.0,
    "warmup-method": "fedavg-all",
    "pass-average": False,  # historical: pass-averaged gradients removed
    "lasso": 0.0,
    "shrink-every": 0,
    "sub-models": "sandwich",
    "sub-batch-share": 1.0,
    "transmission": "prefix",
    "compute-match": "",
}
# The VARIANT_SETTINGS keys that are no longer run-config keys: options since removed, whose
# values old run folders' config.json still hold.
HISTORICAL_SETTINGS = ("initial-ranks", "frobenius-decay", "warmup-method", "pass-average")


def variant_of(config: Mapping[str, Any]) -> str:
    """The variant part of a run config's label, without its leading ``+`` (``"warmup"``,
    ``"tucker+breakeven"``); empty for the method as the paper defines it."""
    method, label = str(config["method"]), method_label(config)
    return label[len(method) + 1 :]


def variant_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The run config's value of every :data:`VARIANT_SETTINGS` key (its default when absent)."""
    return {key: config.get(key, default) for key, default in VARIANT_SETTINGS.items()}
