"""A small Vision-Transformer encoder classifier whose every projection is a plain nn.Linear.

Reference: Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition
at Scale", ICLR 2021 (patch embedding, class token, learned position embedding, pre-norm blocks).

Self-attention is written with separate ``q``, ``k``, ``v`` and ``out`` linears instead of
``nn.MultiheadAttention``: the latter packs q/k/v into one ``in_proj_weight`` parameter and calls
``F.multi_head_attention_forward`` directly, so :func:`maestro_common.lowrank.decompose.decompose`
could not replace its projections by factored layers. The parameter-free part (softmax(q·kᵀ)·v)
lives in :class:`ScaledDotProductAttention` so that MAC accounting can hook it.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ScaledDotProductAttention(nn.Module):
    """softmax(q·kᵀ/√d)·v over heads; no parameters.

    Explicit matmuls rather than ``F.scaled_dot_product_attention`` so that the computation (and
    ``FlopCounterMode``'s count of it) is the same on every backend: exactly the two batched
    matmuls q·kᵀ and attn·v.
    """

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, h, N, N)
        return scores.softmax(dim=-1) @ v  # (B, h, N, d_head)

    @staticmethod
    def macs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> int:
        """Multiply-accumulates of q·kᵀ plus attn·v for inputs shaped (..., N, d)."""
        batch = q[..., 0, 0].numel()  # B·h
        n_q, d_k = q.shape[-2:]
        n_k, d_v = v.shape[-2:]
        return batch * n_q * n_k * (d_k + d_v)


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention with factorable q, k, v and output projections."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.attend = ScaledDotProductAttention()
        self.out = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)  # (B, h, N, d_head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape  # (B, N, D)
        h = self.attend(self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x)))
        h = h.transpose(1, 2).reshape(b, n, d)  # (B, N, D)
        return self.out(h)  # (B, N, D)


class Block(nn.Module):
    """Pre-norm encoder block: x + MSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))  # (B, N, D)
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))  # (B, N, D)


class VisionTransformer(nn.Module):
    """Patch embedding → [cls] + position embedding → ``depth`` blocks → LN → linear head."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        patch_size: int = 4,
    ) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("depth", depth), ("heads", heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"patch_size must be a positive int, got {patch_size!r}")
        if image_size < patch_size or image_size % patch_size:
            raise ValueError(
                f"image_size ({image_size}) must be a positive multiple of patch_size "
                f"({patch_size})"
            )
        if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, int | float) or mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be positive, got {mlp_ratio!r}")
        hidden = max(1, round(dim * mlp_ratio))
        num_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        # Registered last so that decompose.default_skip finds it as the classifier.
        self.head = nn.Linear(dim, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """ViT initialisation: truncated-normal (σ = 0.02) embeddings and linears, zero biases.

        The patch embedding is a linear map on flattened patches, so it gets Xavier-uniform on
        that flattened view as in the reference implementation.
        """
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, D, H/p, W/p)
        x = x.flatten(2).transpose(1, 2)  # (B, N, D)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, D)
        x = torch.cat([cls, x], dim=1) + self.pos_embed  # (B, N+1, D)
        for block in self.blocks:
            x = block(x)  # (B, N+1, D)
        return self.head(self.norm(x[:, 0]))  # (B, classes)
