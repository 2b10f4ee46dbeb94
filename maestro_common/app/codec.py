"""The wire codec: a model ↔ named numpy arrays, and loading received prefixes into a model.

Keys are ``state_dict`` names. A factored layer's ``u`` and ``v`` are cut along their rank
axis; every other array travels whole (docs/architecture.md, "The prefix rule"). Nothing here
knows about Flower.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from maestro_common.lowrank.layers import low_rank_layers
from maestro_common.ml.prefix import is_leading_block, leading_block, state_key


def model_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    """Every state_dict entry as a numpy array (copied to host memory)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def prefix_axes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """For each factored layer's factors (``u``, ``v``, a Tucker ``core``), the axes a rank
    budget cuts."""
    axes: dict[str, tuple[int, ...]] = {}
    for name, layer in low_rank_layers(model).items():
        for param, param_axes in layer.factor_axes().items():
            axes[state_key(name, param)] = param_axes
    return axes


@torch.no_grad()
def load_arrays(model: nn.Module, arrays: Mapping[str, np.ndarray]) -> nn.Module:
    """Load named arrays into ``model``, resizing factored layers to the ranks the arrays carry.

    Raises
    ------
    ValueError
        When keys are missing or unknown, or a shape does not fit the architecture.
    """
    expected = set(model.state_dict())
    missing, unknown = sorted(expected - set(arrays)), sorted(set(arrays) - expected)
    if missing or unknown:
        raise ValueError(f"arrays do not match the model: missing {missing}, unknown {unknown}")
    for name, layer in low_rank_layers(model).items():
        key = state_key(name, "u")
        u = arrays[key]
        k = u.shape[layer.rank_axes["u"]] if u.ndim == layer.u.ndim else -1
        if not 1 <= k <= layer.max_rank:
            raise ValueError(
                f"{key} has shape {tuple(u.shape)}: its rank axis must hold 1..{layer.max_rank}"
            )
        if k != layer.rank:
            layer.resize(k)
    state = {k: torch.as_tensor(np.asarray(v)) for k, v in arrays.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"arrays do not fit the model: {err}") from err
    return model


@torch.no_grad()
def load_leading_blocks(model: nn.Module, arrays: Mapping[str, np.ndarray]) -> nn.Module:
    """Copy each array into the leading block of the model's tensor of the same name.

    For width sub-models: the model keeps its full shapes, the part outside the received block is
    zeroed (a width-p sub-model never reads it).

    Raises
    ------
    ValueError
        When keys are missing or unknown, or an array is not a leading block of its tensor.
    """
    state = model.state_dict()
    missing, unknown = sorted(set(state) - set(arrays)), sorted(set(arrays) - set(state))
    if missing or unknown:
        raise ValueError(f"arrays do not match the model: missing {missing}, unknown {unknown}")
    for key, tensor in state.items():
        arr = np.asarray(arrays[key])
        if not is_leading_block(arr.shape, tuple(tensor.shape)):
            raise ValueError(
                f"{key}: shape {arr.shape} is not a leading block of {tuple(tensor.shape)}"
            )
        tensor.zero_()
        tensor[leading_block(arr.shape)] = torch.as_tensor(arr, dtype=tensor.dtype)
    return model
