import pytest
import torch
from torch import nn

from maestro_common.lowrank.layers import LowRankConv2d, LowRankLinear
from maestro_common.lowrank.regularizers import group_lasso, layer_group_lasso
from maestro_common.lowrank.shrinking import importance, ranks_to_keep, shrink


def direct_lasso(u: torch.Tensor, v: torch.Tensor) -> float:
    """Σ_b √(Σ_{j≥b}‖v_j‖²) + √(Σ_{j≥b}‖u_j‖²), written out with loops."""
    total = 0.0
    for b in range(u.shape[1]):
        total += sum(v[:, j].norm() ** 2 for j in range(b, u.shape[1])).sqrt().item()
        total += sum(u[:, j].norm() ** 2 for j in range(b, u.shape[1])).sqrt().item()
    return total


def direct_importance(u: torch.Tensor, v: torch.Tensor) -> list[float]:
    r = u.shape[1]
    return [
        (
            sum(v[:, j].norm() ** 2 for j in range(b, r)).sqrt()
            * sum(u[:, j].norm() ** 2 for j in range(b, r)).sqrt()
        ).item()
        for b in range(r)
    ]


def test_group_lasso_matches_direct_computation_for_both_layer_types():
    torch.manual_seed(0)
    lin, conv = LowRankLinear(7, 5), LowRankConv2d(3, 6, 3)
    model = nn.Sequential(lin, conv)
    expected = direct_lasso(lin.u, lin.v) + direct_lasso(conv.u_matrix(), conv.v_matrix())
    assert group_lasso(model).item() == pytest.approx(expected, rel=1e-5)
    assert layer_group_lasso(lin).item() == pytest.approx(direct_lasso(lin.u, lin.v), rel=1e-5)


def test_group_lasso_gradient_is_finite_with_zero_tails():
    layer = LowRankLinear(4, 4)
    with torch.no_grad():
        layer.u[:, 2:] = 0
        layer.v[:, 2:] = 0
    group_lasso(layer).backward()
    assert torch.isfinite(layer.u.grad).all() and torch.isfinite(layer.v.grad).all()


def test_group_lasso_of_a_model_without_factored_layers_is_zero():
    assert group_lasso(nn.Linear(3, 3)).item() == 0.0


def test_importance_matches_direct_computation_and_is_non_increasing():
    torch.manual_seed(1)
    conv = LowRankConv2d(4, 8, 3)
    imp = importance(conv)
    assert imp.tolist() == pytest.approx(
        direct_importance(conv.u_matrix(), conv.v_matrix()), rel=1e-5
    )
    assert (imp[1:] <= imp[:-1] + 1e-7).all()


def two_layers(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    model = nn.Sequential(LowRankLinear(8, 8), LowRankLinear(8, 8))
    with torch.no_grad():
        model[0].u[:, 3:] *= 1e-4
        model[0].v[:, 3:] *= 1e-4
    return model


def test_shrink_truncates_to_important_components():
    model = two_layers(2)
    eps = 0.5 * importance(model[0])[2].item()
    x = torch.randn(2, 8)
    with torch.no_grad():
        first_three = model[0](x, rank=3)
    expected_1 = sum(i >= eps for i in direct_importance(model[1].u, model[1].v))
    assert shrink(model, eps=eps) == {"0": 3, "1": expected_1}
    assert model[0].u.shape == (8, 3) and model[0].v.shape == (8, 3)
    assert torch.allclose(model[0](x), first_three, atol=1e-6)


def test_shrink_never_goes_below_one_and_rejects_negative_eps():
    model = two_layers(3)
    assert shrink(model, eps=1e6) == {"0": 1, "1": 1}
    with pytest.raises(ValueError, match="≥ 0"):
        shrink(model, eps=-1)


def test_ranks_to_keep_counts_the_prefix():
    assert ranks_to_keep(torch.tensor([3.0, 2.0, 0.5, 0.1]), 1.0) == 2
    assert ranks_to_keep(torch.tensor([0.3, 0.2]), 1.0) == 1
