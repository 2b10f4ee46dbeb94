"""Sampled spectral sub-models: probabilities, sampling, re-factoring, and the estimators.

The estimator test states its tolerance: over 4,000 seeded draws of 8 of the 16 components of
LeNet-5's conv2 (freshly initialised, so a flat spectrum: the hard case), the mean of the
Unbiased client weight lies within 3 times the root-mean-square error that the sampling variance
predicts for that mean (Σ σ_i² (1/p_i − 1) / 4000, 1.5 % of ‖W‖_F, so a tolerance of 4.6 %) of
the full weight, in relative Frobenius norm. It measures 0.8 %; one draw alone is about 100 %
off, the Top-8 weight (the prefix) 60 %, and the mean of single Collective draws, biased by
design, is also refused by that tolerance.
"""

import numpy as np
import pytest
import torch

from maestro_common.app.codec import model_arrays
from maestro_common.lowrank.decompose import decompose
from maestro_common.lowrank.layers import low_rank_layers
from maestro_common.lowrank.spectral import (
    Pair,
    SpectralPlan,
    collective_probabilities,
    component_norms,
    multipliers,
    prism_sample,
    refactor,
    systematic_sample,
    unbiased_probabilities,
)
from maestro_common.ml.index_sets import prefix_sub_model, take_sub_model
from maestro_common.ml.models import build_model

SIGMA = np.array([9.0, 5.0, 3.0, 2.0, 1.0, 0.5, 0.2, 0.1, 0.0])


def test_unbiased_probabilities_are_proportional_to_sigma_and_capped():
    p = unbiased_probabilities(SIGMA, 3)
    assert p.sum() == pytest.approx(3.0) and (p <= 1).all() and (p > 0).all()
    assert p[0] == 1.0  # the largest component is always kept
    free = p < 1
    ratio = p[free][:-1] / SIGMA[free][:-1]  # the zero component gets only a floor
    np.testing.assert_allclose(ratio, ratio[0])
    assert (np.diff(p) <= 1e-12).all()
    np.testing.assert_array_equal(unbiased_probabilities(SIGMA, 9), np.ones(9))


def test_collective_probabilities_span_top_k_to_unbiased():
    top = collective_probabilities(SIGMA, 3, clients=1)
    assert top.tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0]
    few = collective_probabilities(SIGMA, 3, clients=4)
    assert few.sum() == pytest.approx(3.0) and (few <= 1).all()
    assert (few == 0).sum() > (unbiased_probabilities(SIGMA, 3) == 0).sum()  # cuts the tail
    many = collective_probabilities(SIGMA, 3, clients=10**7)
    np.testing.assert_allclose(many, unbiased_probabilities(SIGMA, 3), atol=1e-3)
    m = multipliers(np.array([1.0, 0.5]), "collective", 4)
    np.testing.assert_allclose(m, [1.0, 1 / (0.5 + 0.5 / 4)])
    np.testing.assert_allclose(multipliers(np.array([1.0, 0.25]), "unbiased"), [1.0, 4.0])


def test_the_bisection_stops_early_with_the_bits_of_all_200_halvings(monkeypatch):
    """The early stop must not move a run's draws or multipliers by a single bit."""
    import maestro_common.lowrank.spectral as spectral

    def level_200(p_of, k, high):  # the loop before the early stop
        low = 0.0
        for _ in range(200):
            mid = (low + high) / 2
            if p_of(mid).sum() < k:
                low = mid
            else:
                high = mid
        p = p_of(high)
        return np.minimum(p * (k / p.sum()), 1.0)

    rng = np.random.default_rng(0)
    cases = [
        (rng.lognormal(0, s, size=n), k, clients)
        for s in (0.1, 1, 3)
        for n, k in ((9, 3), (64, 1), (64, 40), (256, 128))
        for clients in (2, 5, 1000)
    ]
    fast = [(unbiased_probabilities(s, k), collective_probabilities(s, k, c)) for s, k, c in cases]
    monkeypatch.setattr(spectral, "_level", level_200)
    for (sigma, k, clients), (unbiased, collective) in zip(cases, fast, strict=True):
        np.testing.assert_array_equal(unbiased, unbiased_probabilities(sigma, k))
        np.testing.assert_array_equal(collective, collective_probabilities(sigma, k, clients))


