"""Declarations a model can make about itself for the width baselines.

A model whose layers cannot be width-sliced by the generic rule (every Linear/Conv2d cut to
⌈p·out⌉ outputs, the last Linear fixed) exposes ``width_plan()`` returning a :class:`WidthPlan`;
:func:`maestro_common.width.sliceable.make_width_sliceable` then follows it instead. This module
imports nothing of the core, so models can build plans without importing the width library.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class WidthPlan:
    """How a model's layers behave in its width-p sub-model.

    Attributes
    ----------
    fixed_out:
        Qualified names of Linear/Conv2d layers whose outputs are never cut (they write the
        residual stream, or are the classifier); their input width still follows their input.
    units:
        Qualified name → output quantum: the layer's outputs are cut to whole groups of this
        many rows, ``unit·⌈p·out/unit⌉`` (attention projections: whole heads of ``d_head`` rows).
    whole:
        Qualified names of other modules that the sub-model uses whole at every width:
        embeddings, LayerNorms, parameter-free attention cores. Any module not named here that
        the generic rule refuses (normalisation, attention, own parameters) is still refused.
    """

    fixed_out: frozenset[str] = frozenset()
    units: Mapping[str, int] = field(default_factory=dict)
    whole: frozenset[str] = frozenset()
