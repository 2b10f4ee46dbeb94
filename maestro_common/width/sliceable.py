"""Width-sliceable models for the FjORD and HeteroFL baselines.

At width p every hidden layer uses only its first ⌈p·C_out⌉ output channels (units), and its input
width follows from the tensor it receives. Weights are sliced, not copied, so the width-p
sub-model's every weight is the leading block ``w[:out_k, :in_k, ...]`` of the global one, the
project's one prefix rule (:mod:`maestro_common.ml.prefix`). This holds across a flatten too,
because the models flatten channel-major: the first ⌈p·C⌉ channels of a (C, H, W) map are the first
⌈p·C⌉·H·W features, e.g. the FedAvg CNN's ``fc1.weight[:⌈512p⌉, :⌈64p⌉·49]``.

References: Horváth et al., "FjORD: Fair and Accurate Federated Learning under Heterogeneous
Targets with Ordered Dropout", NeurIPS 2021; Diao et al., "HeteroFL: Computation and Communication
Efficient Federated Learning for Heterogeneous Clients", ICLR 2021.

By default only models built from Conv2d / Linear / pooling / activations are supported:
normalisation layers would need per-width statistics or affine slices, grouped convs tie input and
output slices together, and the vision transformer's attention ties the head split to the
embedding width. A model may instead declare a
:class:`~maestro_common.ml.models.plans.WidthPlan` (method ``width_plan()``): which layers keep
their outputs whole (``fixed_out``: the residual stream's writers, the head), which are cut in
whole groups (``units``: attention heads) and which other modules are used whole (embeddings,
LayerNorms of the full-width residual stream, attention cores). The character models do
(``char-transformer``: ⌈p·heads⌉ whole heads and ⌈p·hidden⌉ MLP units per block; ``char-lstm``:
⌈p·H⌉ hidden units per layer). Anything the plan does not name is refused as before.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Self

import torch
import torch.nn.functional as F
from torch import nn

from maestro_common.ml.models.plans import WidthPlan
from maestro_common.ml.models.transformer import ScaledDotProductAttention
from maestro_common.ml.prefix import budget_dim, check_budget, state_key
from maestro_common.ml.probe import dry_pass

__all__ = [
    "WidthConv2d",
    "WidthLayer",
    "WidthLinear",
    "make_width_sliceable",
    "use_width",
    "width_layers",
    "width_shapes",
]

SUPPORTED = (
    "width baselines support models built from Conv2d/Linear/pooling/activations only, "
    "such as lenet5 and cnn, or models that declare a width plan (char-transformer, char-lstm)"
)

# Layers that cannot be width-sliced consistently (see the module docstring).
_REFUSED: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm*, InstanceNorm*
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    ScaledDotProductAttention,
    nn.MultiheadAttention,
)


class WidthLayer:
    """Behaviour shared by :class:`WidthConv2d` and :class:`WidthLinear`.

    ``active_width`` is set by :func:`use_width` (None: full width). ``fixed_out`` marks the
    classifier, whose outputs are the classes and are never cut. ``width_unit``
    (from a model's width plan) cuts the outputs in whole groups: ``unit·⌈p·out/unit⌉`` rows.
    """

    weight: nn.Parameter
    bias: nn.Parameter | None
    active_width: float | None
    fixed_out: bool
    width_unit: int = 1

    def __init__(self, *args: Any, fixed_out: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # the torch layer's own arguments
        self.fixed_out = fixed_out
        self.active_width = None

    def _adopt(self, module: nn.Conv2d | nn.Linear) -> Self:
        # Share the module's parameter objects (optimisers keep working) and its mode.
        self.weight = module.weight
        self.bias = module.bias
        self.train(module.training)
        return self

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, fixed_out={self.fixed_out}"

    @property
    def out_size(self) -> int:
        """Output channels (units) of the full layer."""
        return self.weight.shape[0]

    @property
    def in_size(self) -> int:
        """Input channels (features) of the full layer."""
        return self.weight.shape[1]

    def _input_width(self, x: torch.Tensor) -> int:
        raise NotImplementedError

    @property
    def width_steps(self) -> int:
        """Number of distinct output widths: p only matters through ⌈p·steps⌉."""
        return self.out_size // self.width_unit

    def out_width(self, width: float | None) -> int:
        """Output rows the layer uses at width p (``None``: full width)."""
        if self.fixed_out or width is None:
            return self.out_size
        return self.width_unit * budget_dim(self.width_steps, width)

    def used_dims(self, x: torch.Tensor) -> tuple[int, int]:
        """(out_k, in_k): the weight rows and columns a forward pass on ``x`` uses now."""
        in_k = self._input_width(x)
        if in_k > self.in_size:
            raise ValueError(
                f"{type(self).__name__}: input has width {in_k} but the layer takes at most "
                f"{self.in_size}"
            )
        return self.out_width(self.active_width), in_k

    def used_shapes(self, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
        """Shape of the leading block of ``weight`` (and ``bias``) a forward pass on ``x`` uses."""
        out_k, in_k = self.used_dims(x)
        shapes = {"weight": (out_k, in_k, *self.weight.shape[2:])}
        if self.bias is not None:
            shapes["bias"] = (out_k,)
        return shapes

    def _sliced(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out_k, in_k = self.used_dims(x)
        # Views, not copies: gradients flow into the leading block of the global parameters.
        bias = self.bias[:out_k] if self.bias is not None else None
        return self.weight[:out_k, :in_k], bias


class WidthConv2d(WidthLayer, nn.Conv2d):
    """An ``nn.Conv2d`` (groups=1) that runs on the leading block of its weight.

    Same parameters and state-dict keys as ``nn.Conv2d``; input channels are taken from the input,
    output channels are ⌈width·out_channels⌉ unless ``fixed_out``.
    """

    def __init__(self, *args: Any, fixed_out: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, fixed_out=fixed_out, **kwargs)
        if self.groups != 1:
            raise ValueError(f"WidthConv2d supports groups=1 only, got groups={self.groups}")

    def _input_width(self, x: torch.Tensor) -> int:
        return x.shape[1] if x.dim() == 4 else x.shape[0]  # batched (B, C, H, W) or (C, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self._sliced(x)
        return self._conv_forward(x, weight, bias)  # (B, out_k, H', W')

    @classmethod
    def from_module(cls, conv: nn.Conv2d, fixed_out: bool = False) -> WidthConv2d:
        """A width conv sharing ``conv``'s parameter objects (optimisers keep working)."""
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            device="meta",  # no allocation: the parameters are replaced right away
            fixed_out=fixed_out,
        )
        return layer._adopt(conv)


