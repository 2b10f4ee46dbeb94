"""This project's side of the cross-check: width models, logits, shapes and random updates."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from maestro_common.app.config import RunConfig
from maestro_common.app.cost import matched_width_fn
from maestro_common.app.methods import get_method
from maestro_common.app.task import build_run_model, input_shape
from maestro_common.width.sliceable import use_width

TIERS = "0.2,0.4,0.6,0.8,1.0"  # the project's demo tiers (β)

# ------------------------------------------------------------------------------ our-side helpers


def max_abs_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, float]:
    """Per key, max |a − b| (``inf`` where the shapes differ). The keys must be equal."""
    if set(a) != set(b):
        raise ValueError(f"different keys: {sorted(set(a) ^ set(b))}")
    out = {}
    for key in a:
        x = np.asarray(a[key], dtype=np.float64)
        y = np.asarray(b[key], dtype=np.float64)
        out[key] = float(np.abs(x - y).max()) if x.shape == y.shape else float("inf")
    return out


def param_count(shapes: Mapping[str, Sequence[int]]) -> int:
    """Entries of all arrays of the given shapes."""
    return int(sum(np.prod(s, dtype=np.int64) for s in shapes.values()))


def layer_dims(shapes: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, int]]:
    """(out, in) of every ≥ 2-d ``<layer>.weight`` entry of a shape map."""
    return {
        key.removesuffix(".weight"): (int(s[0]), int(s[1]))
        for key, s in shapes.items()
        if key.endswith(".weight") and len(s) >= 2
    }


def our_width_model(dense: nn.Module, shape: Sequence[int], method: str = "fjord") -> nn.Module:
    """A copy of ``dense`` prepared as this project's width method prepares its global model."""
    return get_method(method).prepare(copy.deepcopy(dense), tuple(shape), None)  # type: ignore[arg-type]


def our_logits(model: nn.Module, x: torch.Tensor, width: float) -> torch.Tensor:
    """Logits of this project's width-``width`` sub-model (eval mode)."""
    model.eval()
    with torch.no_grad(), use_width(model, width):
        return model(x)


def tier_widths(model: str, tiers: str = TIERS) -> list[float]:
    """The widths this project's ``fjord`` trains for the tier labels (MAC-matched to Maestro)."""
    cfg = RunConfig.from_run_config({"method": "fjord", "model": model, "tier-fractions": tiers})
    net, shape = build_run_model(cfg), input_shape(cfg)
    matched = matched_width_fn(cfg, net, shape)
    method = get_method("fjord")
    return [method.budget(b, cfg.tiers, matched) for b in cfg.tiers]


def random_updates(
    glob: Mapping[str, np.ndarray],
    shapes: Sequence[Mapping[str, Sequence[int]]],
    seed: int,
    scale: float = 0.1,
) -> list[dict[str, np.ndarray]]:
    """Per client, its leading blocks of ``glob`` plus Gaussian noise (float32), as replies."""
    rng = np.random.default_rng(seed)
    out = []
    for client in shapes:
        reply = {}
        for key, shape in client.items():
            block = np.asarray(glob[key])[tuple(slice(0, n) for n in shape)]
            reply[key] = (block + scale * rng.standard_normal(block.shape)).astype(block.dtype)
        out.append(reply)
    return out


def state_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
