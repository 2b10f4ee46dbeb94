"""Budget accounting of (possibly factored or width) models: parameters and MACs at β.

A factored layer at budget β uses its first cap = ``budget_rank(rank, β)`` components; a width
layer (:mod:`maestro_common.width.sliceable`) at budget β uses the leading block
``[:out_k, :in_k, ...]`` of its weight, out_k = ⌈β·out⌉ (whole for the classifier) and in_k its
input's width. This is the nested sub-model of :func:`maestro_common.lowrank.budget.use_budget`;
every other module is used whole.

MACs count multiply-accumulates of the matrix products only: dense and factored convolutions and
linears, and the two attention matmuls (q·kᵀ and attn·v) of
:class:`maestro_common.ml.models.transformer.ScaledDotProductAttention`. Normalisation,
activations, pooling, softmax, residual and bias additions are ignored; they are a small,
architecture-dependent remainder and ``torch.utils.flop_counter`` ignores them too, which is what
lets :func:`count_macs` be checked against :func:`count_macs_flop_counter`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from math import prod
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from maestro_common.lowrank.branched import BranchedTuckerConv2d
from maestro_common.lowrank.budget import use_budget
from maestro_common.lowrank.layers import (
    LowRankConv2d,
    LowRankLayer,
    LowRankLinear,
    budget_rank,
)
from maestro_common.lowrank.tucker import TuckerConv2d
from maestro_common.ml.models.transformer import ScaledDotProductAttention
from maestro_common.ml.prefix import check_budget, state_key
from maestro_common.ml.probe import eval_mode, probe_input
from maestro_common.width.sliceable import WidthLayer, width_layers, width_shapes

__all__ = [
    "count_macs",
    "count_macs_flop_counter",
    "count_macs_in",
    "count_params",
    "step_macs",
]


def _width_cut(
    model: nn.Module, beta: float, input_shape: Sequence[int] | None
) -> dict[str, tuple[int, ...]]:
    """Used shapes of the width layers' entries at β (empty for a model without width layers)."""
    layers = width_layers(model)
    if not layers:
        return {}
    keys = {
        state_key(name, key)
        for name, layer in layers.items()
        for key in ("weight", "bias")
        if getattr(layer, key) is not None
    }
    if beta == 1.0:
        # Every layer is used whole at full width; no forward pass (nor input shape) needed.
        return {key: tuple(t.shape) for key, t in model.state_dict().items() if key in keys}
    if input_shape is None:
        input_shape = getattr(model, "width_input_shape", None)
    if input_shape is None:
        raise ValueError(
            "a width model at budget < 1 needs input_shape (a linear's input width after a "
            "flatten depends on the feature-map size): pass it, or give it to "
            "make_width_sliceable"
        )
    shapes = width_shapes(model, beta, input_shape)
    return {key: shape for key, shape in shapes.items() if key in keys}


def count_params(
    model: nn.Module, beta: float = 1.0, input_shape: Sequence[int] | None = None
) -> int:
    """Parameters a client of budget β trains.

    Parameters
    ----------
    model:
        A dense, factored or width model.
    beta:
        Budget in (0, 1].
    input_shape:
        Shape of one sample without the batch axis; needed for a width model at β < 1 unless
        the model carries ``width_input_shape`` (see
        :func:`maestro_common.width.sliceable.make_width_sliceable`), ignored otherwise.

    Returns
    -------
    Every parameter of other modules (shared ones once), plus for each factored layer
    ``params_at(cap)`` + bias with cap = ``budget_rank(layer.rank, beta)``
    (cap·(out + fan_in); a Tucker layer adds its cap² core), plus for each width
    layer the entries of the leading blocks of its weight and bias that the sub-model uses.
    """
    check_budget(beta)
    cut = _width_cut(model, beta, input_shape)
    total = 0
    seen: set[int] = set()
    for name, module in model.named_modules():
        if isinstance(module, WidthLayer):
            for key in ("weight", "bias"):
                p = getattr(module, key)
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    total += prod(cut[state_key(name, key)])
            continue
        if isinstance(module, LowRankLayer):
            total += module.params_at(budget_rank(module.rank, beta))
            total += module.bias.numel() if module.bias is not None else 0
            continue
        for p in module.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