class WidthLinear(WidthLayer, nn.Linear):
    """An ``nn.Linear`` that runs on the leading block of its weight.

    Same parameters and state-dict keys as ``nn.Linear``; input features are taken from the
    input's last axis, output units are ⌈width·out_features⌉ unless ``fixed_out``.
    """

    def _input_width(self, x: torch.Tensor) -> int:
        return x.shape[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self._sliced(x)
        return F.linear(x, weight, bias)  # (..., out_k)

    @classmethod
    def from_module(cls, linear: nn.Linear, fixed_out: bool = False) -> WidthLinear:
        """A width linear sharing ``linear``'s parameter objects (optimisers keep working)."""
        layer = cls(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            device="meta",
            fixed_out=fixed_out,
        )
        return layer._adopt(linear)


def _refused(m: nn.Module) -> bool:
    # A module whose class sets ``width_sliceable = False`` is nested another way: the factored
    # layers of maestro_common.lowrank.layers, a floor above this one, which this module does not
    # import (docs/architecture.md).
    return isinstance(m, _REFUSED) or getattr(m, "width_sliceable", True) is False


def _check_supported(model: nn.Module, plan: WidthPlan | None = None) -> None:
    whole = plan.whole if plan is not None else frozenset()
    for name, m in model.named_modules():
        where = f"{name or 'the model'} ({type(m).__name__})"
        if name in whole and getattr(m, "width_sliceable", True) is not False:
            continue  # declared by the model's width plan: used whole at every width
        if _refused(m):
            raise ValueError(f"{SUPPORTED}; {where} cannot be width-sliced")
        if isinstance(m, nn.Conv2d) and m.groups != 1:
            raise ValueError(f"{SUPPORTED}; {where} is a grouped conv (groups={m.groups})")
        own = next(m.parameters(recurse=False), None)
        if own is not None and not isinstance(m, nn.Conv2d | nn.Linear):
            # Parameters outside Conv2d/Linear (embeddings, tokens, other layers) have no
            # defined width slice.
            raise ValueError(f"{SUPPORTED}; {where} holds parameters of its own")


def _model_plan(model: nn.Module) -> WidthPlan | None:
    """The model's declared width plan (``width_plan()``), checked against its modules."""
    declare = getattr(model, "width_plan", None)
    if declare is None:
        return None
    plan = declare()
    if not isinstance(plan, WidthPlan):
        raise ValueError(f"width_plan() must return a WidthPlan, got {type(plan).__name__}")
    modules = dict(model.named_modules())
    layers = {n for n, m in modules.items() if isinstance(m, nn.Conv2d | nn.Linear)}
    bad = sorted((set(plan.fixed_out) | set(plan.units)) - layers)
    if bad:
        raise ValueError(f"width plan names {bad}, which are not Conv2d/Linear layers")
    missing = sorted(set(plan.whole) - set(modules))
    if missing:
        raise ValueError(f"width plan names modules {missing} that the model does not have")
    for name, unit in plan.units.items():
        out = modules[name].weight.shape[0]
        if isinstance(unit, bool) or not isinstance(unit, int) or unit < 1 or out % unit:
            raise ValueError(
                f"width plan: {name} has {out} outputs, not a multiple of its unit {unit!r}"
            )
    return plan


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def make_width_sliceable(model: nn.Module, input_shape: Sequence[int] | None = None) -> nn.Module:
    """Replace every ``nn.Conv2d`` / ``nn.Linear`` of ``model`` in place by its width version.

    Parameters
    ----------
    model:
        A dense model built from Conv2d / Linear / pooling / activations (lenet5, cnn), whose
        classifier is its last registered Linear (the project's model convention), or a model
        with a ``width_plan()`` (see the module docstring), which then sets the fixed and
        grouped layers. Layers that already are width layers are kept as they are.
    input_shape:
        Optional shape of one sample without the batch axis, stored as
        ``model.width_input_shape``: :func:`maestro_common.lowrank.accounting.count_params` needs it
        at β < 1 (a linear's input width after a flatten depends on
        the feature-map size) and fall back to it when not given one.

    Returns
    -------
    The same model object; its parameters (and so its state dict and any optimiser holding them)
    are unchanged. The last Linear gets ``fixed_out=True``; a model without a Linear has its last
    Conv2d as the classifier. With a width plan: exactly the plan's ``fixed_out`` layers are
    fixed and its ``units`` set each layer's ``width_unit``.

    Raises
    ------
    ValueError
        If the model contains normalisation layers, grouped convs, factored layers, attention or
        other parameterised modules that no width plan declares, or its plan names layers it
        does not have; nothing is modified then.
    """
    plan = _model_plan(model)
    _check_supported(model, plan)  # before any change, so a refused model is left intact
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    if not layers:
        raise ValueError(f"{SUPPORTED}; the model has no Conv2d or Linear layer")
    if any(not name for name, _ in layers):
        raise ValueError("make_width_sliceable needs a model that contains its layers")
    linears = [n for n, m in layers if isinstance(m, nn.Linear)]
    classifier = linears[-1] if linears else layers[-1][0]
    fixed_names = set(plan.fixed_out) if plan is not None else {classifier}
    units = dict(plan.units) if plan is not None else {}
    for name, m in layers:
        if isinstance(m, WidthLayer):
            continue
        fixed = name in fixed_names
        if isinstance(m, nn.Conv2d):
            new: nn.Module = WidthConv2d.from_module(m, fixed_out=fixed)
        else:
            new = WidthLinear.from_module(m, fixed_out=fixed)
        new.width_unit = units.get(name, 1)
        _set_submodule(model, name, new)
    if input_shape is not None:
        model.width_input_shape = tuple(input_shape)
    return model


def width_layers(model: nn.Module) -> dict[str, WidthLayer]:
    """The width layers of ``model`` by qualified name, in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, WidthLayer)}


@contextmanager
def use_width(model: nn.Module, width: float) -> Iterator[None]:
    """Run ``model`` as its width-``width`` sub-model; a no-op for a model without width layers.

    Parameters
    ----------
    model:
        A model made by :func:`make_width_sliceable` (or any model).
    width:
        p in (0, 1]: each non-classifier width layer uses ⌈p·C_out⌉ outputs.
    """
    width = check_budget(width, "width")
    layers = list(width_layers(model).values())
    previous = [layer.active_width for layer in layers]
    try:
        for layer in layers:
            layer.active_width = width
        yield
    finally:
        # Restore rather than clear, so that nested contexts compose.
        for layer, old in zip(layers, previous, strict=True):
            layer.active_width = old


def width_shapes(
    model: nn.Module, width: float, input_shape: Sequence[int]
) -> dict[str, tuple[int, ...]]:
    """The shape of every state-dict entry that the width-p sub-model uses.

    Parameters
    ----------
    model:
        A width model (from :func:`make_width_sliceable`).
    width:
        p in (0, 1].
    input_shape:
        Shape of one sample without the batch axis, e.g. ``(1, 28, 28)``: the input width of a
        linear after a flatten depends on the feature-map size, so a dry forward pass is needed.

    Returns
    -------
    ``{key: shape}`` in state-dict order: the leading block ``[:out_k, :in_k, ...]`` of each width
    layer's ``weight`` and ``[:out_k]`` of its ``bias``; every other entry whole.

    Raises
    ------
    ValueError
        If a width layer is not reached by the forward pass (its used block is undefined).
    """
    width = check_budget(width, "width")
    layers = width_layers(model)
    used: dict[str, dict[str, tuple[int, ...]]] = {}

    def recorder(name: str):
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            shapes = module.used_shapes(args[0])
            # A layer called twice (shared) uses the union of its blocks: the larger one.
            old = used.get(name, shapes)
            used[name] = {k: tuple(map(max, old[k], s)) for k, s in shapes.items()}

        return hook

    dry_pass(
        model, input_shape, {m: recorder(n) for n, m in layers.items()}, use_width(model, width)
    )
    missing = sorted(set(layers) - set(used))
    if missing:
        raise ValueError(f"width layers {missing} were not reached by a forward pass")
    cut = {
        state_key(name, key): shape
        for name, shapes in used.items()
        for key, shape in shapes.items()
    }
    return {key: cut.get(key, tuple(t.shape)) for key, t in model.state_dict().items()}
