"""What Maestro's ``auto`` step settings mean: which components a training node is sent
(``transmission``) and which smaller sub-models its nested step runs (``sub-models``).

Plain functions of the settings' values, so that labels and stored configs resolve ``auto``
exactly as a run did without building a :class:`~maestro_common.app.config.RunConfig`.
"""

from __future__ import annotations


def resolve_transmission(transmission: str, conv_factorization: str) -> str:
    """``transmission`` with ``auto`` resolved: ``collective`` where every factored layer is
    U Vᵀ (``conv-factorization = "svd"``), ``prefix`` where kxk convolutions are Tucker cores
    (two rank axes, which the Collective rule does not sample)."""
    if transmission != "auto":
        return transmission
    return "collective" if conv_factorization == "svd" else "prefix"


def resolve_sub_models(sub_models: str, transmission_rule: str) -> str:
    """``sub-models`` with ``auto`` resolved against the resolved transmission: ``split`` with
    Collective transmission (together ahead of the sandwich on prefixes at about one pass's
    cost), the ``sandwich`` on prefixes (where ``split`` alone trails it; docs/federated.md)."""
    if sub_models != "auto":
        return sub_models
    return "split" if transmission_rule == "collective" else "sandwich"
