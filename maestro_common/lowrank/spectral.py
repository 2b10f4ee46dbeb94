"""Sampled spectral sub-models: which singular components a node gets, and their multipliers.

A factored layer holds W = U Vᵀ = Σ_i u_i v_iᵀ. Kept in balanced SVD form (``refactor``: the
columns of U and of V orthogonal, ‖u_i‖ = ‖v_i‖ = √σ_i, σ decreasing), its component i carries
singular value σ_i = ‖u_i‖·‖v_i‖. A node of budget k gets k components drawn at random with
inclusion probabilities p_i (Σ p_i = k), each scaled by a multiplier m_i, split as √m_i on u_i
and on v_i, so its weight is Ŵ = Σ_{i∈S} m_i u_i v_iᵀ.

Rules (probabilities derived here from each paper's stated objective; docs/index-sets.md):

- ``unbiased`` (Korzhenkov & Louizos, NeurIPS 2024): m_i = 1/p_i (Horvitz–Thompson), so
  E[Ŵ] = W; p minimises E‖Ŵ − W‖²_F = Σ σ_i² (1/p_i − 1) under Σ p_i = k, p_i ≤ 1, which gives
  p_i = min(1, c·σ_i).
- ``collective`` (same paper): p and m minimise the error of the mean of N nodes' independent
  estimates, E‖W − (1/N) Σ_c Ŵ_c‖²_F. For given p_i the best multiplier is
  m_i = 1 / (p_i + (1 − p_i)/N), leaving Σ σ_i² (1 − p_i) / (1 + (N − 1) p_i), minimised by
  p_i = clip((c·σ_i − 1)/(N − 1), 0, 1). N = 1 is Top-k; N → ∞ is ``unbiased``.
- ``prism`` (Niu et al., TMLR 2023): k draws without replacement, each with probability
  proportional to σ_i among the components not yet drawn; no multipliers.

Pure numpy: the server runs it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from maestro_common.ml.index_sets import Arrays, SubModel

RULES = ("unbiased", "collective", "prism")


def _level(p_of: Callable[[float], np.ndarray], k: int, high: float) -> np.ndarray:
    """p_of(c) at the c where Σ p = k (p_of nondecreasing in c, Σ p_of(high) ≥ k), by bisection;
    rescaled so that Σ p = k to the last bit.

    At most 200 halvings, stopping once ``low`` and ``high`` are adjacent floats: from there on
    every halving is a no-op (the midpoint rounds to one end, which keeps its side), so the
    early stop returns the bits of all 200 (about 60 are needed)."""
    low = 0.0
    for _ in range(200):
        mid = (low + high) / 2
        if not low < mid < high:
            break
        if p_of(mid).sum() < k:
            low = mid
        else:
            high = mid
    p = p_of(high)
    return np.minimum(p * (k / p.sum()), 1.0)


def _check(sigma: np.ndarray, k: int) -> np.ndarray:
    sigma = np.asarray(sigma, dtype=np.float64)
    if sigma.ndim != 1 or not np.isfinite(sigma).all() or (sigma < 0).any():
        raise ValueError("singular values must be a finite, non-negative vector")
    if not 1 <= k <= sigma.size:
        raise ValueError(f"k must be in 1..{sigma.size}, got {k}")
    # A zero component still gets a (tiny) chance, so that Σ p = k is always reachable.
    return sigma + 1e-12 * max(float(sigma.max()), 1e-30)


def unbiased_probabilities(sigma: np.ndarray, k: int) -> np.ndarray:
    """Inclusion probabilities p_i = min(1, c·σ_i) with Σ p_i = k (see the module docstring)."""
    s = _check(sigma, k)
    if k == s.size:
        return np.ones_like(s)
    return _level(lambda c: np.minimum(1.0, c * s), k, 1.0 / s.min())


def collective_probabilities(sigma: np.ndarray, k: int, clients: int) -> np.ndarray:
    """Inclusion probabilities p_i = clip((c·σ_i − 1)/(N − 1), 0, 1), Σ p_i = k, N = ``clients``.

    N = 1 keeps the k largest components (Top-k).
    """
    s = _check(sigma, k)
    if clients < 1:
        raise ValueError(f"clients must be ≥ 1, got {clients}")
    if k == s.size:
        return np.ones_like(s)
    if clients == 1:
        p = np.zeros_like(s)
        p[np.argsort(-s, kind="stable")[:k]] = 1.0
        return p
    n = clients
    return _level(lambda c: np.clip((c * s - 1.0) / (n - 1), 0.0, 1.0), k, n / s.min())


def multipliers(p: np.ndarray, rule: str, clients: int = 1) -> np.ndarray:
    """The multiplier m_i of each component of inclusion probability p_i under ``rule``."""
    p = np.asarray(p, dtype=np.float64)
    if rule == "unbiased":
        return 1.0 / np.maximum(p, 1e-300)
    if rule == "collective":
        return 1.0 / (p + (1.0 - p) / clients)
    if rule == "prism":
        return np.ones_like(p)
    raise ValueError(f"rule must be one of {RULES}, got {rule!r}")


def systematic_sample(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exactly Σ p (an integer k) distinct indices, index i included with probability p_i.

    Systematic sampling: one uniform offset u, and the indices whose cumulative-probability
    interval holds one of u, u + 1, ..., u + k − 1. Needs 0 ≤ p_i ≤ 1. Returns them sorted.
    """
    p = np.asarray(p, dtype=np.float64)
    k = round(float(p.sum()))
    if abs(p.sum() - k) > 1e-6 or (p < 0).any() or (p > 1 + 1e-9).any():
        raise ValueError("inclusion probabilities must lie in [0, 1] and sum to an integer")
    cum = np.cumsum(p)
    cum *= k / cum[-1]
    for _ in range(8):  # a repeat needs p_i within rounding of 1: draw again
        points = rng.random() + np.arange(k)
        chosen = np.minimum(np.searchsorted(cum, points, side="right"), p.size - 1)
        if np.unique(chosen).size == k:
            return chosen.astype(np.int64)
    raise RuntimeError("systematic sampling kept drawing a repeated index")


