"""Hybrid nesting: a factored model's first layer nested by width, its factored layers by rank.

Maestro keeps a network's first layer dense
(:func:`~maestro_common.lowrank.decompose.default_skip`): factoring the CNN's conv1 (1 → 32
channels, 5x5) saves nothing. So every tier runs all of that layer's output channels, and the
factored conv after it reads all of them, however small the tier's ranks. In the CNN at
β = 0.2 the two together are 88 % of the tier's MACs (2.8 of 3.2 M).

A hybrid model nests that layer by width instead, as FjORD nests every layer: tier β keeps the
first ⌈β·C⌉ of its C output channels, and the factored conv it feeds reads only those. Every
factored layer keeps its rank prefix, inside Maestro's learned ordering. Every cut is still a
leading block: the width layer's ``weight[:c]`` and ``bias[:c]``, and the next layer's ``v`` cut
on its input axis as well as its rank axis, so the wire format and the nested aggregation do not
change. Channel counts round down to multiples of the rank quantum, as ranks do.

Only a first layer that feeds one factored convolution through activations and pooling is
supported (lenet5 and cnn): a normalisation layer after it (resnet18), or a flatten into a
linear (whose input axis holds channels times positions), is refused by :func:`make_hybrid`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from maestro_common.lowrank.layers import LowRankLayer, low_rank_layers
from maestro_common.ml.prefix import is_leading_block, state_key
from maestro_common.ml.probe import dry_pass
from maestro_common.width.sliceable import WidthConv2d, use_width, width_layers

__all__ = [
    "hybrid_axes",
    "hybrid_layers",
    "is_hybrid",
    "make_hybrid",
    "narrow_hybrid",
    "resize_hybrid",
]

SUPPORTED = (
    "a hybrid model needs a first layer (a dense Conv2d) that feeds one factored convolution "
    "through activations and pooling only, such as lenet5's and cnn's conv1"
)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _input_widths(model: nn.Module, input_shape: Sequence[int], width: float) -> dict[str, int]:
    """Input channels each parameterised module receives in one dry pass at ``width``."""
    seen: dict[str, int] = {}

    def recorder(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            x = args[0]
            seen[name] = int(x.shape[1]) if x.dim() > 1 else int(x.shape[0])

        return hook

    hooks = {
        m: recorder(n)
        for n, m in model.named_modules()
        if n and next(m.parameters(False), None) is not None
    }
    dry_pass(model, input_shape, hooks, use_width(model, width))
    return seen


def make_hybrid(model: nn.Module, input_shape: Sequence[int], quantum: int = 1) -> nn.Module:
    """Nest the first (dense) conv of a factored ``model`` by width, in place.

    Parameters
    ----------
    model:
        A model factored by :func:`~maestro_common.lowrank.decompose.decompose` with its first
        conv kept dense.
    input_shape:
        Shape of one sample without the batch axis: a dry forward pass finds the layer that
        reads the first conv's output.
    quantum:
        The rank quantum: the first conv's channel counts at a budget round down to multiples
        of it, as ranks do.

    Returns
    -------
    The same model: the first conv is a :class:`~maestro_common.width.sliceable.WidthConv2d`
    sharing its parameters (``global_out`` set), and the factored conv it feeds has
    ``nested_input`` set.

    Raises
    ------
    ValueError
        If the model is not factored, its first conv is not a dense ungrouped ``nn.Conv2d``, or
        the first conv does not feed exactly one factored convolution through parameter-free
        modules; the model is left unchanged then.
    """
    layers = low_rank_layers(model)
    if not layers:
        raise ValueError(f"{SUPPORTED}; this model has no factored layers")
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs or not convs[0][0]:
        raise ValueError(f"{SUPPORTED}; this model has no Conv2d layer")
    name, first = convs[0]
    if isinstance(first, WidthConv2d):
        raise ValueError(f"{SUPPORTED}; {name} is already nested by width")
    if first.groups != 1 or first.out_channels < 2:
        raise ValueError(f"{SUPPORTED}; {name} has groups={first.groups}, {first.out_channels} out")
    full = _input_widths(model, input_shape, 1.0)
    wide = WidthConv2d.from_module(first)
    wide.global_out = first.out_channels
    wide.width_quantum = quantum
    _set_submodule(model, name, wide)
    try:
        cut = _input_widths(model, input_shape, 0.5)
    except RuntimeError as err:
        _set_submodule(model, name, first)
        raise ValueError(f"{SUPPORTED}; a forward pass with {name} cut failed: {err}") from err
    changed = sorted(n for n in cut if n != name and cut[n] != full.get(n))
    consumer = layers.get(changed[0]) if len(changed) == 1 else None
    if (
        consumer is None
        or consumer.input_axis is None
        or getattr(consumer, "in_channels", None) != first.out_channels
    ):
        _set_submodule(model, name, first)
        raise ValueError(f"{SUPPORTED}; cutting {name} changes the input of {changed or 'none'}")
    consumer.nested_input = True
    # Width accounting at β < 1 needs the input shape (accounting.count_params).
    model.width_input_shape = tuple(input_shape)
    return model


def hybrid_layers(model: nn.Module) -> tuple[dict[str, nn.Module], dict[str, LowRankLayer]]:
    """(the width-nested layers, the factored layers reading them) of a hybrid model."""
    wide = {n: m for n, m in width_layers(model).items() if m.global_out is not None}
    readers = {n: m for n, m in low_rank_layers(model).items() if m.nested_input}
    return wide, readers


def is_hybrid(model: nn.Module) -> bool:
    """Whether ``model`` was made by :func:`make_hybrid`."""
    return any(hybrid_layers(model))


def hybrid_axes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """The width cuts of a hybrid model, as prefix axes: the width layer's output axis of
    ``weight`` and ``bias``, and the reading layer's input axis of ``v`` (its rank axes are the
    layer's own, :meth:`~maestro_common.lowrank.layers.LowRankLayer.factor_axes`)."""
    wide, readers = hybrid_layers(model)
    axes: dict[str, tuple[int, ...]] = {}
    for name, layer in wide.items():
        for param in ("weight", "bias"):
            if getattr(layer, param) is not None:
                axes[state_key(name, param)] = (0,)
    for name, layer in readers.items():
        axes[state_key(name, "v")] = (layer.input_axis,)
    return axes


