"""Nested branched Tucker-2 convolution: the core split into parallel blocks.

The "branched" Tucker of Hajimolahoseini et al. ("Accelerating the Low-Rank Decomposed Models",
arXiv 2407.20266): a kxk convolution is held as a sum of ``b`` Tucker-2 terms (a block-term
decomposition). Run as one layer, that is a 1x1 conv in→b·k, a kxk *grouped* core conv with
``b`` groups (each branch a k→k core: 1/b of a plain Tucker core's MACs at the same total
width b·k), and a 1x1 conv b·k→out. Whether that is faster than the plain Tucker-2 layer
depends on the grouped-convolution kernels: on this project's CPU two branches train in
0.60–0.96× of plain Tucker's time at the same width, four are slower where a branch has 3 to 6
channels (``docs/performance.md``, branched section).

Nesting: the rank k is per branch, and a forward pass at rank k uses the first k channels of
every branch. Every factor keeps the branch as its own axis so that each prefix is a leading
block: ``v`` (b, R, in) cut on axis 1, ``core`` (b, R, R, kh, kw) on axes 1 and 2, ``u``
(out, b, R) on axis 2, which is all the wire format and the nested aggregation need.

Initialisation from a dense weight is greedy: branch 1 is the truncated HOSVD of the weight at
rank R, branch 2 that of what branch 1 leaves, and so on. It reproduces the dense conv exactly
when b·R ≥ max(in, out) and the weight's channel modes are exhausted by the branches (for
example R ≥ min(in, out) with two branches), and approximates it otherwise.
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
from maestro_common.lowrank.tucker import hosvd_factors

__all__ = ["BRANCH_COUNTS", "BranchedTuckerConv2d"]

BRANCH_COUNTS = (2, 4)  # the branch counts a run may choose (conv-factorization tucker-b2, -b4)


class BranchedTuckerConv2d(LowRankLayer):
    """1x1 conv in→b·k, kxk core conv with b groups of k→k, 1x1 conv b·k→out (k per branch)."""

    rank_axes = {"u": 2, "v": 1}  # noqa: RUF012 (read-only class constant)
    core_axes = (1, 2)

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
        branches: int = 2,
    ) -> None:
        super().__init__()
        kh, kw = set_conv_geometry(
            self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups
        )
        if isinstance(branches, bool) or not isinstance(branches, int) or branches < 1:
            raise ValueError(f"branches must be an int ≥ 1, got {branches!r}")
        self.branches = branches
        # Per branch: enough channels that the b branches together can span the larger mode.
        self.max_rank = -(-max(in_channels, out_channels) // branches)
        r = _check_rank(rank, self.max_rank, "BranchedTuckerConv2d")
        self._active_rank = None
        self.v = nn.Parameter(torch.empty(branches, r, in_channels))
        self.core = nn.Parameter(torch.empty(branches, r, r, kh, kw))
        self.u = nn.Parameter(torch.empty(out_channels, branches, r))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    @property
    def rank(self) -> int:
        """Components physically kept in each branch."""
        return self.u.shape[2]

    def reset_parameters(self) -> None:
        dense = nn.Conv2d(
            self.in_channels, self.out_channels, self.kernel_size, bias=self.bias is not None
        )
        self._init_fresh(dense)

    @torch.no_grad()
    def _init_from_weight(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        residual = weight.detach().to(torch.float64)
        us, cores, vs = [], [], []
        for _ in range(self.branches):
            u, core, v = hosvd_factors(residual, self.rank)
            residual = residual - torch.einsum("or,rshw,si->oihw", u, core, v)
            us.append(u)
            cores.append(core)
            vs.append(v)
        self.u = nn.Parameter(torch.stack(us, 1).to(self.u))  # (out, b, R)
        self.core = nn.Parameter(torch.stack(cores).to(self.core))  # (b, R, R, kh, kw)
        self.v = nn.Parameter(torch.stack(vs).to(self.v))  # (b, R, in)
        if bias is not None and self.bias is not None:
            self.bias.copy_(bias.detach())

    def factor_axes(self) -> dict[str, tuple[int, ...]]:
        return {"u": (2,), "v": (1,), "core": self.core_axes}

    def params_at(self, k: int) -> int:
        kh, kw = self.kernel_size
        return self.branches * (k * (self.in_channels + self.out_channels) + k * k * kh * kw)

    def u_matrix(self) -> torch.Tensor:
        """(b·out, R): column j stacks the j-th output vector of every branch."""
        return self.u.transpose(0, 1).reshape(-1, self.rank)

    def v_matrix(self) -> torch.Tensor:
        """(b·in, R): column j stacks the j-th input vector of every branch."""
        return self.v.transpose(1, 2).reshape(-1, self.rank)

    def _dense_shape(self) -> tuple[int, ...]:
        return (self.out_channels, self.in_channels, *self.kernel_size)

    def dense_weight(self, rank: int | None = None) -> torch.Tensor:
        """Σ over branches of U_b[:, :k] ×₀ C_b[:k, :k] ×₁ V_b[:k], shape (out, in, kh, kw)."""
        k = _check_rank(rank, self.rank, type(self).__name__)
        return torch.einsum(
            "obr,brshw,bsi->oihw", self.u[:, :, :k], self.core[:, :k, :k], self.v[:, :k]
        )

    def _forward_at(self, x: torch.Tensor, k: int) -> torch.Tensor:
        b, kh, kw = self.branches, *self.kernel_size
        cin = x.shape[-3]  # the input's channels
        v = self.v[:, :k, :cin].reshape(b * k, cin, 1, 1)
        core = self.core[:, :k, :k].reshape(b * k, k, kh, kw)
        u = self.u[:, :, :k].reshape(self.out_channels, b * k, 1, 1)
        h = F.conv2d(x, v)  # (B, b·k, H, W), branch-major channels
        h = F.conv2d(h, core, None, self.stride, self.padding, self.dilation, groups=b)
        return F.conv2d(h, u, self.bias)  # (B, out, H', W')

    @torch.no_grad()
    def truncate(self, k: int) -> None:
        k = _check_rank(k, self.rank, type(self).__name__)
        self.u = nn.Parameter(self.u[:, :, :k].clone())
        self.v = nn.Parameter(self.v[:, :k].clone())
        self.core = nn.Parameter(self.core[:, :k, :k].clone())
        if self._active_rank is not None:
            self._active_rank = min(self._active_rank, k)

    @torch.no_grad()
    def load_factors(self, u_mat: torch.Tensor, v_mat: torch.Tensor) -> None:
        raise NotImplementedError(
            "BranchedTuckerConv2d has three factors: load its state dict instead"
        )

    @classmethod
    def from_dense(
        cls, module: nn.Module, rank: int | None = None, branches: int = 2
    ) -> BranchedTuckerConv2d:
        """Factor a dense conv into ``branches`` Tucker-2 terms (greedy HOSVD of residuals)."""
        return conv_from_dense(cls, module, rank, branches=branches)

    def extra_repr(self) -> str:
        return conv_repr(self, f" per branch (tucker-2, {self.branches} branches)")
