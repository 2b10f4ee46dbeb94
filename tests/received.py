"""What a Maestro tier receives, cut by the method object the apps use (a test helper)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from maestro_common.app.codec import load_arrays, model_arrays
from maestro_common.app.methods import METHODS
from maestro_common.lowrank.accounting import count_params
from maestro_common.lowrank.budget import use_budget
from maestro_common.ml.prefix import array_shapes, take_prefix


def model_arrays_at_budget(model: nn.Module, beta: float) -> dict[str, np.ndarray]:
    """The arrays a Maestro tier of budget β receives from ``model``'s global arrays."""
    arrays = model_arrays(model)
    shapes = METHODS["maestro"].shapes(model, array_shapes(arrays), beta, input_shape=())
    return take_prefix(arrays, shapes)


def assert_tier_round_trip(
    model: nn.Module,
    fresh: Callable[[], nn.Module],
    beta: float,
    input_shape: Sequence[int],
) -> Mapping[str, np.ndarray]:
    """A tier's arrays, loaded into a fresh model, compute what ``model`` computes at β, and
    carry exactly the sub-model's parameters (float32, no buffers); returns the arrays."""
    arrays = model_arrays_at_budget(model, beta)
    client = load_arrays(fresh(), arrays)
    x = torch.randn(2, *input_shape)
    with torch.no_grad(), use_budget(model, beta):
        expected = model(x)
    torch.testing.assert_close(client(x), expected)
    assert sum(a.nbytes for a in arrays.values()) == 4 * count_params(model, beta)
    return arrays