def test_systematic_sampling_keeps_k_distinct_with_the_given_marginals():
    p = unbiased_probabilities(SIGMA, 4)
    rng = np.random.default_rng(0)
    counts = np.zeros(SIGMA.size)
    for _ in range(20_000):
        chosen = systematic_sample(p, rng)
        assert chosen.size == 4 and np.unique(chosen).size == 4
        counts[chosen] += 1
    np.testing.assert_allclose(counts / 20_000, p, atol=0.015)
    with pytest.raises(ValueError, match="sum to an integer"):
        systematic_sample(np.array([0.5, 0.7]), rng)


def test_prism_draws_large_components_more_often():
    rng = np.random.default_rng(0)
    counts = np.zeros(SIGMA.size)
    for _ in range(5000):
        chosen = prism_sample(SIGMA, 3, rng)
        assert np.unique(chosen).size == 3
        counts[chosen] += 1
    assert counts[0] > counts[2] > counts[5] > counts[8]


def lenet_factors():
    torch.manual_seed(0)
    model = decompose(build_model("lenet5", num_classes=10), rank_fraction=1.0)
    return model, model_arrays(model)


def product(u: np.ndarray, v: np.ndarray, pair: Pair) -> np.ndarray:
    um = np.moveaxis(u, pair.u_axis, -1).reshape(-1, u.shape[pair.u_axis])
    vm = np.moveaxis(v, pair.v_axis, -1).reshape(-1, v.shape[pair.v_axis])
    return um.astype(np.float64) @ vm.T.astype(np.float64)


CONV2 = Pair("conv2.u", 1, "conv2.v", 0)


def test_refactor_keeps_the_product_and_orders_balanced_components():
    model, arrays = lenet_factors()
    layer = low_rank_layers(model)["conv2"]
    rng = np.random.default_rng(1)
    u = arrays["conv2.u"] + 0.1 * rng.standard_normal(arrays["conv2.u"].shape).astype(np.float32)
    v = arrays["conv2.v"] * rng.uniform(0.5, 2.0, size=(arrays["conv2.v"].shape[0], 1, 1, 1))
    v = v.astype(np.float32)
    u2, v2 = refactor(u, v, 1, 0)
    assert u2.shape == u.shape and v2.shape == v.shape and u2.dtype == np.float32
    np.testing.assert_allclose(product(u2, v2, CONV2), product(u, v, CONV2), atol=1e-4)
    sigma = component_norms(u2, v2, 1, 0)
    assert (np.diff(sigma) <= 1e-4).all()
    np.testing.assert_allclose(np.linalg.norm(u2, axis=0), np.sqrt(sigma), rtol=1e-4)
    # The numpy product is the layer's own dense weight.
    with torch.no_grad():
        dense = layer.dense_weight().reshape(layer.u.shape[0], -1).double().numpy()
    np.testing.assert_allclose(
        product(arrays["conv2.u"], arrays["conv2.v"], CONV2), dense, atol=1e-5
    )


