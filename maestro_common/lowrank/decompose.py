"""Turn dense models into factored ones (SVD init) and factored layers back into dense ones."""

from __future__ import annotations

from collections.abc import Collection
from math import prod

from torch import nn

from maestro_common.lowrank.branched import BRANCH_COUNTS, BranchedTuckerConv2d
from maestro_common.lowrank.layers import (
    LowRankConv2d,
    LowRankLayer,
    LowRankLinear,
    budget_rank,
    low_rank_layers,
)
from maestro_common.lowrank.tucker import TuckerConv2d

_FACTORABLE = (nn.Linear, nn.Conv2d)
# How a kxk convolution (k > 1) is factored: svd (a kxk conv to r channels, then a 1x1 conv to
# out), tucker (1x1 in→r, kxk core r→r, 1x1 r→out) or the branched Tucker tucker-bN (1x1 in→N·r,
# a kxk core of N groups r→r, 1x1 N·r→out). Linears and 1x1 convs always use SVD.
CONV_FACTORIZATIONS = ("svd", "tucker", *(f"tucker-b{b}" for b in BRANCH_COUNTS))


def branches_of(conv_factorization: str) -> int:
    """The branch count of a branched Tucker factorization (``tucker-b4`` → 4), else 1."""
    prefix = "tucker-b"
    return int(conv_factorization[len(prefix) :]) if conv_factorization.startswith(prefix) else 1


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def default_skip(model: nn.Module) -> set[str]:
    """The first conv (or first layer) and the classifier (last linear) stay dense.

    This follows Maestro and Pufferfish: the first layer is cheap and sensitive, the classifier
    is small and feeds the loss directly. A model that declares ``keep_dense`` (a collection of
    qualified layer names, e.g. the character models' ``("head",)``: their first layer is an
    embedding, and the first linear is a block projection that must be factored) keeps exactly
    those dense instead.
    """
    declared = getattr(model, "keep_dense", None)
    if declared is not None:
        return set(declared)
    names = [n for n, m in model.named_modules() if isinstance(m, _FACTORABLE)]
    if not names:
        return set()
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    skip = {convs[0] if convs else names[0]}
    if linears:
        skip.add(linears[-1])
    return skip


