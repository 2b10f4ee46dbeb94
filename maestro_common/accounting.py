"""Budget accounting of (possibly factored) models: parameters, MACs and wire payload at budget β.

A factored layer at budget β uses its first cap = ``budget_rank(rank, β)`` components (the nested
sub-model of :func:`maestro_common.layers.use_budget`); every dense module is used whole.

MACs count multiply-accumulates of the matrix products only: dense and factored convolutions and
linears, and the two attention matmuls (q·kᵀ and attn·v) of
:class:`maestro_common.models.transformer.ScaledDotProductAttention`. Normalisation,
activations, pooling, softmax, residual and bias additions are ignored; they are a small,
architecture-dependent remainder and ``torch.utils.flop_counter`` ignores them too, which is what
lets :func:`count_macs` be checked against :func:`count_macs_flop_counter`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from maestro_common.layers import (
    LowRankConv2d,
    LowRankLayer,
    LowRankLinear,
    budget_rank,
    low_rank_layers,
    use_budget,
)
from maestro_common.models.transformer import ScaledDotProductAttention

__all__ = ["count_macs", "count_macs_flop_counter", "count_params", "payload_bytes"]


def _check_beta(beta: float) -> None:
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0.0 < beta <= 1.0:
        raise ValueError(f"budget must be in (0, 1], got {beta!r}")


def count_params(model: nn.Module, beta: float = 1.0) -> int:
    """Parameters a client of budget β trains.

    Parameters
    ----------
    model:
        A dense or factored model.
    beta:
        Budget in (0, 1].

    Returns
    -------
    Every parameter of non-factored modules (shared ones once), plus for each factored layer
    cap·(out + fan_in) + bias with cap = ``budget_rank(layer.rank, beta)``.
    """
    _check_beta(beta)
    total = 0
    seen: set[int] = set()
    for module in model.modules():
        if isinstance(module, LowRankLayer):
            cap = budget_rank(module.rank, beta)
            total += cap * (module.out_dim + module.fan_in)
            total += module.bias.numel() if module.bias is not None else 0
            continue
        for p in module.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


def _rank_axes(layer: LowRankLayer) -> dict[str, int]:
    """Axis of each factor along which a rank prefix is taken (see maestro_common.layers)."""
    if isinstance(layer, LowRankConv2d):
        return {"u": 1, "v": 0}
    if isinstance(layer, LowRankLinear):
        return {"u": 1, "v": 1}
    raise ValueError(f"unknown factored layer type {type(layer).__name__}")


def payload_bytes(model: nn.Module, beta: float = 1.0) -> int:
    """Bytes of the model's state dict as sent to a client of budget β.

    Parameters
    ----------
    model:
        A dense or factored model.
    beta:
        Budget in (0, 1].

    Returns
    -------
    Sum over state-dict entries of numel · element size, where each factored layer's ``u`` and
    ``v`` are cut to their first cap components on the rank axis and every other entry (buffers
    included) is whole.
    """
    _check_beta(beta)
    cut: dict[str, tuple[int, int]] = {}
    for name, layer in low_rank_layers(model).items():
        cap = budget_rank(layer.rank, beta)
        prefix = f"{name}." if name else ""
        for key, axis in _rank_axes(layer).items():
            cut[prefix + key] = (axis, cap)
    total = 0
    for key, tensor in model.state_dict().items():
        if key in cut:
            axis, cap = cut[key]
            tensor = tensor.narrow(axis, 0, cap)
        total += tensor.numel() * tensor.element_size()
    return total


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    # Eval so that BatchNorm neither fails on a 1×1 batch of one nor updates its running stats;
    # each module's own flag is restored, since model.train(mode) would flatten mixed modes.
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.training = mode


def _probe(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    p = next(iter(model.parameters()), None)
    device = p.device if p is not None else torch.device("cpu")
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    return torch.zeros((1, *input_shape), device=device, dtype=dtype)


def _layer_macs(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
    if isinstance(module, ScaledDotProductAttention):
        return ScaledDotProductAttention.macs(*args, **kwargs)
    x = args[0]
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return out.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return x.numel() // module.in_features * module.in_features * module.out_features
    if isinstance(module, LowRankLayer):
        # The hook sees the rank passed to forward, if any; _resolve applies the active rank
        # set by use_budget otherwise, exactly as the forward pass itself does.
        rank = args[1] if len(args) > 1 else kwargs.get("rank")
        k = module._resolve(rank)
        if isinstance(module, LowRankConv2d):
            positions = out[:, 0].numel()  # B·H_out·W_out
            return positions * k * (module.fan_in + module.out_dim)
        if isinstance(module, LowRankLinear):
            tokens = x.numel() // module.in_features
            return tokens * k * (module.in_features + module.out_features)
    raise ValueError(f"no MAC formula for {type(module).__name__}")


_COUNTED = (nn.Conv2d, nn.Linear, LowRankConv2d, LowRankLinear, ScaledDotProductAttention)


def count_macs(model: nn.Module, input_shape: Sequence[int], beta: float = 1.0) -> int:
    """Multiply-accumulates of one forward pass of a single sample at budget β, by formula.

    Parameters
    ----------
    model:
        A dense or factored model.
    input_shape:
        Shape of one sample without the batch axis, e.g. ``(1, 28, 28)``.
    beta:
        Budget in (0, 1].

    Returns
    -------
    The sum over forward calls of: Conv2d H_out·W_out·out·(in/groups)·kh·kw; Linear
    tokens·in·out; LowRankConv2d H_out·W_out·k·(in·kh·kw + out); LowRankLinear tokens·k·(in + out);
    attention B·heads·N²·(d_k + d_v). Other operations are ignored (see the module docstring).
    """
    _check_beta(beta)
    total = 0

    def hook(module: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
        nonlocal total
        total += _layer_macs(module, args, kwargs, out)

    handles = [
        m.register_forward_hook(hook, with_kwargs=True)
        for m in model.modules()
        if isinstance(m, _COUNTED)
    ]
    try:
        with _eval_mode(model), use_budget(model, beta), torch.no_grad():
            model(_probe(model, input_shape))
    finally:
        for h in handles:
            h.remove()
    return total


def count_macs_flop_counter(model: nn.Module, input_shape: Sequence[int], beta: float = 1.0) -> int:
    """The same count as :func:`count_macs`, measured by ``torch.utils.flop_counter``.

    Parameters
    ----------
    model:
        A dense or factored model.
    input_shape:
        Shape of one sample without the batch axis.
    beta:
        Budget in (0, 1].

    Returns
    -------
    ``FlopCounterMode``'s total FLOPs of one forward pass of a single sample, halved (it counts a
    multiply-accumulate as two FLOPs).
    """
    _check_beta(beta)
    counter = FlopCounterMode(display=False)
    with _eval_mode(model), use_budget(model, beta), torch.no_grad(), counter:
        model(_probe(model, input_shape))
    return counter.get_total_flops() // 2
