"""Dry forward passes for shape and cost questions: eval mode and a zero input of one sample."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode, then restore each module's own training flag."""
    # Eval so that BatchNorm neither fails on a 1×1 batch of one nor updates its running stats;
    # each module's own flag is restored, since model.train(mode) would flatten mixed modes.
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.training = mode


def probe_input(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    """A zero batch of one sample of ``input_shape``, on the model's device.

    Its dtype is the model's ``input_dtype`` attribute when it has one (``torch.long`` for the
    token models: a batch of token id 0), else the dtype of the model's floating parameters.
    """
    p = next(iter(model.parameters()), None)
    device = p.device if p is not None else torch.device("cpu")
    dtype = getattr(model, "input_dtype", None)
    if dtype is None:
        dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    return torch.zeros((1, *input_shape), device=device, dtype=dtype)


def dry_pass(
    model: nn.Module,
    input_shape: Sequence[int],
    pre_hooks: Mapping[nn.Module, Callable[[nn.Module, tuple], None]],
    context: AbstractContextManager | None = None,
) -> None:
    """One no-grad forward pass of a zero sample, in eval mode and inside ``context``, with each
    module's forward pre-hook of ``pre_hooks`` registered for that pass only."""
    handles = [m.register_forward_pre_hook(hook) for m, hook in pre_hooks.items()]
    try:
        with eval_mode(model), context or nullcontext(), torch.no_grad():
            model(probe_input(model, input_shape))
    finally:
        for h in handles:
            h.remove()