def decompose(
    model: nn.Module,
    skip: Collection[str] | None = None,
    rank_fraction: float = 1.0,
    conv_factorization: str = "svd",
) -> nn.Module:
    """Replace Linear/Conv2d layers of ``model`` in place by factored layers initialised by SVD.

    Parameters
    ----------
    model:
        A dense model; its current weights are factored (U = P√S, V = Q√S).
    skip:
        Qualified names of layers to keep dense. ``None``: :func:`default_skip` (first conv and
        classifier). Pass an empty collection to factor every layer.
    rank_fraction:
        Initial kept rank as a fraction of each layer's full rank, in (0, 1]. At 1.0 the factored
        model computes exactly what the dense one did.
    conv_factorization:
        One of :data:`CONV_FACTORIZATIONS`: how kxk convolutions (k > 1) are factored.

    Returns
    -------
    The same model object, modified.
    """
    if not 0.0 < rank_fraction <= 1.0:
        raise ValueError(f"rank_fraction must be in (0, 1], got {rank_fraction}")
    if conv_factorization not in CONV_FACTORIZATIONS:
        raise ValueError(
            f"conv_factorization must be one of {CONV_FACTORIZATIONS}, got {conv_factorization!r}"
        )
    names = {n for n, m in model.named_modules() if isinstance(m, _FACTORABLE)}
    skip = default_skip(model) if skip is None else set(skip)
    unknown = skip - names - set(low_rank_layers(model))
    if unknown:
        raise ValueError(
            f"skip names {sorted(unknown)} are not Linear/Conv2d layers of the model; "
            f"layers: {sorted(names)}"
        )
    for name, module in list(model.named_modules()):
        if name in skip or not isinstance(module, _FACTORABLE):
            continue
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            continue  # depthwise/grouped convs stay dense: their factorisation is not a prefix
        cls: type[LowRankLayer] = LowRankLinear
        full = min(module.weight.shape[0], module.weight[0].numel())
        per_branch = 1  # a branched Tucker layer's rank counts the channels of one branch
        options: dict[str, int] = {}
        if isinstance(module, nn.Conv2d):
            cls = LowRankConv2d
            if conv_factorization != "svd" and module.weight[0, 0].numel() > 1:
                per_branch = branches_of(conv_factorization)
                cls = TuckerConv2d if per_branch == 1 else BranchedTuckerConv2d
                options = {"branches": per_branch} if per_branch > 1 else {}
                full = -(-max(module.in_channels, module.out_channels) // per_branch)
        rank = max(1, round(rank_fraction * full))
        _set_submodule(model, name, cls.from_dense(module, rank=rank, **options))
    return model


def merge_is_cheaper(layer: LowRankLayer) -> bool:
    """True when the dense weight has no more entries than the factors (r·(m+n) ≥ m·n for SVD)."""
    return layer.params_at(layer.rank) >= prod(layer._dense_shape())


def to_dense_module(layer: LowRankLayer, rank: int | None = None) -> nn.Module:
    """The dense module computing what ``layer`` computes at ``rank`` (None: every kept one)."""
    bias = layer.bias is not None
    if isinstance(layer, LowRankLinear):
        dense: nn.Module = nn.Linear(layer.in_features, layer.out_features, bias=bias)
    elif isinstance(layer, LowRankConv2d | TuckerConv2d | BranchedTuckerConv2d):
        dense = nn.Conv2d(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.dilation,
            bias=bias,
        )
    else:
        raise ValueError(f"cannot merge {type(layer).__name__}")
    dense.to(layer.u.device, layer.u.dtype)
    dense.weight.data.copy_(layer.dense_weight(rank).detach())
    if bias:
        dense.bias.data.copy_(layer.bias.detach())
    return dense


def to_dense(
    model: nn.Module, beta: float | None = None, only_if_cheaper: bool = False
) -> nn.Module:
    """Merge the factored layers of ``model`` into dense ones at a budget, in place.

    For merging chosen by timing instead, see :mod:`maestro_common.lowrank.merging`.

    Parameters
    ----------
    model:
        A factored model.
    beta:
        Budget in (0, 1]: each layer is merged at its ⌈β·r⌉ leading components (``beta=1.0``:
        every kept component). ``None``: the ranks set by an enclosing
        :func:`maestro_common.lowrank.budget.use_budget` (or ``use_ranks``); a layer with no such
        rank is an error, so that a small tier is never silently exported as the full model.
    only_if_cheaper:
        Merge only layers where r·(m+n) ≥ m·n at the merged rank r (the dense form then has no
        more parameters and MACs than the factored one); the others are truncated to that rank.

    Raises
    ------
    ValueError
        For a β outside (0, 1], or ``beta=None`` with a layer that has no active rank.
    """
    layers = low_rank_layers(model)
    if beta is None:
        unset = [n for n, m in layers.items() if m._active_rank is None]
        if unset:
            raise ValueError(
                f"to_dense needs a budget: layers {unset} have no active rank; pass beta "
                "(beta=1.0 merges every kept component) or call it inside use_budget"
            )
        ranks = {n: m._resolve(None) for n, m in layers.items()}
    else:
        if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 < beta <= 1:
            raise ValueError(f"beta must be in (0, 1], got {beta!r}")
        ranks = {n: budget_rank(m.rank, beta) for n, m in layers.items()}
    for name, layer in layers.items():
        if only_if_cheaper:
            layer.truncate(ranks[name])
            if not merge_is_cheaper(layer):
                continue
        _set_submodule(model, name, to_dense_module(layer, ranks[name]))
    return model