def prism_sample(sigma: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` distinct indices drawn one by one, each with probability ∝ σ among those left.

    (Gumbel-top-k on log σ: the same distribution as successive draws.) Returns them sorted.
    """
    s = _check(sigma, k)
    keys = np.log(s) + rng.gumbel(size=s.size)
    return np.sort(np.argsort(-keys, kind="stable")[:k]).astype(np.int64)


def _matrix(a: np.ndarray, axis: int) -> np.ndarray:
    """The factor as a (rest, r) matrix: its rank axis last, the other axes flattened."""
    moved = np.moveaxis(np.asarray(a, dtype=np.float64), axis, -1)
    return moved.reshape(-1, moved.shape[-1])


def _unmatrix(m: np.ndarray, like: np.ndarray, axis: int) -> np.ndarray:
    moved_shape = np.moveaxis(like, axis, -1).shape
    return np.moveaxis(m.reshape(moved_shape), -1, axis).astype(like.dtype)


def refactor(u: np.ndarray, v: np.ndarray, u_axis: int, v_axis: int) -> tuple[np.ndarray, ...]:
    """The same product U Vᵀ in balanced SVD form: components by decreasing σ, ‖u_i‖ = ‖v_i‖.

    ``u_axis`` / ``v_axis``: the rank axis of each factor. With L_u L_uᵀ = UᵀU and
    L_v L_vᵀ = VᵀV (Cholesky) and A S Bᵀ the SVD of the small L_uᵀ L_v, the new factors are
    U L_u⁻ᵀ A √S and V L_v⁻ᵀ B √S: only r × r matrices are factored, the tall factors are only
    multiplied (a QR of the tall factors is the fallback where a Gram matrix is singular).
    Factors with more components than a side has rows are returned unchanged (no exact
    balanced form keeps their rank).
    """
    um, vm = _matrix(u, u_axis), _matrix(v, v_axis)
    r = um.shape[1]
    if r > um.shape[0] or r > vm.shape[0]:
        return np.asarray(u), np.asarray(v)
    try:
        lu = np.linalg.cholesky(um.T @ um)
        lv = np.linalg.cholesky(vm.T @ vm)
    except np.linalg.LinAlgError:
        qu, ru = np.linalg.qr(um)
        qv, rv = np.linalg.qr(vm)
        a, s, bt = np.linalg.svd(ru @ rv.T)
        root = np.sqrt(s)
        return _unmatrix(qu @ a * root, u, u_axis), _unmatrix(qv @ bt.T * root, v, v_axis)
    a, s, bt = np.linalg.svd(lu.T @ lv)
    root = np.sqrt(s)
    tu = np.linalg.solve(lu.T, a) * root  # L_u⁻ᵀ A √S
    tv = np.linalg.solve(lv.T, bt.T) * root
    return _unmatrix(um @ tu, u, u_axis), _unmatrix(vm @ tv, v, v_axis)


def component_norms(u: np.ndarray, v: np.ndarray, u_axis: int, v_axis: int) -> np.ndarray:
    """‖u_i‖·‖v_i‖ per component: its singular value once the factors are balanced."""
    um, vm = _matrix(u, u_axis), _matrix(v, v_axis)
    return np.linalg.norm(um, axis=0) * np.linalg.norm(vm, axis=0)


@dataclass(frozen=True)
class Pair:
    """A factored layer's two factors: their state-dict keys and rank axes."""

    u: str
    u_axis: int
    v: str
    v_axis: int


@dataclass(frozen=True)
class SpectralPlan:
    """The index plan of the sampled spectral methods
    (:class:`~maestro_common.ml.index_sets.IndexPlan`).

    ``refresh`` puts every pair in balanced SVD form after each aggregation; ``select`` draws a
    node's components per layer (as many as its prefix holds) with the rule's probabilities,
    seeded by ``draw``, and puts √m on both factors' rank axes.
    """

    pairs: Sequence[Pair]
    rule: str
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {self.rule!r}")

    def refresh(self, arrays: Arrays, server_round: int) -> Arrays:
        out = dict(arrays)
        for pair in self.pairs:
            out[pair.u], out[pair.v] = refactor(
                arrays[pair.u], arrays[pair.v], pair.u_axis, pair.v_axis
            )
        return out

    def components(
        self, sigma: np.ndarray, k: int, rng: np.random.Generator, clients: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The indices drawn for one layer and their multipliers."""
        if self.rule == "prism":
            idx = prism_sample(sigma, k, rng)
            return idx, np.ones(k)
        if self.rule == "unbiased":
            p = unbiased_probabilities(sigma, k)
        else:
            p = collective_probabilities(sigma, k, clients)
        idx = systematic_sample(p, rng)
        return idx, multipliers(p[idx], self.rule, clients)

    def select(
        self,
        arrays: Mapping[str, np.ndarray],
        prefix: SubModel,
        server_round: int,
        draw: int,
        clients: int,
    ) -> SubModel:
        rng = np.random.default_rng([self.seed, draw])
        indices: dict[str, dict[int, np.ndarray]] = {}
        scales: dict[str, dict[int, np.ndarray]] = {}
        for pair in self.pairs:
            if pair.u not in prefix.shapes:
                continue
            k = prefix.shapes[pair.u][pair.u_axis]
            full = np.shape(arrays[pair.u])[pair.u_axis]
            if k == full:
                continue  # every component, multiplier 1: the leading block itself
            sigma = component_norms(arrays[pair.u], arrays[pair.v], pair.u_axis, pair.v_axis)
            idx, m = self.components(sigma, k, rng, max(clients, 1))
            root = np.sqrt(m)
            for key, axis in ((pair.u, pair.u_axis), (pair.v, pair.v_axis)):
                indices.setdefault(key, {})[axis] = idx
                if self.rule != "prism":
                    scales.setdefault(key, {})[axis] = root
        return SubModel(dict(prefix.shapes), indices, scales)
