"""A small causal character transformer (GPT-style) for next-character prediction.

References: Radford et al., "Language Models are Unsupervised Multitask Learners", 2019 (GPT-2:
pre-norm blocks, learned position embedding, final LayerNorm); Karpathy's nanoGPT, whose
layout and initialisation (N(0, 0.02), residual projections scaled by 1/√(2·depth)) this
follows, except that the head is not tied to the token embedding: the head is a plain
``nn.Linear`` that stays dense under factoring.

Input token ids (B, T) with T ≤ ``context``; output logits (B, V, T) with the class axis second,
so ``F.cross_entropy(logits, targets)`` with targets (B, T) scores every position.

Attention is written with separate ``q``, ``k``, ``v`` and ``out`` linears (factorable and
width-sliceable) and a parameter-free :class:`CausalScaledDotProductAttention` that splits by the
head size, so a width sub-model that keeps the leading whole heads of q/k/v runs unchanged.
MAC convention: the causal mask is applied to a full T×T score matrix, so q·kᵀ and attn·v are
counted as full products (B·h·T²·(d_k + d_v)), the same as the non-causal
:class:`~maestro_common.ml.models.transformer.ScaledDotProductAttention`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from maestro_common.ml.models.plans import WidthPlan
from maestro_common.ml.models.transformer import ScaledDotProductAttention


class CausalScaledDotProductAttention(ScaledDotProductAttention):
    """softmax(mask(q·kᵀ/√d))·v where query t attends to keys ≤ t; no parameters.

    A subclass of :class:`ScaledDotProductAttention`, so its MACs are counted by the same
    formula (the masked half is computed and discarded, see the module docstring).
    """

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, h, T, T)
        n_q, n_k = scores.shape[-2:]
        future = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).triu(n_k - n_q + 1)
        scores = scores.masked_fill(future, float("-inf"))
        return scores.softmax(dim=-1) @ v  # (B, h, T, d_head)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention; heads are read off the width of q (d_head fixed)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.d_head = dim // heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.attend = CausalScaledDotProductAttention()
        self.out = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, -1, self.d_head).transpose(1, 2)  # (B, h_used, T, d_head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape  # (B, T, D)
        h = self.attend(self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x)))
        h = h.transpose(1, 2).reshape(b, t, -1)  # (B, T, h_used·d_head)
        return self.out(h)  # (B, T, D)


class CharBlock(nn.Module):
    """Pre-norm block: x + attn(LN(x)), then x + MLP(LN(x)) with a GELU MLP."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))  # (B, T, D)
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))  # (B, T, D)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class CharTransformer(nn.Module):
    """Token + position embedding → ``depth`` causal blocks → LN → linear head, at every position.

    Parameters
    ----------
    vocab:
        Vocabulary size V (classes of the head), e.g. 81 for LEAF Shakespeare.
    context:
        Longest sequence T the position embedding covers.
    dim, depth, heads, mlp_ratio:
        Residual width, blocks, attention heads (``dim`` divisible by ``heads``) and MLP hidden
        width as a multiple of ``dim``.
    """

    input_dtype = torch.long
    # Only the head stays dense under decompose's default skip (the embeddings are not linears).
    keep_dense = ("head",)

    def __init__(
        self,
        vocab: int = 81,
        context: int = 80,
        dim: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        for name, value in (
            ("vocab", vocab),
            ("context", context),
            ("dim", dim),
            ("depth", depth),
            ("heads", heads),
        ):
            _positive_int(name, value)
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, int | float) or mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be positive, got {mlp_ratio!r}")
        self.context = context
        self.input_shape = (context,)
        hidden = max(1, round(dim * mlp_ratio))
        self.tok_embed = nn.Embedding(vocab, dim)
        self.pos_embed = nn.Embedding(context, dim)
        self.blocks = nn.ModuleList(CharBlock(dim, heads, hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nanoGPT init: N(0, 0.02) weights, zero biases, residual projections /√(2·depth)."""
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for block in self.blocks:
            for proj in (block.attn.out, block.fc2):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * len(self.blocks)))

    def width_plan(self) -> WidthPlan:
        """Width p keeps ⌈p·heads⌉ whole heads and ⌈p·hidden⌉ MLP units of every block.

        The residual stream (embeddings, LayerNorms, ``out``/``fc2`` outputs) and the head stay
        full width.
        """
        fixed, units, whole = {"head"}, {}, {"tok_embed", "pos_embed", "norm"}
        for i, block in enumerate(self.blocks):
            p = f"blocks.{i}"
            fixed |= {f"{p}.attn.out", f"{p}.fc2"}
            units |= {f"{p}.attn.{n}": block.attn.d_head for n in ("q", "k", "v")}
            whole |= {f"{p}.norm1", f"{p}.norm2", f"{p}.attn.attend"}
        return WidthPlan(frozenset(fixed), units, frozenset(whole))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 2 or tokens.dtype != torch.long:
            raise ValueError(
                f"expected int64 token ids shaped (B, T), got {tuple(tokens.shape)} {tokens.dtype}"
            )
        t = tokens.shape[1]
        if t > self.context:
            raise ValueError(f"sequence length {t} exceeds the context {self.context}")
        positions = torch.arange(t, device=tokens.device)
        x = self.tok_embed(tokens) + self.pos_embed(positions)  # (B, T, D)
        for block in self.blocks:
            x = block(x)  # (B, T, D)
        return self.head(self.norm(x)).transpose(1, 2)  # (B, V, T)
