"""Low-rank factored layers with ordered (prefix) ranks.

A dense weight W (out x in') is held as W = U Vᵀ with U: out x R and V: in' x R, where in' is the
fan-in (in for a linear map, in·kh·kw for a convolution). Component j is the pair (u_j, v_j); a
forward pass at rank k uses the first k components only, so the leading components of every layer
form a nested sub-model (Maestro: Horváth et al., "Maestro: Uncovering Low-Rank Structures via
Trainable Decomposition", ICML 2024).

State-dict keys are the API: ``u``, ``v`` and ``bias``. The rank axis of every factor is chosen so
that a rank prefix is a *leading block* of the array (``a[:d0, :d1, ...]``), which is what the wire
format and the nested aggregation rely on:

- ``LowRankLinear``: ``u`` (out, R), ``v`` (in, R): prefix on axis 1 of both.
- ``LowRankConv2d``: ``v`` (R, in, kh, kw) is a kxk conv to R channels (prefix on axis 0), ``u``
  (out, R) the following 1x1 conv (prefix on axis 1).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import nn

from maestro_common.ml.prefix import budget_dim

# False while ``from_dense`` builds a layer: its fresh init is drawn (the RNG advances exactly as
# in a plain constructor) but not factored, since the given module's weight is factored next.
_FACTOR_FRESH_INIT: ContextVar[bool] = ContextVar("factor_fresh_init", default=True)


@contextmanager
def _factored_later() -> Iterator[None]:
    """Build layers whose fresh init is not factored: the caller loads factors next."""
    token = _FACTOR_FRESH_INIT.set(False)
    try:
        yield
    finally:
        _FACTOR_FRESH_INIT.reset(token)


def _check_rank(rank: int | None, max_rank: int, what: str) -> int:
    if rank is None:
        return max_rank
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise ValueError(f"{what}: rank must be an int in 1..{max_rank} or None, got {rank!r}")
    if not 1 <= rank <= max_rank:
        raise ValueError(f"{what}: rank must be in 1..{max_rank}, got {rank}")
    return rank


class LowRankLayer(nn.Module):
    """Common behaviour of factored layers: kept rank, active rank, component matrices.

    Subclasses define ``u`` and ``v`` parameters and ``_forward_at(x, k)``.
    """

    u: nn.Parameter
    v: nn.Parameter
    bias: nn.Parameter | None
    max_rank: int
    _active_rank: int | None
    # The axis of each factor along which components are stacked (a prefix cuts this axis).
    rank_axes: dict[str, int]
    # Nested by rank, so never by width: make_width_sliceable refuses it
    # (maestro_common.width.sliceable reads this flag rather than importing this class).
    width_sliceable: bool = False

    @property
    def rank(self) -> int:
        """Number of components physically kept."""
        return self.u.shape[1]

    @property
    def fan_in(self) -> int:
        """Size of one v component (in for linear, in·kh·kw for conv)."""
        return self.v_matrix().shape[0]

    @property
    def out_dim(self) -> int:
        return self.u.shape[0]

    def factor_axes(self) -> dict[str, tuple[int, ...]]:
        """For each factor (state-dict key), the axes a rank prefix cuts."""
        return {name: (axis,) for name, axis in self.rank_axes.items()}

    def params_at(self, k: int) -> int:
        """Factor entries (bias excluded) that the first ``k`` components use."""
        return k * (self.out_dim + self.fan_in)

    def u_matrix(self) -> torch.Tensor:
        """U as an (out, R) matrix: column j is u_j."""
        return self.u

    def v_matrix(self) -> torch.Tensor:
        """V as an (in', R) matrix: column j is v_j."""
        raise NotImplementedError

    def _resolve(self, rank: int | None) -> int:
        if rank is None:
            rank = self._active_rank
        if rank is None:
            return self.rank
        return _check_rank(rank, self.rank, type(self).__name__)

    def forward(self, x: torch.Tensor, rank: int | None = None) -> torch.Tensor:
        """Apply the layer with the first ``rank`` components.

        ``rank=None`` uses the rank set by :func:`use_ranks` if any, else every kept component.
        """
        return self._forward_at(x, self._resolve(rank))

    def _forward_at(self, x: torch.Tensor, k: int) -> torch.Tensor:
        raise NotImplementedError

    def dense_weight(self, rank: int | None = None) -> torch.Tensor:
        """The equivalent dense weight U[:, :k] V[:, :k]ᵀ, in the dense module's weight shape."""
        k = _check_rank(rank, self.rank, type(self).__name__)
        w = self.u_matrix()[:, :k] @ self.v_matrix()[:, :k].T  # (out, in')
        return w.reshape(self._dense_shape())

    def _dense_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    @torch.no_grad()
    def truncate(self, k: int) -> None:
        """Drop every component after the first ``k`` (changes parameter shapes)."""
        k = _check_rank(k, self.rank, type(self).__name__)
        self.u = nn.Parameter(self.u[:, :k].clone())
        self.v = nn.Parameter(self._v_prefix(k).clone())
        if self._active_rank is not None:
            self._active_rank = min(self._active_rank, k)

    def _v_prefix(self, k: int) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def resize(self, k: int) -> None:
        """Give the factors room for ``k`` components (values undefined: load them next)."""
        k = _check_rank(k, self.max_rank, type(self).__name__)
        for name, axes in self.factor_axes().items():
            shape = list(getattr(self, name).shape)
            for axis in axes:
                shape[axis] = k
            old = getattr(self, name)
            setattr(self, name, nn.Parameter(old.new_zeros(shape)))
        self._active_rank = None

    @torch.no_grad()
    def load_factors(self, u_mat: torch.Tensor, v_mat: torch.Tensor) -> None:
        """Set the factors from (out, R) and (in', R) matrices; R may differ from the rank now."""
        r = u_mat.shape[1]
        if v_mat.shape[1] != r:
            raise ValueError(f"u has {r} components but v has {v_mat.shape[1]}")
        if r < 1 or r > self.max_rank:
            raise ValueError(f"rank must be in 1..{self.max_rank}, got {r}")
        self.u = nn.Parameter(u_mat.detach().clone().to(self.u))
        self.v = nn.Parameter(self._v_from_matrix(v_mat.detach().clone().to(self.v)))

    def _v_from_matrix(self, v_mat: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def from_dense(cls, module: nn.Module, rank: int | None = None) -> LowRankLayer:
        """Factor a dense module by SVD: U = P√S, V = Q√S (exact at full rank)."""
        raise NotImplementedError

    def _init_fresh(self, dense: nn.Module) -> None:
        """Factor a freshly initialised dense module (``reset_parameters``).

        Inside ``from_dense`` the dense init is still drawn, so the RNG stream is that of a plain
        constructor, but its SVD is skipped: the module's own weight is factored next, and an SVD
        of a 512 x 3136 weight takes seconds on a small CPU.
        """
        if _FACTOR_FRESH_INIT.get():
            self._init_from_weight(dense.weight, dense.bias)

    def _init_from_weight(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        w = weight.detach().reshape(weight.shape[0], -1).to(torch.float64)  # (out, in')
        p, s, qh = torch.linalg.svd(w, full_matrices=False)
        k = self.rank
        root = s[:k].sqrt()
        u_mat = (p[:, :k] * root).to(self.u.dtype)
        v_mat = (qh[:k].T * root).to(self.u.dtype)
        self.load_factors(u_mat, v_mat)
        if bias is not None and self.bias is not None:
            with torch.no_grad():
                self.bias.copy_(bias.detach())


class LowRankLinear(LowRankLayer):
    """y = x V[:, :k] U[:, :k]ᵀ + b, a linear map of rank ≤ k."""

    rank_axes = {"u": 1, "v": 1}  # noqa: RUF012 (read-only class constant)

    def __init__(
        self, in_features: int, out_features: int, rank: int | None = None, bias: bool = True
    ) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(
                f"in_features and out_features must be ≥ 1, got {in_features}, {out_features}"
            )
        self.in_features = in_features
        self.out_features = out_features
        self.max_rank = min(in_features, out_features)
        r = _check_rank(rank, self.max_rank, "LowRankLinear")
        self._active_rank = None
        self.u = nn.Parameter(torch.empty(out_features, r))
        self.v = nn.Parameter(torch.empty(in_features, r))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Fresh dense init, then SVD: the factored layer starts as a well-scaled dense layer would.
        dense = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        self._init_fresh(dense)

    def v_matrix(self) -> torch.Tensor:
        return self.v

    def _v_prefix(self, k: int) -> torch.Tensor:
        return self.v[:, :k]

    def _v_from_matrix(self, v_mat: torch.Tensor) -> torch.Tensor:
        return v_mat

    def _dense_shape(self) -> tuple[int, ...]:
        return (self.out_features, self.in_features)

    def _forward_at(self, x: torch.Tensor, k: int) -> torch.Tensor:
        h = x @ self.v[:, :k]  # (..., k)
        return F.linear(h, self.u[:, :k], self.bias)  # (..., out)

    @classmethod
    def from_dense(cls, module: nn.Module, rank: int | None = None) -> LowRankLinear:
        if not isinstance(module, nn.Linear):
            raise ValueError(
                f"LowRankLinear.from_dense needs nn.Linear, got {type(module).__name__}"
            )
        with _factored_later():
            layer = cls(module.in_features, module.out_features, rank, bias=module.bias is not None)
        layer.to(module.weight.device, module.weight.dtype)
        layer._init_from_weight(module.weight, module.bias)
        return layer

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"rank={self.rank}/{self.max_rank}, bias={self.bias is not None}"
        )


def conv_from_dense(
    cls: type[LowRankLayer], module: nn.Module, rank: int | None, **options: int
) -> LowRankLayer:
    """A factored conv layer of class ``cls`` initialised from a dense ``nn.Conv2d``; ``options``
    go to the class (e.g. ``branches``)."""
    if not isinstance(module, nn.Conv2d):
        raise ValueError(f"{cls.__name__}.from_dense needs nn.Conv2d, got {type(module).__name__}")
    if module.padding_mode != "zeros" or isinstance(module.padding, str):
        raise ValueError(
            f"{cls.__name__}.from_dense supports numeric zero padding only, got "
            f"padding={module.padding!r}, padding_mode={module.padding_mode!r}"
        )
    with _factored_later():
        layer = cls(
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            module.stride,
            module.padding,
            module.dilation,
            rank=rank,
            bias=module.bias is not None,
            groups=module.groups,
            **options,
        )
    layer.to(module.weight.device, module.weight.dtype)
    layer._init_from_weight(module.weight, module.bias)
    return layer


def set_conv_geometry(
    layer: LowRankLayer,
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int],
    padding: int | tuple[int, int],
    dilation: int | tuple[int, int],
    groups: int,
) -> tuple[int, int]:
    """Check a factored conv's geometry, set it on ``layer`` as nn.Conv2d names it; (kh, kw)."""
    if groups != 1:
        raise ValueError(f"{type(layer).__name__} supports groups=1 only, got groups={groups}")
    if in_channels < 1 or out_channels < 1:
        raise ValueError(
            f"in_channels and out_channels must be ≥ 1, got {in_channels}, {out_channels}"
        )
    kh, kw = nn.modules.utils._pair(kernel_size)
    if kh < 1 or kw < 1:
        raise ValueError(f"kernel_size must be ≥ 1, got {kernel_size}")
    layer.in_channels = in_channels
    layer.out_channels = out_channels
    layer.kernel_size = (kh, kw)
    layer.stride = nn.modules.utils._pair(stride)
    layer.padding = nn.modules.utils._pair(padding)
    layer.dilation = nn.modules.utils._pair(dilation)
    return kh, kw


def conv_repr(layer: LowRankLayer, kind: str = "") -> str:
    """``extra_repr`` of a factored conv layer; ``kind`` names a non-SVD factorization."""
    return (
        f"{layer.in_channels}, {layer.out_channels}, kernel_size={layer.kernel_size}, "
        f"stride={layer.stride}, padding={layer.padding}, dilation={layer.dilation}, "
        f"rank={layer.rank}/{layer.max_rank}{kind}, bias={layer.bias is not None}"
    )


class LowRankConv2d(LowRankLayer):
    """A kxk conv to k channels (original stride/padding/dilation), then a 1x1 conv to out."""

    rank_axes = {"u": 1, "v": 0}  # noqa: RUF012 (read-only class constant)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        rank: int | None = None,
        bias: bool = True,
        groups: int = 1,
    ) -> None:
        super().__init__()
        kh, kw = set_conv_geometry(
            self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups
        )
        self.max_rank = min(out_channels, in_channels * kh * kw)
        r = _check_rank(rank, self.max_rank, "LowRankConv2d")
        self._active_rank = None
        self.v = nn.Parameter(torch.empty(r, in_channels, kh, kw))
        self.u = nn.Parameter(torch.empty(out_channels, r))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        dense = nn.Conv2d(
            self.in_channels, self.out_channels, self.kernel_size, bias=self.bias is not None
        )
        self._init_fresh(dense)

    def v_matrix(self) -> torch.Tensor:
        return self.v.reshape(self.v.shape[0], -1).T  # (in·kh·kw, R)

    def _v_prefix(self, k: int) -> torch.Tensor:
        return self.v[:k]

    def _v_from_matrix(self, v_mat: torch.Tensor) -> torch.Tensor:
        return v_mat.T.reshape(v_mat.shape[1], self.in_channels, *self.kernel_size)

    def _dense_shape(self) -> tuple[int, ...]:
        return (self.out_channels, self.in_channels, *self.kernel_size)

    def _forward_at(self, x: torch.Tensor, k: int) -> torch.Tensor:
        h = F.conv2d(
            x, self.v[:k, : x.shape[-3]], None, self.stride, self.padding, self.dilation
        )  # (B, k, H', W')
        return F.conv2d(h, self.u[:, :k, None, None], self.bias)  # (B, out, H', W')

    @classmethod
    def from_dense(cls, module: nn.Module, rank: int | None = None) -> LowRankConv2d:
        return conv_from_dense(cls, module, rank)

    def extra_repr(self) -> str:
        return conv_repr(self)