def client_weights(rule: str, draws: int, k: int, clients: int = 1):
    """The full weight and each draw's client weight U_S diag(m) V_Sᵀ, as a node receives it."""
    _, arrays = lenet_factors()
    arrays = {key: arrays[key] for key in (CONV2.u, CONV2.v)}
    plan = SpectralPlan((CONV2,), rule, seed=0)
    arrays = plan.refresh(arrays, 0)
    full = product(arrays[CONV2.u], arrays[CONV2.v], CONV2)
    shapes = {key: list(a.shape) for key, a in arrays.items()}
    shapes[CONV2.u][1] = shapes[CONV2.v][0] = k
    prefix = prefix_sub_model({key: tuple(s) for key, s in shapes.items()})
    out = []
    for draw in range(draws):
        sub = plan.select(arrays, prefix, 1, draw, clients)
        sent = take_sub_model(arrays, sub)
        out.append(product(sent[CONV2.u], sent[CONV2.v], CONV2))
    return full, np.stack(out), component_norms(arrays[CONV2.u], arrays[CONV2.v], 1, 0)


def test_the_unbiased_client_weight_averages_to_the_full_weight():
    k, draws = 8, 4000
    full, weights, sigma = client_weights("unbiased", draws, k)
    assert sigma.size == 16  # conv2 of lenet5: 16 components
    norm = np.linalg.norm(full)
    p = unbiased_probabilities(sigma, k)
    # One draw's mean squared error is Σ σ² (1/p − 1) (orthogonal components) ...
    mse = np.mean(np.sum((weights - full) ** 2, axis=(1, 2)))
    assert mse == pytest.approx(np.sum(sigma**2 * (1 / p - 1)), rel=0.1)
    # ... so the mean of the draws is expected within this RMS of the full weight.
    predicted = np.sqrt(np.sum(sigma**2 * (1 / p - 1)) / draws) / norm
    tolerance = 3 * predicted
    assert tolerance < 0.05
    assert np.linalg.norm(weights.mean(axis=0) - full) / norm < tolerance
    # The tolerance refuses what is not unbiased: one draw, the Top-k prefix, Collective draws.
    assert np.linalg.norm(weights[0] - full) / norm > 10 * tolerance
    u, v = refactor(*lenet_conv2(), 1, 0)
    top = product(u[:, :k], v[:k], CONV2)
    assert np.linalg.norm(top - full) / norm > 10 * tolerance
    _, collective, _ = client_weights("collective", draws, k, clients=4)
    assert np.linalg.norm(collective.mean(axis=0) - full) / norm > tolerance


def lenet_conv2():
    _, arrays = lenet_factors()
    return arrays[CONV2.u], arrays[CONV2.v]


def test_the_collective_rule_gives_a_better_mean_of_n_clients_than_unbiased():
    """E‖W − (1/N) Σ_c Ŵ_c‖² over independent nodes: what the Collective rule minimises."""
    k, n, rounds = 3, 4, 500

    def mean_error(rule: str) -> float:
        full, weights, _ = client_weights(rule, rounds * n, k, clients=n)
        means = weights.reshape(rounds, n, *full.shape).mean(axis=1)
        return float(np.mean(np.sum((means - full) ** 2, axis=(1, 2))))

    assert mean_error("collective") < mean_error("unbiased")


def test_select_leaves_a_full_tier_on_its_leading_block_and_seeds_by_draw():
    _, arrays = lenet_factors()
    plan = SpectralPlan((CONV2,), "unbiased")
    full = prefix_sub_model({k: a.shape for k, a in arrays.items()})
    assert plan.select(arrays, full, 1, 0, 3).is_prefix
    shapes = {k: a.shape for k, a in arrays.items()} | {"conv2.u": (16, 4), "conv2.v": (4, 6, 5, 5)}
    cut = prefix_sub_model(shapes)
    a, b = plan.select(arrays, cut, 1, 7, 3), plan.select(arrays, cut, 1, 7, 3)
    np.testing.assert_array_equal(a.indices["conv2.u"][1], b.indices["conv2.u"][1])
    np.testing.assert_array_equal(a.indices["conv2.u"][1], a.indices["conv2.v"][0])
    draws = {tuple(plan.select(arrays, cut, 1, d, 3).indices["conv2.u"][1]) for d in range(20)}
    assert len(draws) > 1
    assert not SpectralPlan((CONV2,), "prism").select(arrays, cut, 1, 0, 3).scales
