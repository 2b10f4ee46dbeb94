"""What a Maestro tier receives, cut by the method object the apps use (a test helper)."""

from __future__ import annotations

import numpy as np
from torch import nn

from maestro_common.app.codec import model_arrays
from maestro_common.app.methods import METHODS
from maestro_common.lowrank.prefix import array_shapes, take_prefix


def model_arrays_at_budget(model: nn.Module, beta: float) -> dict[str, np.ndarray]:
    """The arrays a Maestro tier of budget β receives from ``model``'s global arrays."""
    arrays = model_arrays(model)
    shapes = METHODS["maestro"].shapes(model, array_shapes(arrays), beta, input_shape=())
    return take_prefix(arrays, shapes)
