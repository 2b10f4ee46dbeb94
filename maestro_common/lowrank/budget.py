"""The one budget context of the project: run any model as its nested sub-model of budget β.

A factored model's sub-model keeps ⌈β·r_l⌉ components of each layer
(:func:`maestro_common.lowrank.layers.use_ranks`); a width model's (FjORD / HeteroFL baselines)
keeps ⌈β·C_l⌉ output channels of each hidden layer
(:func:`maestro_common.width.sliceable.use_width`). Both are applied, so callers (evaluation,
accounting) need not know which kind of model they hold; dense modules of either kind are used
whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from maestro_common.lowrank.layers import budget_ranks, use_ranks
from maestro_common.ml.prefix import check_budget
from maestro_common.width.sliceable import use_width

__all__ = ["use_budget"]


@contextmanager
def use_budget(model: nn.Module, beta: float) -> Iterator[None]:
    """Run ``model`` as its nested sub-model of budget β.

    Parameters
    ----------
    model:
        A dense, factored or width model.
    beta:
        Budget in (0, 1].

    Raises
    ------
    ValueError
        If β is not in (0, 1].
    """
    check_budget(beta)
    with use_ranks(model, budget_ranks(model, beta)), use_width(model, beta):
        yield
