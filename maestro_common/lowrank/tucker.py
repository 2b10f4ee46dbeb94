"""Nested Tucker-2 factorization of a kxk convolution.

A dense conv weight W (out, in, kh, kw) is held as W = U ×₀ C ×₁ V: a 1x1 conv in→r (``v``), a
kxk core conv r→r with the original stride, padding and dilation (``core``), and a 1x1 conv r→out
(``u``). This is the Tucker-2 decomposition of the two channel modes (Kim et al., "Compression of
Deep Convolutional Neural Networks for Fast and Low Power Mobile Applications", ICLR 2016), used
by the low-rank acceleration papers (Hajimolahoseini et al., arXiv 2309.03824 and 2407.20266).

It is made nested as Maestro's factored layers are: a forward pass at rank k uses the first k
channels of both inner modes, ``v[:k]``, ``core[:k, :k]`` and ``u[:, :k]``, so a tier cuts the
convolution's input *and* output channels as width does, inside the learned ordering. Every
prefix is a leading block of its array (``v``: axis 0, ``core``: axes 0 and 1, ``u``: axis 1),
which is all the wire format and the nested aggregation need.

Both inner modes share one rank k ≤ R = max(in, out). The factors are initialised by HOSVD (the
leading left singular vectors of each channel mode's unfolding, the core projected onto them);
where k exceeds a mode's size, the extra channels start at zero, so the factorization at full
rank R reproduces the dense conv exactly even when in ≠ out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from maestro_common.lowrank.layers import (
    LowRankLayer,
    _check_rank,
    conv_from_dense,
    conv_repr,
    set_conv_geometry,
)


def hosvd_factors(
    weight: torch.Tensor, rank: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Truncated HOSVD of a conv weight over its two channel modes.

    Parameters
    ----------
    weight:
        Dense weight (out, in, kh, kw).
    rank:
        Channels kept on both modes; above a mode's size the extra channels are zero.

    Returns
    -------
    ``u`` (out, rank), ``core`` (rank, rank, kh, kw), ``v`` (rank, in), in float64.
    """
    w = weight.detach().to(torch.float64)
    out, cin = w.shape[:2]
    u0 = torch.linalg.svd(w.reshape(out, -1), full_matrices=False)[0][:, :rank]  # (out, ≤rank)
    u1 = torch.linalg.svd(w.transpose(0, 1).reshape(cin, -1), full_matrices=False)[0][:, :rank]
    u = w.new_zeros(out, rank)
    u[:, : u0.shape[1]] = u0
    v = w.new_zeros(rank, cin)
    v[: u1.shape[1]] = u1.T
    core = torch.einsum("oihw,or,si->rshw", w, u, v)  # (rank, rank, kh, kw)
    return u, core, v


class TuckerConv2d(LowRankLayer):
    """1x1 conv in→k, kxk core conv k→k (original stride/padding/dilation), 1x1 conv k→out."""

    rank_axes = {"u": 1, "v": 0}  # noqa: RUF012 (read-only class constant)
    # The core is cut on both of its channel axes by the same rank.
    core_axes = (0, 1)
    branches = 1  # one Tucker-2 term (BranchedTuckerConv2d holds several)

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
        self.max_rank = max(in_channels, out_channels)
        r = _check_rank(rank, self.max_rank, "TuckerConv2d")
        self._active_rank = None
        self.v = nn.Parameter(torch.empty(r, in_channels, 1, 1))
        self.core = nn.Parameter(torch.empty(r, r, kh, kw))
        self.u = nn.Parameter(torch.empty(out_channels, r))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        dense = nn.Conv2d(
            self.in_channels, self.out_channels, self.kernel_size, bias=self.bias is not None
        )
        self._init_fresh(dense)

    @torch.no_grad()
    def _init_from_weight(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        u, core, v = hosvd_factors(weight, self.rank)
        self.u = nn.Parameter(u.to(self.u))
        self.core = nn.Parameter(core.to(self.core))
        self.v = nn.Parameter(v.reshape(*v.shape, 1, 1).to(self.v))
        if bias is not None and self.bias is not None:
            self.bias.copy_(bias.detach())

    def factor_axes(self) -> dict[str, tuple[int, ...]]:
        return {"u": (1,), "v": (0,), "core": self.core_axes}

    def params_at(self, k: int) -> int:
        kh, kw = self.kernel_size
        return k * (self.in_channels + self.out_channels) + k * k * kh * kw

    def v_matrix(self) -> torch.Tensor:
        return self.v.reshape(self.v.shape[0], -1).T  # (in, R)

    def _dense_shape(self) -> tuple[int, ...]:
        return (self.out_channels, self.in_channels, *self.kernel_size)

    def dense_weight(self, rank: int | None = None) -> torch.Tensor:
        """The equivalent dense weight U[:, :k] ×₀ C[:k, :k] ×₁ V[:k], shape (out, in, kh, kw)."""
        k = _check_rank(rank, self.rank, type(self).__name__)
        v = self.v[:k, :, 0, 0]  # (k, in)
        return torch.einsum("or,rshw,si->oihw", self.u[:, :k], self.core[:k, :k], v)

    def _forward_at(self, x: torch.Tensor, k: int) -> torch.Tensor:
        h = F.conv2d(x, self.v[:k, : x.shape[-3]])  # (B, k, H, W)
        h = F.conv2d(
            h, self.core[:k, :k], None, self.stride, self.padding, self.dilation
        )  # (B, k, H', W')
        return F.conv2d(h, self.u[:, :k, None, None], self.bias)  # (B, out, H', W')

    @torch.no_grad()
    def truncate(self, k: int) -> None:
        k = _check_rank(k, self.rank, type(self).__name__)
        self.u = nn.Parameter(self.u[:, :k].clone())
        self.v = nn.Parameter(self.v[:k].clone())
        self.core = nn.Parameter(self.core[:k, :k].clone())
        if self._active_rank is not None:
            self._active_rank = min(self._active_rank, k)

    @torch.no_grad()
    def load_factors(self, u_mat: torch.Tensor, v_mat: torch.Tensor) -> None:
        raise NotImplementedError("TuckerConv2d has three factors: load its state dict instead")

    @classmethod
    def from_dense(cls, module: nn.Module, rank: int | None = None) -> TuckerConv2d:
        """Factor a dense conv by truncated HOSVD (exact at full rank max(in, out))."""
        return conv_from_dense(cls, module, rank)

    def extra_repr(self) -> str:
        return conv_repr(self, " (tucker-2)")