def low_rank_layers(model: nn.Module) -> dict[str, LowRankLayer]:
    """The factored layers of ``model`` by qualified name, in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LowRankLayer)}


def budget_rank(kept_rank: int, beta: float) -> int:
    """Components a tier of budget β may use in a layer of kept rank r: ⌈β·r⌉ (at least 1)."""
    return budget_dim(kept_rank, beta)


def budget_ranks(model: nn.Module, beta: float) -> dict[str, int]:
    """Per-layer rank caps ⌈β·r_l⌉ for a budget β."""
    return {n: budget_rank(m.rank, beta) for n, m in low_rank_layers(model).items()}


@contextmanager
def use_ranks(model: nn.Module, ranks: dict[str, int]) -> Iterator[None]:
    """Run ``model`` with the given per-layer ranks; layers not named use all kept components."""
    layers = low_rank_layers(model)
    unknown = set(ranks) - set(layers)
    if unknown:
        raise ValueError(f"unknown low-rank layers {sorted(unknown)}; known: {sorted(layers)}")
    previous = {n: m._active_rank for n, m in layers.items()}
    try:
        for name, k in ranks.items():
            layers[name]._active_rank = _check_rank(k, layers[name].rank, name)
        yield
    finally:
        for name, m in layers.items():
            m._active_rank = previous[name]
