"""LEAF's Shakespeare next-character LSTM, with one plain ``nn.Linear`` per gate matrix.

Reference: Caldas et al., "LEAF: A Benchmark for Federated Settings", 2018 (embedding of 8, two
LSTM layers of 256 units, a linear classifier over the characters). Here the classifier runs at
every position, so the output is logits (B, V, T) with the class axis second, as for
:class:`~maestro_common.ml.models.char_transformer.CharTransformer`.

Each layer computes ``nn.LSTM``'s recurrence (gate order i, f, g, o)::

    i = σ(x_i(x_t) + h_i(h)),  f = σ(x_f(x_t) + h_f(h)),  g = tanh(x_g(x_t) + h_g(h)),
    o = σ(x_o(x_t) + h_o(h)),  c = f·c + i·g,  h = o·tanh(c)

with ``x_*`` (input → hidden, bias b_ih) and ``h_*`` (hidden → hidden, bias b_hh) separate
linears, so that every gate matrix can be factored (Maestro) or cut to its leading rows (width
baselines): a width sub-model keeps the first ⌈p·H⌉ hidden units of every layer, and the hidden
state's width follows from the gate outputs. The input products are computed for the whole
sequence at once and the hidden products once per step (T per layer), which is what the MAC
accounting counts.
"""

from __future__ import annotations

import torch
from torch import nn

from maestro_common.ml.models.plans import WidthPlan

GATES = ("i", "f", "g", "o")  # nn.LSTM's order of the stacked gate rows


class GateLSTMLayer(nn.Module):
    """One LSTM layer over a whole sequence (batch first), zero initial state."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        for gate in GATES:
            setattr(self, f"x_{gate}", nn.Linear(input_size, hidden_size))
        for gate in GATES:
            setattr(self, f"h_{gate}", nn.Linear(hidden_size, hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xi, xf, xg, xo = (getattr(self, f"x_{g}")(x) for g in GATES)  # each (B, T, H_used)
        b, t, width = xi.shape
        h = xi.new_zeros(b, width)  # (B, H_used)
        c = xi.new_zeros(b, width)
        outputs = []
        for s in range(t):
            i = torch.sigmoid(xi[:, s] + self.h_i(h))
            f = torch.sigmoid(xf[:, s] + self.h_f(h))
            g = torch.tanh(xg[:, s] + self.h_g(h))
            o = torch.sigmoid(xo[:, s] + self.h_o(h))
            c = f * c + i * g
            h = o * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs, dim=1)  # (B, T, H_used)

    @torch.no_grad()
    def load_from_lstm(self, lstm: nn.LSTM, layer: int) -> None:
        """Copy layer ``layer`` of a batch-first ``nn.LSTM`` (with biases) into the gate linears."""
        h = self.hidden_size
        for kind, prefix in (("ih", "x"), ("hh", "h")):
            weight = getattr(lstm, f"weight_{kind}_l{layer}")
            bias = getattr(lstm, f"bias_{kind}_l{layer}")
            for j, gate in enumerate(GATES):
                lin = getattr(self, f"{prefix}_{gate}")
                lin.weight.copy_(weight[j * h : (j + 1) * h])
                lin.bias.copy_(bias[j * h : (j + 1) * h])


class CharLSTM(nn.Module):
    """Embedding → ``layers`` gate-LSTM layers → linear head at every position.

    Parameters
    ----------
    vocab:
        Vocabulary size V (classes of the head), e.g. 81 for LEAF Shakespeare.
    context:
        Sequence length T of one sample (the recurrence itself takes any length).
    embed, hidden, layers:
        Embedding width, hidden units per layer and number of layers (LEAF: 8, 256, 2).
    """

    input_dtype = torch.long
    keep_dense = ("head",)

    def __init__(
        self, vocab: int = 81, context: int = 80, embed: int = 8, hidden: int = 256, layers: int = 2
    ) -> None:
        super().__init__()
        for name, value in (
            ("vocab", vocab),
            ("context", context),
            ("embed", embed),
            ("hidden", hidden),
            ("layers", layers),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.context = context
        self.input_shape = (context,)
        self.embed = nn.Embedding(vocab, embed)
        self.layers = nn.ModuleList(
            GateLSTMLayer(embed if i == 0 else hidden, hidden) for i in range(layers)
        )
        self.head = nn.Linear(hidden, vocab)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.LSTM``'s init, U(±1/√hidden) for every gate weight and bias; default head/embed."""
        bound = 1.0 / self.layers[0].hidden_size ** 0.5
        for layer in self.layers:
            for p in layer.parameters():
                nn.init.uniform_(p, -bound, bound)
        self.embed.reset_parameters()
        self.head.reset_parameters()

    def width_plan(self) -> WidthPlan:
        """Width p keeps the first ⌈p·hidden⌉ units of every layer; embedding and head whole."""
        return WidthPlan(fixed_out=frozenset({"head"}), whole=frozenset({"embed"}))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 2 or tokens.dtype != torch.long:
            raise ValueError(
                f"expected int64 token ids shaped (B, T), got {tuple(tokens.shape)} {tokens.dtype}"
            )
        x = self.embed(tokens)  # (B, T, E)
        for layer in self.layers:
            x = layer(x)  # (B, T, H_used)
        return self.head(x).transpose(1, 2)  # (B, V, T)
