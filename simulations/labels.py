"""What a run is called in sweeps and reports: its method, or the variant of it that it ran."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from maestro_common.app.step_rules import resolve_sub_models, resolve_transmission


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
    fall), ``+shrink`` with server-side shrinking (``shrink-every`` > 0), for Maestro
    :func:`nested_step_suffix` (``+split``, ``+collective``: today's default step is
    ``maestro+split+collective``, and ``maestro`` the paper's sandwich on prefixes) and
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
    if config["method"] in ORDERED_METHODS:
        label += nested_step_suffix(config)
    if config.get("compute-match"):
        label += f"+compute-{config['compute-match']}"
    return label


def nested_step_suffix(config: Mapping[str, Any]) -> str:
    """The suffix of an ordered method's step and transmission against the paper's (the
    sandwich on prefixes): ``+<rule>`` for another nested step (``sub-models``, when the
    objective is nested), ``+sub-batch<s>``, ``+collective`` (``transmission``), each ``auto``
    resolved as the run resolved it (:meth:`RunConfig.sub_model_rule`). A key missing from an old
    run's config means the value it had then (:data:`VARIANT_SETTINGS`)."""
    suffix = ""
    transmission = resolve_transmission(
        str(config.get("transmission") or VARIANT_SETTINGS["transmission"]),
        str(config.get("conv-factorization") or "svd"),
    )
    rule = resolve_sub_models(
        str(config.get("sub-models") or VARIANT_SETTINGS["sub-models"]), transmission
    )
    nested = (config.get("objective") or "nested") == "nested"
    if nested and rule != VARIANT_SETTINGS["sub-models"]:
        suffix += f"+{rule}"
    if float(config.get("sub-batch-share") or 1) < 1:
        suffix += f"+sub-batch{float(config['sub-batch-share']):g}"
    if transmission != VARIANT_SETTINGS["transmission"]:
        suffix += f"+{transmission}"
    return suffix


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
# of the method as its paper defines it, which is also what a config without the key means (a
# run made before the key existed): a report's CSVs carry them as columns. Two differ from
# today's defaults: Maestro's default step is `split` with Collective transmission (issue 29),
# labelled ``maestro+split+collective``, while ``maestro`` stays the paper's sandwich on prefixes.
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
# The methods whose nested step and transmission the keys above set (Method.ordered: a test
# checks the registry agrees); the others hold those keys at whatever default, unused.
ORDERED_METHODS = ("maestro",)
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