def _refit(module: nn.Module, param: str, shape: tuple[int, ...], full: tuple[int, ...], key: str):
    old = getattr(module, param)
    if tuple(old.shape) == shape:
        return
    if not is_leading_block(shape, full):
        raise ValueError(f"{key} has shape {shape}: a hybrid model takes a leading block of {full}")
    setattr(module, param, nn.Parameter(old.new_zeros(shape)))


@torch.no_grad()
def resize_hybrid(model: nn.Module, shapes: Mapping[str, Sequence[int]]) -> None:
    """Give a hybrid model's width-cut arrays the given shapes (values undefined: load next).

    Run after the factored layers took their ranks
    (:meth:`~maestro_common.lowrank.layers.LowRankLayer.resize`); each shape must be a leading
    block of the global model's.
    """
    wide, readers = hybrid_layers(model)
    for name, layer in wide.items():
        for param in ("weight", "bias"):
            p = getattr(layer, param)
            if p is not None:
                full = (layer.global_out, *p.shape[1:])
                key = state_key(name, param)
                _refit(layer, param, tuple(shapes[key]), full, key)
    for name, layer in readers.items():
        full = list(layer.v.shape)
        full[layer.input_axis] = layer.in_channels
        key = state_key(name, "v")
        _refit(layer, "v", tuple(shapes[key]), tuple(full), key)


@torch.no_grad()
def narrow_hybrid(model: nn.Module, width: float) -> None:
    """Cut a hybrid model's width-nested layers to their channels at ``width``, in place.

    The width layers become plain ``nn.Conv2d`` of ⌈width·C⌉ (quantized) outputs, and the
    factored layers reading them keep only those input channels (``in_channels`` follows), so
    the model is an ordinary factored model again: it can be truncated, merged and exported.
    """
    wide, readers = hybrid_layers(model)
    if not wide:
        return
    ((name, layer),) = wide.items()  # make_hybrid nests one layer
    probe = torch.zeros(1, layer.in_size, 1, 1, device=layer.weight.device)
    with use_width(model, width):
        c = layer.used_dims(probe)[0]
    conv = nn.Conv2d(
        layer.in_channels,
        c,
        layer.kernel_size,
        layer.stride,
        layer.padding,
        layer.dilation,
        bias=layer.bias is not None,
        padding_mode=layer.padding_mode,
    ).to(layer.weight)
    conv.weight.copy_(layer.weight[:c])
    if layer.bias is not None:
        conv.bias.copy_(layer.bias[:c])
    _set_submodule(model, name, conv)
    for reader in readers.values():
        index = [slice(None)] * reader.v.dim()
        index[reader.input_axis] = slice(0, c)
        reader.v = nn.Parameter(reader.v[tuple(index)].clone())
        reader.in_channels = c
        reader.nested_input = False