def _layer_macs(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
    if isinstance(module, ScaledDotProductAttention):
        return ScaledDotProductAttention.macs(*args, **kwargs)
    x = args[0]
    # Widths are read off the tensors, not the module: a width layer
    # (maestro_common.width.sliceable) uses only a leading block of its weight; for any other layer
    # the two agree.
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        in_channels = x.shape[-3]  # batched (B, C, H, W) or unbatched (C, H, W)
        return out.numel() * (in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return x.numel() * out.shape[-1]  # tokens · in · out
    if isinstance(module, LowRankLayer):
        # The hook sees the rank passed to forward, if any; _resolve applies the active rank
        # set by use_budget otherwise, exactly as the forward pass itself does.
        rank = args[1] if len(args) > 1 else kwargs.get("rank")
        k = module._resolve(rank)
        # A conv's input channels are read off the input too.
        if isinstance(module, TuckerConv2d | BranchedTuckerConv2d):
            kh, kw = module.kernel_size
            width = module.branches * k  # inner channels; each core output reads k of them
            positions_in = x[:, 0].numel()  # B·H_in·W_in: the first 1x1 runs before the stride
            positions = out[:, 0].numel()
            return positions_in * x.shape[1] * width + positions * width * (
                k * kh * kw + module.out_channels
            )
        if isinstance(module, LowRankConv2d):
            kh, kw = module.kernel_size
            positions = out[:, 0].numel()  # B·H_out·W_out
            return positions * k * (x.shape[1] * kh * kw + module.out_dim)
        if isinstance(module, LowRankLinear):
            tokens = x.numel() // module.in_features
            return tokens * k * (module.in_features + module.out_features)
    raise ValueError(f"no MAC formula for {type(module).__name__}")


_COUNTED = (
    nn.Conv2d,
    nn.Linear,
    LowRankConv2d,
    LowRankLinear,
    TuckerConv2d,
    BranchedTuckerConv2d,
    ScaledDotProductAttention,
)


def count_macs(model: nn.Module, input_shape: Sequence[int], beta: float = 1.0) -> int:
    """Multiply-accumulates of one forward pass of a single sample at budget β, by formula.

    Parameters
    ----------
    model:
        A dense, factored or width model.
    input_shape:
        Shape of one sample without the batch axis, e.g. ``(1, 28, 28)``.
    beta:
        Budget in (0, 1].

    Returns
    -------
    The sum over forward calls of: Conv2d H_out·W_out·out·(in/groups)·kh·kw; Linear
    tokens·in·out; LowRankConv2d H_out·W_out·k·(in·kh·kw + out); TuckerConv2d
    H_in·W_in·in·k + H_out·W_out·k·(k·kh·kw + out) (branched with b branches: k → b·k, the core's
    k·kh·kw unchanged); LowRankLinear tokens·k·(in + out);
    attention B·heads·N²·(d_k + d_v). For width layers, in and out are the widths used at β.
    Other operations are ignored (see the module docstring).
    """
    check_budget(beta)
    return count_macs_in(model, input_shape, lambda m: use_budget(m, beta))


def count_macs_flop_counter(model: nn.Module, input_shape: Sequence[int], beta: float = 1.0) -> int:
    """The same count as :func:`count_macs`, measured by ``torch.utils.flop_counter``.

    Parameters
    ----------
    model:
        A dense, factored or width model.
    input_shape:
        Shape of one sample without the batch axis.
    beta:
        Budget in (0, 1].

    Returns
    -------
    ``FlopCounterMode``'s total FLOPs of one forward pass of a single sample, halved (it counts a
    multiply-accumulate as two FLOPs).
    """
    check_budget(beta)
    counter = FlopCounterMode(display=False)
    with eval_mode(model), use_budget(model, beta), torch.no_grad(), counter:
        model(probe_input(model, input_shape))
    return counter.get_total_flops() // 2


def count_macs_in(
    model: nn.Module,
    input_shape: Sequence[int],
    context: Callable[[nn.Module], AbstractContextManager[Any]],
) -> int:
    """:func:`count_macs` of one forward pass of a single sample run inside ``context(model)``
    (e.g. the context of one pass of a training step, per-layer ranks or a width)."""
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
        with eval_mode(model), context(model), torch.no_grad():
            model(probe_input(model, input_shape))
    finally:
        for h in handles:
            h.remove()
    return total


def step_macs(model: nn.Module, input_shape: Sequence[int], sampler: Any | None) -> float:
    """Forward MACs per example of one training step of ``model`` under ``sampler``.

    Every forward pass the step runs is counted (:meth:`pass_mix` of the sampler, the rules that
    draw the steps): a nested step's prefix and sub-models, a sampled step's one pass in
    expectation over its draws. Without a sampler, one pass of the whole model. Backward passes
    are not counted (the virtual clock prices them as a multiple of these, ``server.clock``).
    """
    if sampler is None:
        return float(count_macs_in(model, input_shape, lambda m: nullcontext()))
    return float(
        sum(share * count_macs_in(model, input_shape, run) for share, run in sampler.pass_mix())
    )
