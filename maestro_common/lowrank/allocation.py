"""MAC-aware tier ranks: per-layer ranks under a tier's MAC budget, chosen from the spectrum.

A uniform tier of budget β keeps ⌈β·r_l⌉ components of every factored layer, whatever a
component costs in that layer or how much of the layer it carries. The allocation here keeps the
same MACs but spends them where they buy the most: components are added one layer at a time, each
time to the layer whose next components remove the most of its weight's relative residual energy
per unit of cost (:func:`tier_ranks`: a step's MACs plus its parameters, each as a share of the
whole model's),

    gain_l(k → k+j) = (e_l(k) − e_l(k+j)) / (cost_l(k+j) − cost_l(k)),
    e_l(k) = ‖W_l − W_l,k‖²_F / ‖W_l‖²_F,

(the best j for each layer, so that a component whose neighbour carries more is not skipped).
The order of these additions does not depend on the budget, so a tier's ranks are the longest
prefix of one sequence that fits its MACs and parameters: a smaller tier's ranks never exceed a
larger one's in any layer, and every tier is still a leading block of every factor (nesting,
wire format and aggregation are unchanged). Every layer keeps at least one component; a
budget at or above the whole model's MACs keeps every component.

The energy is that of the weights, or of the layer's outputs over training inputs
(:func:`input_moments`), not of the loss: a cheap proxy that treats every layer's relative error
alike. This is the layer-granular rank selection of Maestro (Horváth et al.) under a MAC budget;
measured on trained models it did not beat uniform ranks (docs/centralized.md), so no run uses it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from maestro_common.lowrank.accounting import count_macs, count_params, layer_mac_table
from maestro_common.lowrank.budget import use_budget
from maestro_common.lowrank.layers import (
    LowRankConv2d,
    LowRankLayer,
    LowRankLinear,
    low_rank_layers,
)
from maestro_common.ml.prefix import check_budget
from maestro_common.ml.probe import eval_mode

__all__ = ["allocate_ranks", "input_moments", "rank_order", "residual_energy", "tier_ranks"]

Step = tuple[str, int]  # (layer, its rank after this step)


@torch.no_grad()
def residual_energy(layer: LowRankLayer, cov: torch.Tensor | None = None) -> torch.Tensor:
    """e(k) = ‖(W − W_k) X‖²_F / ‖W X‖²_F for k = 0..R (shape (R+1,); e(0) = 1, e(R) = 0).

    W is the layer's weight as an (out, fan-in) matrix and W_k its first k components (its
    sub-model at rank k). ``cov`` = X Xᵀ is the (fan-in, fan-in) second moment of the layer's
    inputs (a conv's input patches); without it X = I and e is the weights' own residual energy.
    """
    r = layer.rank
    if isinstance(layer, LowRankLinear | LowRankConv2d):
        # W_k = U_k V_kᵀ, so every norm comes from M = (UᵀU) ∘ (Vᵀ C V) without forming any W_k:
        # ‖W_k X‖² is M's leading k×k block sum, ⟨W X, W_k X⟩ its first k columns' sum.
        u = layer.u_matrix().double()
        v = layer.v_matrix().double()
        cv = v if cov is None else cov.double() @ v
        m = (u.T @ u) * (v.T @ cv)
        total = m.sum()
        blocks = m.cumsum(0).cumsum(1).diagonal()  # (R,): ‖W_k X‖² for k = 1..R
        cross = m.sum(0).cumsum(0)  # (R,): ⟨W X, W_k X⟩
        res = total - 2 * cross + blocks
    else:

        def energy(w: torch.Tensor) -> torch.Tensor:
            w = w.reshape(w.shape[0], -1).double()
            return w.pow(2).sum() if cov is None else ((w @ cov.double()) * w).sum()

        w = layer.dense_weight()
        total = energy(w)
        res = torch.stack([energy(w - layer.dense_weight(k)) for k in range(1, r + 1)])
    if total <= 0:
        return torch.linspace(1.0, 0.0, r + 1, dtype=torch.float64)
    res = torch.cat([total.reshape(1), res.clamp_min(0)]) / total
    res[-1] = 0.0  # exact at full rank (rounding aside)
    return res


@torch.no_grad()
def input_moments(model: nn.Module, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """X Xᵀ of every factored layer's inputs over ``inputs`` (a conv's unfolded patches)."""
    layers = low_rank_layers(model)
    moments: dict[str, torch.Tensor] = {}

    def recorder(name: str):
        def hook(layer: nn.Module, args: tuple, out: torch.Tensor) -> None:
            x = args[0].double()
            if isinstance(layer, LowRankLinear):
                cols = x.reshape(-1, x.shape[-1])
            else:  # a factored conv: its input patches, as the dense conv would see them
                patches = F.unfold(
                    x, layer.kernel_size, layer.dilation, layer.padding, layer.stride
                )  # (B, fan-in, L)
                cols = patches.transpose(1, 2).reshape(-1, patches.shape[1])
            moment = cols.T @ cols
            moments[name] = moments[name] + moment if name in moments else moment

        return hook

    handles = [m.register_forward_hook(recorder(n)) for n, m in layers.items()]
    try:
        with eval_mode(model), use_budget(model, 1.0):
            model(inputs)
    finally:
        for h in handles:
            h.remove()
    return moments


def rank_order(
    residuals: Mapping[str, torch.Tensor], costs: Mapping[str, Sequence[float]]
) -> list[Step]:
    """The greedy sequence of rank increases from one component per layer to every component.

    ``residuals[l]`` is e_l(k) for k = 0..R_l, ``costs[l]`` the layer's cost at k = 0..R_l.
    Each step raises one layer to the rank of best energy removed per cost (ties: first layer).
    """
    if set(residuals) != set(costs):
        raise ValueError("residuals and costs must name the same layers")
    table = {name: torch.as_tensor(costs[name], dtype=torch.float64) for name in residuals}
    for name, cost in table.items():
        if bool((cost[2:] <= cost[1:-1]).any()):
            raise ValueError(f"layer {name!r}: its cost must grow with the rank")
    ranks = {name: 1 for name in residuals}
    order: list[Step] = []
    while True:
        best: tuple[float, str, int] | None = None
        for name, res in residuals.items():
            k, full = ranks[name], len(res) - 1
            if k >= full:
                continue
            gain = (res[k] - res[k + 1 :]) / (table[name][k + 1 :] - table[name][k])
            j = int(torch.argmax(gain))
            if best is None or float(gain[j]) > best[0]:
                best = (float(gain[j]), name, k + 1 + j)
        if best is None:
            return order
        _, name, k = best
        ranks[name] = k
        order.append((name, k))


def allocate_ranks(
    order: Sequence[Step],
    tables: Mapping[str, Mapping[str, Sequence[int]]],
    base: Mapping[str, int],
    budget: Mapping[str, int],
) -> dict[str, int]:
    """The ranks of the longest prefix of ``order`` that fits every budget.

    ``tables[measure][layer][k]`` is a layer's cost at rank k (measures such as "macs" and
    "params"), ``base[measure]`` what the rest of the model costs, ``budget[measure]`` the limit.
    Every layer starts at one component.
    """
    layers = next(iter(tables.values()))
    ranks = {name: 1 for name in layers}
    totals = {m: base[m] + sum(t[1] for t in tables[m].values()) for m in tables}
    for name, k in order:
        steps = {m: tables[m][name][k] - tables[m][name][ranks[name]] for m in tables}
        if any(totals[m] + steps[m] > budget[m] for m in tables):
            break
        for m in tables:
            totals[m] += steps[m]
        ranks[name] = k
    return ranks


def _param_table(layer: LowRankLayer) -> list[int]:
    return [layer.params_at(k) for k in range(layer.rank + 1)]


def tier_ranks(
    model: nn.Module,
    input_shape: Sequence[int],
    betas: Sequence[float],
    inputs: torch.Tensor | None = None,
) -> dict[float, dict[str, int]]:
    """For each β, per-layer ranks within the MACs and parameters of the uniform tier β.

    The greedy order weighs a step's MACs and parameters alike (each as a share of the whole
    model's), so that a tier does not buy cheap-to-run components at a large cost in memory and
    bytes sent; a tier then stops at the first step that would exceed either of its uniform
    tier's counts.

    Parameters
    ----------
    model:
        A factored model (its factored layers' kept ranks are the full tier).
    input_shape:
        One sample's shape without the batch axis.
    betas:
        Budgets in (0, 1].
    inputs:
        A batch of training inputs: each layer's residual is then that of its outputs on them
        (``‖(W − W_k) X‖``); without it, that of its weights.

    Raises
    ------
    ValueError
        If the model has no factored layer or a β is not in (0, 1].
    """
    layers = low_rank_layers(model)
    if not layers:
        raise ValueError("MAC-aware ranks need a factored model; this one has no factored layer")
    for beta in betas:
        check_budget(beta)
    tables = {
        "macs": layer_mac_table(model, input_shape),
        "params": {n: _param_table(m) for n, m in layers.items()},
    }
    whole = {"macs": count_macs(model, input_shape, 1.0), "params": count_params(model, 1.0)}
    base = {m: whole[m] - sum(t[-1] for t in tables[m].values()) for m in tables}
    cost = {
        n: [sum(tables[m][n][k] / whole[m] for m in tables) for k in range(layer.rank + 1)]
        for n, layer in layers.items()
    }
    moments = input_moments(model, inputs) if inputs is not None else {}
    residuals = {n: residual_energy(m, moments.get(n)) for n, m in layers.items()}
    order = rank_order(residuals, cost)
    return {
        beta: allocate_ranks(
            order,
            tables,
            base,
            {"macs": count_macs(model, input_shape, beta), "params": count_params(model, beta)},
        )
        for beta in betas
    }
